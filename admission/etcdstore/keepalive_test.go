package etcdstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestKeepAliveRightAfterAJoinElsewhere keeps a session and a knock alive
// through one replica the moment another made them, before the first
// replica's watch may have brought them: both are live, and KeepAlive must
// renew them.
func TestKeepAliveRightAfterAJoinElsewhere(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/keepalive/")
	b := startReplica(t, c, "/keepalive/")
	by := authz.Author{Caller: "test"}
	const rounds = 30
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.admit"}, {Name: "call.bypass"}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join", "call.bypass"}},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "invitee", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second,
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "invitee", Bypass: "call.bypass"}}},
	}
	for i := range rounds {
		p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("call:acme:%d", i)})
	}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		if _, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: fmt.Sprintf("call:acme:%d", i)}); err != nil {
			t.Fatal(err)
		}
		if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: fmt.Sprintf("call:acme:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		res, err := a.m.Join(ctx, "user:a", fmt.Sprintf("call:acme:%d", i), rev)
		if err != nil || res.Outcome != admission.Admitted {
			t.Fatalf("Join: %+v, %v", res, err)
		}
		if r, err := b.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Admitted {
			t.Fatalf("round %d: KeepAlive through another replica right after the join = %+v, %v", i, r, err)
		}
		res, err = a.m.Join(ctx, "user:g", fmt.Sprintf("call:acme:%d", i), rev)
		if err != nil || res.Outcome != admission.Lobby {
			t.Fatalf("Join of a guest: %+v, %v", res, err)
		}
		if r, err := b.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Lobby {
			t.Fatalf("round %d: KeepAlive of a knock through another replica right after it = %+v, %v", i, r, err)
		}
	}
}
