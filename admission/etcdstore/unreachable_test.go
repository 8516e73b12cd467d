package etcdstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestSessionWritesFailUnavailableWithEtcdOutOfReach stops the cluster
// under a replica: Join, Knock, KeepAlive, Leave, Admit and Deny (by the
// platform and by an actor), called
// with no deadline of their own, fail UNAVAILABLE rather than wait for
// etcd for good; a Join with a deadline past the store wait fails
// UNAVAILABLE before it, though a participant's marks, changed as etcd
// went away, wait to be told the store.
func TestSessionWritesFailUnavailableWithEtcdOutOfReach(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	clock := authz.NewManualClock(time.Now())
	a := startReplicaWith(t, c, "/unreachable/", replicaBackend(t, c, "/unreachable/"), authz.Options{Clock: clock})
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.admit"}},
		Resources:   []authz.Resource{{Name: "call:acme:0"}, {Name: "call:acme:1"}, {Name: "call:acme:2"}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join", "call.admit"}},
			{Name: "host", Scope: "root", Permissions: []string{"call.join", "call.admit"}},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "invitee", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second, UncountedRoles: []string{"host"},
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "invitee", Bypass: "call.admit"}}},
	}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []authz.Grant{{Subject: "user:a", Role: "member", Resource: "root"}, {Subject: "user:g", Role: "guest", Resource: "root"},
		{Subject: "user:h", Role: "member", Resource: "root"}, {Subject: "user:h", Role: "host", Resource: "root", Expires: clock.Now().Add(time.Hour)}} {
		if rev, err = a.eng.Grant(ctx, by, g); err != nil {
			t.Fatal(err)
		}
	}
	joined, err := a.m.Join(ctx, "", "user:a", "call:acme:0", rev)
	if err != nil || joined.Outcome != admission.Admitted {
		t.Fatalf("Join = %+v, %v", joined, err)
	}
	knocked, err := a.m.Join(ctx, "", "user:g", "call:acme:0", rev)
	if err != nil || knocked.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", knocked, err)
	}
	hosted, err := a.m.Join(ctx, "", "user:h", "call:acme:0", rev)
	if err != nil || hosted.Outcome != admission.Admitted {
		t.Fatalf("Join of the host = %+v, %v", hosted, err)
	}
	c.Kill(0)
	// The host's role runs out: it counts from now on, which the view
	// cannot tell the store.
	clock.Advance(2 * time.Hour)

	calls := map[string]func(context.Context) error{
		"Join": func(ctx context.Context) error {
			_, err := a.m.Join(ctx, "", "user:a", "call:acme:1", rev)
			return err
		},
		"Join with a deadline past the store wait": func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 9*time.Second)
			defer cancel()
			_, err := a.m.Join(ctx, "", "user:a", "call:acme:2", rev)
			if ctx.Err() != nil {
				return fmt.Errorf("answered only once its 9 s deadline had passed: %v", err)
			}
			return err
		},
		"Knock": func(ctx context.Context) error {
			_, err := a.m.Knock(ctx, "", "user:g", "call:acme:1", "")
			return err
		},
		"KeepAlive of a session": func(ctx context.Context) error {
			_, err := a.m.KeepAlive(ctx, joined.Session)
			return err
		},
		"KeepAlive of a knock": func(ctx context.Context) error {
			_, err := a.m.KeepAlive(ctx, knocked.Session)
			return err
		},
		"Leave": func(ctx context.Context) error { return a.m.Leave(ctx, joined.Session) },
		"Deny":  func(ctx context.Context) error { return a.m.Deny(ctx, by, "call:acme:0", "user:g") },
		// Judged at the latest revision, which etcd cannot say.
		"Deny by an actor": func(ctx context.Context) error {
			return a.m.Deny(ctx, authz.Author{Caller: "test", Actor: "user:a"}, "call:acme:0", "user:g")
		},
		"Admit": func(ctx context.Context) error {
			_, err := a.m.Admit(ctx, by, "call:acme:0", "user:g", time.Time{})
			return err
		},
	}
	type answer struct {
		call string
		err  error
	}
	answers := make(chan answer, len(calls))
	for name, call := range calls {
		go func() { answers <- answer{name, call(context.Background())} }()
	}
	// Far more than any bound on waiting for the store: a call still
	// waiting then waits for etcd to come back.
	giveUp := time.After(2 * time.Minute)
	for range len(calls) {
		select {
		case got := <-answers:
			delete(calls, got.call)
			if authz.CodeOf(got.err) != authz.Unavailable {
				t.Errorf("%s with etcd out of reach: %v; want UNAVAILABLE", got.call, got.err)
			}
		case <-giveUp:
			for name := range calls {
				t.Errorf("%s with etcd out of reach, called with no deadline, never answered", name)
			}
			return
		}
	}
}
