package authz_test

import (
	"context"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// DESIGN.md: "max_holders: at most this many subjects may hold it on one
// resource", and "bindable_on: resource types where it may be granted". A
// definition applies to the grants of its name below its scope that no
// nearer one covers: one that their holders would pass, or that leaves out
// their resources' types, is refused as a grant under it, or a move that
// put them under it, would be; and so is deleting a definition that leaves
// them under such a one above it. Nothing is written.
func TestARoleDefinitionKeepsItsGrantsWithinItsLimits(t *testing.T) {
	newLimits := func(t *testing.T) *world {
		w := newWorld(t, streamPolicy())
		w.grant("user:ann", "call-member", "call:livestream:42")
		w.grant("user:bob", "call-member", "call:livestream:42")
		w.grant("user:cat", "call-member", "call:livestream:43")
		return w
	}
	member := authz.Role{Name: "call-member", Scope: "calltype:livestream", Permissions: []string{"join-call", "read-call"}}

	t.Run("a definition whose max_holders the holders on a resource pass is FAILED_PRECONDITION", func(t *testing.T) {
		w := newLimits(t)
		r := member
		r.MaxHolders = 1
		e := w.refuses(authz.FailedPrecondition, "role.max_holders", "1", func() (authz.Revision, error) { return w.eng.PutRole(w.ctx, w.by, r) })
		if e.Kind != authz.KindMaxHolders || e.Meta["resource"] != "call:livestream:42" || e.Meta["role"] != "call-member" || e.Meta["max_holders"] != "1" {
			t.Errorf("refusal %v (%s, %v), want MAX_HOLDERS naming call:livestream:42", e, e.Kind, e.Meta)
		}
		// Two holders fit a max_holders of two.
		r.MaxHolders = 2
		w.role(r)
	})

	t.Run("so is one at the same scope, redefined", func(t *testing.T) {
		w := newLimits(t)
		w.role(member)
		r := member
		r.MaxHolders = 1
		w.refuses(authz.FailedPrecondition, "role.max_holders", "1", func() (authz.Revision, error) { return w.eng.PutRole(w.ctx, w.by, r) })
	})

	t.Run("a definition whose bindable_on leaves out a holder's resource type is FAILED_PRECONDITION", func(t *testing.T) {
		w := newLimits(t)
		r := member
		r.BindableOn = []string{"event", "calltype"}
		e := w.refuses(authz.FailedPrecondition, "role.bindable_on", "event,calltype", func() (authz.Revision, error) { return w.eng.PutRole(w.ctx, w.by, r) })
		if e.Kind != authz.KindNotBindable || e.Meta["role"] != "call-member" {
			t.Errorf("refusal %v (%s, %v), want NOT_BINDABLE", e, e.Kind, e.Meta)
		}
		r.BindableOn = []string{"call"}
		w.role(r)
	})

	t.Run("grants a nearer definition covers, and grants run out, are not held to it", func(t *testing.T) {
		w := newLimits(t)
		w.role(authz.Role{Name: "call-member", Scope: "call:livestream:42", Permissions: []string{"join-call"}})
		w.grantUntil("user:dan", "call-member", "call:livestream:43", w.clock.Now().Add(time.Minute))
		w.clock.Advance(time.Hour)
		r := member
		r.MaxHolders = 1
		w.role(r)
	})

	t.Run("deleting a definition that leaves its grants under a stricter one above is FAILED_PRECONDITION", func(t *testing.T) {
		w := newLimits(t)
		w.role(member) // on the calltype: the definition the two holders on call:livestream:42 come under
		// One above it, stricter, applies to none of them.
		w.role(authz.Role{Name: "call-member", Scope: "account:acme", Permissions: []string{"join-call"}, MaxHolders: 1})
		e := w.refuses(authz.FailedPrecondition, "name", "call-member", func() (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, w.by, "calltype:livestream", "call-member")
		})
		if e.Kind != authz.KindMaxHolders || e.Meta["scope"] != "account:acme" || e.Meta["resource"] != "call:livestream:42" {
			t.Errorf("refusal %v (%s, %v), want MAX_HOLDERS of the definition at account:acme on call:livestream:42", e, e.Kind, e.Meta)
		}
		// One above it bindable only on events leaves them on calls.
		w.role(authz.Role{Name: "call-member", Scope: "account:acme", Permissions: []string{"join-call"}, BindableOn: []string{"event"}})
		e = w.refuses(authz.FailedPrecondition, "name", "call-member", func() (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, w.by, "calltype:livestream", "call-member")
		})
		if e.Kind != authz.KindNotBindable || e.Meta["scope"] != "account:acme" {
			t.Errorf("refusal %v (%s, %v), want NOT_BINDABLE of the definition at account:acme", e, e.Kind, e.Meta)
		}
		w.role(authz.Role{Name: "call-member", Scope: "account:acme", Permissions: []string{"join-call"}, MaxHolders: 1})
		rev, err := w.eng.Revoke(context.Background(), w.by, authz.Grant{Subject: "user:bob", Role: "call-member", Resource: "call:livestream:42"})
		w.ok("Revoke", rev, err)
		rev, err = w.eng.DeleteRole(w.ctx, w.by, "calltype:livestream", "call-member")
		w.ok("DeleteRole once one holder is left", rev, err)
	})
}
