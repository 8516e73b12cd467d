package bench

import (
	"fmt"
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
	grants := p.drawable()
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

// drawable are the grants loads are drawn from: all but the crowd's.
func (p Platform) drawable() []authz.Grant {
	if p.Crowd == "" {
		return p.Snapshot.Grants
	}
	out := make([]authz.Grant, 0, len(p.Snapshot.Grants))
	for _, g := range p.Snapshot.Grants {
		if g.Resource != p.Crowd {
			out = append(out, g)
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

// Join is one (subject, call) pair of the join load, with the outcome the
// platform's admission rule for calls gives it.
type Join struct {
	Subject, Call string
}

// Joins draws n distinct (subject, call) pairs that the platform admits: the
// subject holds the rule's join permission on the call, by a grant on it or
// inherited, no block covers it, and it passes the lobby by holding the
// lobby's bypass or admit permission. The calls have no start time, no
// capacity and no exclusive role, so nothing else can keep the subject out.
// Joining again as the same subject in the same call replaces the session,
// so a load that replays the pairs keeps at most n sessions live. It fails
// when the platform has no admission rule for calls.
func Joins(p Platform, idx *authz.Index, n int, seed uint64) ([]Join, error) {
	var rule *authz.Admission
	for i, a := range p.Snapshot.Admissions {
		if a.ResourceType == "call" {
			rule = &p.Snapshot.Admissions[i]
		}
	}
	if rule == nil {
		return nil, fmt.Errorf("the platform has no admission rule for calls")
	}
	holds := func(subject, perm, call string) bool {
		if perm == "" {
			return false
		}
		d, _, err := idx.Check(authz.Query{Subject: subject, Permission: perm, Resource: call})
		return err == nil && d.Allowed
	}
	rng := rand.New(rand.NewPCG(seed, seed+2))
	grants := p.drawable()
	seen := map[Join]bool{}
	var out []Join
	// Draws stop when 100,000 in a row found nothing new: the platform
	// holds fewer pairs than asked.
	for misses := 0; len(out) < n && misses < 100_000; misses++ {
		g := grants[rng.IntN(len(grants))]
		call := g.Resource
		if below := p.CallsBelow[g.Resource]; len(below) > 0 {
			call = below[rng.IntN(len(below))]
		} else if !strings.HasPrefix(call, "call:") {
			continue
		}
		j := Join{Subject: g.Subject, Call: call}
		if seen[j] || !holds(j.Subject, rule.Join, call) {
			continue
		}
		if l := rule.Lobby; l != nil && !holds(j.Subject, l.Bypass, call) && !holds(j.Subject, l.Admit, call) {
			continue
		}
		seen[j] = true
		out = append(out, j)
		misses = -1
	}
	if len(out) < n {
		return nil, fmt.Errorf("found %d admitted (subject, call) pairs, want %d: the platform is too small", len(out), n)
	}
	return out, nil
}
