package etcdstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestLeaveRightAfterAJoinElsewhere ends a session, by its subject and
// call, and a knock, by its id, through one replica the moment another
// made them, before the first replica's watch may have brought them: both
// are live, and Leave must end them rather than answer NOT_FOUND.
func TestLeaveRightAfterAJoinElsewhere(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/leave-elsewhere/")
	b := startReplica(t, c, "/leave-elsewhere/")
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
		call := fmt.Sprintf("call:acme:%d", i)
		res, err := a.m.Join(ctx, "user:a", call, rev)
		if err != nil || res.Outcome != admission.Admitted {
			t.Fatalf("Join: %+v, %v", res, err)
		}
		if err := b.m.LeaveCall(ctx, "user:a", call); err != nil {
			t.Errorf("round %d: LeaveCall through another replica right after the join: %v", i, err)
		}
		res, err = a.m.Join(ctx, "user:g", call, rev)
		if err != nil || res.Outcome != admission.Lobby {
			t.Fatalf("Join of a guest: %+v, %v", res, err)
		}
		if err := b.m.Leave(ctx, res.Session); err != nil {
			t.Errorf("round %d: Leave of a knock through another replica right after it: %v", i, err)
		}
	}
}
