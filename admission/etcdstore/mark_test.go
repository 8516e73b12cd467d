package etcdstore_test

import (
	"context"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// held is a backend whose watch delivers a change set only once the test
// lets its revision through, as to a replica that has fallen behind.
type held struct {
	*etcd.Store
	mu    sync.Mutex
	upTo  authz.Revision
	moved chan struct{}
}

func holding(s *etcd.Store) *held {
	return &held{Store: s, upTo: ^authz.Revision(0), moved: make(chan struct{})}
}

// let lets the change sets up to rev through, and holds those after it.
func (h *held) let(rev authz.Revision) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.upTo = rev
	close(h.moved)
	h.moved = make(chan struct{})
}

func (h *held) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for cs, err := range h.Store.Watch(ctx, after) {
			for err == nil {
				h.mu.Lock()
				through, moved := cs.Revision <= h.upTo, h.moved
				h.mu.Unlock()
				if through {
					break
				}
				select {
				case <-moved:
				case <-ctx.Done():
					return
				}
			}
			if !yield(cs, err) {
				return
			}
		}
	}
}

// TestAReplicaBehindTakesBackNoMarkOfALaterRevision: an interpreter, who
// does not count, is in a call of one; the interpreter role is granted and
// revoked through one replica, which marks the session uncounted, then
// counted again. A replica that applies the grant only then must not mark
// it uncounted once more: a join would find room in the full call.
func TestAReplicaBehindTakesBackNoMarkOfALaterRevision(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	const prefix = "/marks-behind/"
	a := startReplica(t, c, prefix)
	backend := holding(replicaBackend(t, c, prefix))
	b := startReplicaOn(t, c, prefix, backend)
	seen, err := etcdstore.New(ctx, c.Client(t), etcdstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seen.Close() })
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "interpreter", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: time.Minute,
			MaxParticipants: 1, UncountedRoles: []string{"interpreter"}}},
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var rev authz.Revision
	for _, s := range []string{"user:i", "user:x"} {
		if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: s, Role: "member", Resource: "call:acme:1"}); err != nil {
			t.Fatal(err)
		}
	}
	joined, err := a.m.Join(ctx, "", "user:i", "call:acme:1", rev)
	if err != nil || joined.Outcome != admission.Admitted {
		t.Fatalf("Join = %+v, %v", joined, err)
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	backend.let(rev)
	counted := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if s, ok := seen.Session(joined.Session); ok && s.Counted == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the session was never marked counted=%t", want)
			}
		}
	}
	interpreter := authz.Grant{Subject: "user:i", Role: "interpreter", Resource: "call:acme:1"}
	granted, err := a.eng.Grant(ctx, by, interpreter)
	if err != nil {
		t.Fatal(err)
	}
	counted(false)
	revoked, err := a.eng.Revoke(ctx, by, interpreter)
	if err != nil {
		t.Fatal(err)
	}
	counted(true)

	backend.let(granted)
	res, err := b.m.Join(ctx, "", "user:x", "call:acme:1", granted)
	if err != nil || res.Outcome != admission.Full {
		t.Errorf("Join of a second member through the replica behind the revoke = %+v, %v; want FULL", res, err)
	}
	if s, ok := seen.Session(joined.Session); !ok || !s.Counted {
		t.Errorf("the interpreter's session once the replica behind applied the grant: %+v, %t; want it counted, as marked at revision %d", s, ok, revoked)
	}
	backend.let(revoked)
}
