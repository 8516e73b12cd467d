package etcdstore_test

import (
	"fmt"
	"testing"

	"github.com/usher-authz/usher/admission"
)

// TestLeaveRightAfterAJoinElsewhere ends a session, by its subject and
// call, and a knock, by its id, through one replica the moment another
// made them, before the first replica's watch may have brought them: both
// are live, and Leave must end them rather than answer NOT_FOUND.
func TestLeaveRightAfterAJoinElsewhere(t *testing.T) {
	const rounds = 30
	a, b, rev := lobbyCalls(t, "/leave-elsewhere/", rounds)
	ctx := t.Context()
	for i := range rounds {
		call := fmt.Sprintf("call:acme:%d", i)
		res, err := a.m.Join(ctx, "", "user:a", call, rev)
		if err != nil || res.Outcome != admission.Admitted {
			t.Fatalf("Join: %+v, %v", res, err)
		}
		if err := b.m.LeaveCall(ctx, "user:a", call); err != nil {
			t.Errorf("round %d: LeaveCall through another replica right after the join: %v", i, err)
		}
		res, err = a.m.Join(ctx, "", "user:g", call, rev)
		if err != nil || res.Outcome != admission.Lobby {
			t.Fatalf("Join of a guest: %+v, %v", res, err)
		}
		if err := b.m.Leave(ctx, res.Session); err != nil {
			t.Errorf("round %d: Leave of a knock through another replica right after it: %v", i, err)
		}
	}
}
