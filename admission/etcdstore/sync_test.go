package etcdstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestNotFoundIsAnsweredWithoutWaitingOutTheStore asks a replica to end a
// session and a knock that do not exist, after writes to the rest of
// Usher's data have moved etcd's revision past the last write to the
// sessions: the replica's picture holds every session write, and it must
// say so at once rather than wait seconds for a session event that no
// write will make.
func TestNotFoundIsAnsweredWithoutWaitingOutTheStore(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/notfound/")
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
		Resources:   []authz.Resource{{Name: "call:1"}},
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.m.Join(ctx, "", "user:a", "call:1", rev)
	if err != nil || res.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v, %v", res, err)
	}
	if err := a.m.Leave(ctx, res.Session); err != nil {
		t.Fatal(err)
	}
	// Writes that are not sessions' move etcd's revision.
	for _, s := range []string{"user:b", "user:c"} {
		if _, err := a.eng.Grant(ctx, by, authz.Grant{Subject: s, Role: "member", Resource: "call:1"}); err != nil {
			t.Fatal(err)
		}
	}
	notFound := func(what string, call func() error) {
		t.Helper()
		start := time.Now()
		err := call()
		took := time.Since(start)
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.NotFound {
			t.Errorf("%s: %v, want NOT_FOUND", what, err)
		}
		// The store's wait is 5 s; a look at etcd takes milliseconds.
		if took > 2*time.Second {
			t.Errorf("%s took %s to answer NOT_FOUND", what, took)
		}
	}
	notFound("LeaveCall of a subject with no session", func() error { return a.m.LeaveCall(ctx, "user:b", "call:1") })
	notFound("Leave of a session that ended", func() error { return a.m.Leave(ctx, "no-such-session") })
	notFound("KeepAlive of a session that ended", func() error { _, err := a.m.KeepAlive(ctx, "no-such-session"); return err })
}
