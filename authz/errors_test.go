package authz_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/usher-authz/usher/authz"
)

func TestKindOf(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want authz.Kind
	}{
		{"a kind set where the error is built wins",
			&authz.Error{Code: authz.FailedPrecondition, Kind: authz.KindCycle, Rule: authz.RuleNoEscalation}, authz.KindCycle},
		{"a delegation rule names the kind of its refusal",
			&authz.Error{Code: authz.PermissionDenied, Rule: authz.RuleNoEscalation}, authz.KindNoEscalation},
		{"no overreach", &authz.Error{Code: authz.PermissionDenied, Rule: authz.RuleNoOverreach}, authz.KindNoOverreach},
		{"no self-service", &authz.Error{Code: authz.PermissionDenied, Rule: authz.RuleNoSelfService}, authz.KindNoSelfService},
		{"a missing permission", &authz.Error{Code: authz.PermissionDenied, Rule: authz.RuleMissingPermission}, authz.KindMissingPermission},
		{"a role not assignable", &authz.Error{Code: authz.PermissionDenied, Rule: authz.RuleNotAssignable}, authz.KindNotAssignable},
		{"what only the platform writes", &authz.Error{Code: authz.PermissionDenied, Rule: authz.RulePlatformOnly}, authz.KindPlatformOnly},
		{"a malformed field is INVALID_FIELD", &authz.Error{Code: authz.Invalid}, authz.KindInvalidField},
		{"a refusal of a limit is LIMIT_EXCEEDED", &authz.Error{Code: authz.ResourceExhausted}, authz.KindLimitExceeded},
		{"a conflict is ABORTED_CONFLICTS", &authz.Error{Code: authz.Aborted}, authz.KindAbortedConflicts},
		{"a wrapped error keeps its kind",
			fmt.Errorf("applying: %w", &authz.Error{Code: authz.NotFound, Kind: authz.KindRoleNotFound}), authz.KindRoleNotFound},
		{"an error that is not a refusal has none", errors.New("disk on fire"), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := authz.KindOf(c.err); got != c.want {
				t.Errorf("KindOf(%v) = %q, want %q", c.err, got, c.want)
			}
		})
	}
}

// Every Code has a kind, so that no refusal goes without a reason.
func TestEveryCodeHasAKind(t *testing.T) {
	for code := authz.Invalid; code <= authz.Aborted; code++ {
		if authz.KindOf(&authz.Error{Code: code}) == "" {
			t.Errorf("code %d has no kind", code)
		}
	}
}

// The engine's refusals carry the kinds that tell them apart.
func TestRefusalsCarryTheirKind(t *testing.T) {
	w := newWorld(t, authz.Policy{
		Permissions: []authz.Permission{{Name: "join-call"}},
		Resources:   []authz.Resource{{Name: "account:acme"}, {Name: "call:acme:1", Parent: "account:acme"}},
	})
	_, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "account:acme", Parent: "call:acme:1"})
	if got := authz.KindOf(err); got != authz.KindCycle {
		t.Errorf("a move under a descendant: %v, kind %q, want CYCLE", err, got)
	}
	_, err = w.eng.DeleteResource(w.ctx, w.by, "account:acme")
	if got := authz.KindOf(err); got != authz.KindHasChildren {
		t.Errorf("deleting a resource with children: %v, kind %q, want HAS_CHILDREN", err, got)
	}
	_, err = w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:a", Role: "juggler", Resource: "call:acme:1"})
	if got := authz.KindOf(err); got != authz.KindRoleNotFound {
		t.Errorf("a grant of an undefined role: %v, kind %q, want ROLE_NOT_FOUND", err, got)
	}
	_, _, err = w.idx.Check(authz.Query{Subject: "user:a", Permission: "teleport", Resource: "call:acme:1"})
	if got := authz.KindOf(err); got != authz.KindUndeclaredPermission {
		t.Errorf("a check of an undeclared permission: %v, kind %q, want UNDECLARED_PERMISSION", err, got)
	}
}
