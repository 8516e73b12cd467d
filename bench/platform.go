package bench

import (
	"fmt"
	"math/rand/v2"

	"github.com/usher-authz/usher/authz"
)

// Shape sizes a synthetic platform. The tree is root > account > workspace >
// call type > call: depth 4.
type Shape struct {
	Accounts             int
	WorkspacesPerAccount int
	CallTypesPerSpace    int
	CallsPerType         int
	Users                int
	Grants               int
	Blocks               int
	// Crowd is how many grants of the user role one call, CrowdCall,
	// holds besides those above, each to a subject of its own: a
	// livestream's audience, for listings that page through one
	// resource's grants. The load's queries leave it out.
	Crowd int
	Seed  uint64
}

// CrowdCall is the call that holds a platform's crowd, below the first
// call type.
const CrowdCall = "call:crowd"

// crowdSubject is the i-th subject of the crowd.
func crowdSubject(i int) string { return fmt.Sprintf("user:crowd-%d", i) }

// DefaultShape is a million grants over about 100,000 resources.
func DefaultShape() Shape {
	return Shape{Accounts: 100, WorkspacesPerAccount: 10, CallTypesPerSpace: 4, CallsPerType: 24,
		Users: 200_000, Grants: 1_000_000, Blocks: 2_000, Seed: 1}
}

// Level is where in the tree a grant is made.
type Level int

// The levels of the tree, top down.
const (
	LevelAccount Level = iota
	LevelWorkspace
	LevelCallType
	LevelCall
)

// Platform is a generated platform: the entities to store, and for each
// level the resources on it, so that load can be drawn from them.
type Platform struct {
	Snapshot authz.Snapshot
	Levels   [4][]string
	// Calls below each account, workspace and call type, for inherited
	// checks.
	CallsBelow map[string][]string
	// Crowd is CrowdCall when the platform has a crowd, else "".
	Crowd string
}

// Generate builds the platform of shape s on the catalog and roles of base
// (the default policy). The same shape and seed always give the same
// platform, so a load tool can regenerate what populate stored.
func Generate(s Shape, base authz.Policy) Platform {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	p := Platform{CallsBelow: map[string][]string{}}
	snap := &p.Snapshot
	snap.Permissions = base.Permissions
	snap.Roles = append(snap.Roles, base.Roles...)
	snap.CreatorRoles = base.CreatorRoles
	// The policy's admission rules, so that Join on a populated server
	// admits as the policy says.
	snap.Admissions = base.Admissions
	add := func(level Level, name, parent string) {
		snap.Resources = append(snap.Resources, authz.Resource{Name: name, Parent: parent})
		p.Levels[level] = append(p.Levels[level], name)
	}
	for a := range s.Accounts {
		account := fmt.Sprintf("account:a%d", a)
		add(LevelAccount, account, authz.RootName)
		// Every account defines a custom role.
		snap.Roles = append(snap.Roles, authz.Role{Name: "speaker", Scope: account,
			Permissions: []string{"join-call", "read-call", "send-audio", "send-video", "screenshare"}})
		for w := range s.WorkspacesPerAccount {
			space := fmt.Sprintf("workspace:a%d-w%d", a, w)
			add(LevelWorkspace, space, account)
			for t := range s.CallTypesPerSpace {
				ct := fmt.Sprintf("calltype:a%d-w%d-t%d", a, w, t)
				add(LevelCallType, ct, space)
				if t == 0 {
					// One call type per workspace overrides what a host may do.
					snap.Roles = append(snap.Roles, authz.Role{Name: "host", Scope: ct,
						Permissions: []string{"join-call", "read-call", "send-audio", "send-video", "end-call", "mute-users"}})
				}
				for c := range s.CallsPerType {
					call := fmt.Sprintf("call:a%d-w%d-t%d-c%d", a, w, t, c)
					add(LevelCall, call, ct)
					for _, above := range []string{account, space, ct} {
						p.CallsBelow[above] = append(p.CallsBelow[above], call)
					}
				}
			}
		}
	}
	rolesAt := [4][]string{
		{"owner", "speaker", "user"},
		{"moderator", "speaker", "user"},
		{"user", "host"},
		{"call-member", "call-member", "host", "user"},
	}
	seen := make(map[[3]string]bool, s.Grants)
	for len(snap.Grants) < s.Grants {
		level := pickLevel(rng)
		resources := p.Levels[level]
		if len(resources) == 0 {
			continue
		}
		g := authz.Grant{
			Subject:  fmt.Sprintf("user:u%d", rng.IntN(s.Users)),
			Role:     rolesAt[level][rng.IntN(len(rolesAt[level]))],
			Resource: resources[rng.IntN(len(resources))],
		}
		key := [3]string{g.Subject, g.Role, g.Resource}
		if seen[key] {
			continue
		}
		seen[key] = true
		snap.Grants = append(snap.Grants, g)
	}
	if s.Crowd > 0 && len(p.Levels[LevelCallType]) > 0 {
		// Not among the calls of Levels: queries and joins leave it out.
		p.Crowd = CrowdCall
		snap.Resources = append(snap.Resources, authz.Resource{Name: CrowdCall, Parent: p.Levels[LevelCallType][0]})
		for i := range s.Crowd {
			snap.Grants = append(snap.Grants, authz.Grant{Subject: crowdSubject(i), Role: "user", Resource: CrowdCall})
		}
	}
	blocked := map[[2]string]bool{}
	for len(snap.Blocks) < s.Blocks && len(p.Levels[LevelCall]) > 0 {
		b := authz.Block{
			Subject:  fmt.Sprintf("user:u%d", rng.IntN(s.Users)),
			Resource: p.Levels[LevelCall][rng.IntN(len(p.Levels[LevelCall]))],
			Reason:   "generated",
		}
		if rng.IntN(2) == 0 {
			b.Permissions = []string{"send-audio"}
		}
		if key := [2]string{b.Subject, b.Resource}; !blocked[key] {
			blocked[key] = true
			snap.Blocks = append(snap.Blocks, b)
		}
	}
	return p
}

// pickLevel spreads grants over every level, most of them on calls.
func pickLevel(rng *rand.Rand) Level {
	switch n := rng.IntN(100); {
	case n < 5:
		return LevelAccount
	case n < 20:
		return LevelWorkspace
	case n < 30:
		return LevelCallType
	default:
		return LevelCall
	}
}
