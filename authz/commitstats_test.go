package authz_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// An observer of commits hears of every backend transaction, how many
// writes it carried, how long it took and whether it failed.
func TestObserveCommitsReportsEachTransaction(t *testing.T) {
	w := newWorld(t, streamPolicy())
	var mu sync.Mutex
	var seen []authz.CommitStats
	w.eng.ObserveCommits(func(s authz.CommitStats) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	})
	w.be.setDelay(time.Millisecond)
	before := w.be.transactions()
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:a", Role: "call-member", Resource: "call:livestream:42"}); err != nil {
		t.Fatal(err)
	}
	fail := errors.New("disk on fire")
	w.be.failNextCommit(fail)
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:b", Role: "call-member", Resource: "call:livestream:42"}); err == nil {
		t.Fatal("a grant whose commit failed succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if got := w.be.transactions() - before; len(seen) != got {
		t.Fatalf("observed %d commits, the backend made %d transactions", len(seen), got)
	}
	if s := seen[0]; s.Writes != 1 || s.Err != nil || s.Took < time.Millisecond {
		t.Errorf("first commit = %+v; want one write, no error, at least the backend's 1ms", s)
	}
	if s := seen[len(seen)-1]; !errors.Is(s.Err, fail) {
		t.Errorf("failed commit = %+v; want its error", s)
	}
}
