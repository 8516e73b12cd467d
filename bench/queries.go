package bench

import (
	"math/rand/v2"
	"strings"

	"github.com/usher-authz/usher/authz"
)

// Query is one check of the load mix, with the answer the platform gives.
type Query struct {
	authz.Query
	Kind    string // "direct", "inherited" or "denied"
	Allowed bool
}

// Queries draws n checks from the platform, a third each allowed by a grant
// on the call itself, allowed by a grant inherited from above, and denied.
// idx is the platform's index; it decides which draws fit each kind.
func Queries(p Platform, idx *authz.Index, n int, seed uint64) []Query {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	grants := p.Snapshot.Grants
	calls := p.Levels[LevelCall]
	var out []Query
	for len(out) < n {
		switch len(out) % 3 {
		case 0:
			g := grants[rng.IntN(len(grants))]
			if !strings.HasPrefix(g.Resource, "call:") {
				continue
			}
			if q, ok := allowedAt(idx, g.Subject, g.Resource, func(d authz.Decision) bool { return d.Scope == g.Resource }); ok {
				out = append(out, Query{Query: q, Kind: "direct", Allowed: true})
			}
		case 1:
			g := grants[rng.IntN(len(grants))]
			below := p.CallsBelow[g.Resource]
			if len(below) == 0 {
				continue
			}
			call := below[rng.IntN(len(below))]
			if q, ok := allowedAt(idx, g.Subject, call, func(d authz.Decision) bool { return d.Scope != call }); ok {
				out = append(out, Query{Query: q, Kind: "inherited", Allowed: true})
			}
		default:
			q := authz.Query{
				Subject:    grants[rng.IntN(len(grants))].Subject,
				Permission: "end-call",
				Resource:   calls[rng.IntN(len(calls))],
			}
			if d, _, err := idx.Check(q); err == nil && !d.Allowed {
				out = append(out, Query{Query: q, Kind: "denied"})
			}
		}
	}
	return out
}

// allowedAt finds a permission subject holds on resource whose decision
// passes want.
func allowedAt(idx *authz.Index, subject, resource string, want func(authz.Decision) bool) (authz.Query, bool) {
	perms, _, _ := idx.ListPermissions(subject, resource, false)
	for _, perm := range perms {
		q := authz.Query{Subject: subject, Permission: perm, Resource: resource}
		if d, _, err := idx.Check(q); err == nil && d.Allowed && want(d) {
			return q, true
		}
	}
	return authz.Query{}, false
}
