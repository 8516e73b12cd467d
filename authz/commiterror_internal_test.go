package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A commit that failed says it changed nothing; one whose backend cannot
// tell whether it took effect says that instead.
func TestCommitErrorSaysWhetherTheWriteMayHaveTakenEffect(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("storage: commit: no quorum"), "the write was not committed: storage: commit: no quorum"},
		{fmt.Errorf("storage: commit: %w (%w: %v)", context.DeadlineExceeded, ErrOutcomeUnknown, "no leader"),
			"the write may or may not have been committed; read it back to know: "},
	} {
		var e *Error
		if !errors.As(commitError(context.Background(), tc.err), &e) || e.Code != Unavailable || !strings.HasPrefix(e.Reason, tc.want) {
			t.Errorf("commitError(%v) = %+v, want UNAVAILABLE saying %q", tc.err, e, tc.want)
		}
	}
}

// A write too large for the backend to commit is a limit passed, not an
// outage: tried again, it would be refused again.
func TestCommitErrorOfAWriteTooLargeIsALimit(t *testing.T) {
	err := fmt.Errorf("storage: commit: %w", &TooLargeError{Needs: 19, Limit: 16, What: "operations in one etcd transaction"})
	var e *Error
	if !errors.As(commitError(context.Background(), err), &e) || e.Code != ResourceExhausted || KindOf(e) != KindLimitExceeded ||
		e.Meta["limit"] != "16" || e.Meta["used"] != "19" {
		t.Errorf("commitError(%v) = %+v, want RESOURCE_EXHAUSTED, LIMIT_EXCEEDED of limit 16, 19 used", err, e)
	}
}
