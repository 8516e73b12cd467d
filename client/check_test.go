package client_test

import (
	"strings"
	"testing"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

func TestCheckAnswersWithTheDecision(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)
	blocked := w.block("user:mallory", meeting)
	c := w.client(client.WithToken(sidecarToken))
	cases := []struct {
		name              string
		subject, resource string
		allowed           bool
		reason            usherv1.Reason
		role, scope       string
	}{
		{"a grant on the call allows", "user:alice", meeting7, true, usherv1.Reason_REASON_GRANTED, "call-member", meeting7},
		{"no grant denies", "user:bob", meeting7, false, usherv1.Reason_REASON_NO_GRANT, "", ""},
		{"a block on the call type denies in its calls", "user:mallory", meeting7, false, usherv1.Reason_REASON_BLOCKED, "", meeting},
		{"an unknown resource is a denial, not an error", "user:alice", "call:meeting:404", false, usherv1.Reason_REASON_UNKNOWN_RESOURCE, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, d, err := c.Check(callCtx(t), tc.subject, "join-call", tc.resource, client.MinRevision(blocked))
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.allowed || d.Allowed != tc.allowed || d.Reason != tc.reason || d.Role != tc.role || d.Scope != tc.scope {
				t.Errorf("Check = %v, %+v; want allowed %v, %s by %q at %q", ok, d, tc.allowed, tc.reason, tc.role, tc.scope)
			}
			if d.Revision < blocked {
				t.Errorf("answered at revision %d, before the MinRevision %d", d.Revision, blocked)
			}
		})
	}
	if _, d, _ := c.Check(callCtx(t), "user:mallory", "join-call", meeting7); d.BlockID == "" {
		t.Errorf("a blocked decision names no block: %+v", d)
	}
}

func TestListPermissionsIsTheCapabilitySet(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)
	rev := w.grant("user:olga", "owner", acme)
	c := w.client(client.WithToken(sidecarToken))

	p, err := c.ListPermissions(callCtx(t), "user:alice", meeting7, client.MinRevision(rev))
	if err != nil {
		t.Fatal(err)
	}
	if !p.ResourceKnown || !p.Has("join-call") || !p.Has("send-audio") || p.Has("mute-users") || p.Revision < rev {
		t.Errorf("a call member's permissions: %+v", p)
	}

	reserved := func(p *client.Permissions) bool {
		return strings.HasPrefix(strings.Join(p.List, " "), "usher.") || strings.Contains(strings.Join(p.List, " "), " usher.")
	}
	p, err = c.ListPermissions(callCtx(t), "user:olga", meeting7)
	if err != nil || reserved(p) {
		t.Errorf("an owner's permissions without IncludeReserved: %+v, %v; want no usher.*", p, err)
	}
	p, err = c.ListPermissions(callCtx(t), "user:olga", meeting7, client.IncludeReserved())
	if err != nil || !p.Has("usher.grants.write") {
		t.Errorf("an owner's permissions with IncludeReserved: %+v, %v; want usher.grants.write among them", p, err)
	}

	p, err = c.ListPermissions(callCtx(t), "user:alice", "call:meeting:404")
	if err != nil || p.ResourceKnown || len(p.List) != 0 {
		t.Errorf("permissions on an unknown resource: %+v, %v; want none, and the resource unknown", p, err)
	}
}
