package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/usher-authz/usher/authz"
)

// Sampler is an authz.Sink that hands every entity on to another (the
// index's Builder, as usher serve loads it) and keeps what a load is drawn
// from: the resources by level, and a uniform sample of the grants. It
// reads back from a data file the platform populate wrote, without holding
// ten million grants a second time or generating them again.
type Sampler struct {
	authz.Sink
	// Keep is how many grants to sample; 0 keeps them all.
	Keep int
	// Seed seeds the sample.
	Seed uint64

	rng    *rand.Rand
	seen   int
	p      Platform
	parent map[string]string
}

// Resource notes r's level and parent and passes it on. Like every string
// a Sink is given, r's may alias the backend's buffers: what is kept is
// copied.
func (s *Sampler) Resource(r authz.Resource) error {
	if s.parent == nil {
		s.parent = map[string]string{}
	}
	name := strings.Clone(r.Name)
	s.parent[name] = strings.Clone(r.Parent)
	if name == CrowdCall {
		s.p.Crowd = CrowdCall
	} else if l, ok := levelOf[authz.TypeOf(name)]; ok {
		s.p.Levels[l] = append(s.p.Levels[l], name)
	}
	return s.Sink.Resource(r)
}

var levelOf = map[string]Level{"account": LevelAccount, "workspace": LevelWorkspace, "calltype": LevelCallType, "call": LevelCall}

// Grant passes g on and keeps it with the chance that leaves a uniform
// sample of Keep (reservoir sampling); the crowd's grants are not drawn
// from, and not kept.
func (s *Sampler) Grant(g authz.Grant) error {
	s.sample(g)
	return s.Sink.Grant(g)
}

// GrantBatch samples gs as Grant does, and passes them on together where the
// sink takes them so, as it does when a backend loads the index.
func (s *Sampler) GrantBatch(gs []authz.Grant) error {
	for _, g := range gs {
		s.sample(g)
	}
	if sink, ok := s.Sink.(authz.BatchSink); ok {
		return sink.GrantBatch(gs)
	}
	for _, g := range gs {
		if err := s.Sink.Grant(g); err != nil {
			return err
		}
	}
	return nil
}

// sample keeps g with the chance that leaves a uniform sample of Keep.
func (s *Sampler) sample(g authz.Grant) {
	if g.Resource != CrowdCall {
		kept := func() authz.Grant {
			return authz.Grant{Subject: strings.Clone(g.Subject), Role: strings.Clone(g.Role), Resource: strings.Clone(g.Resource), Expires: g.Expires}
		}
		grants := &s.p.Snapshot.Grants
		switch {
		case s.Keep <= 0 || len(*grants) < s.Keep:
			*grants = append(*grants, kept())
		default:
			if s.rng == nil {
				s.rng = rand.New(rand.NewPCG(s.Seed, s.Seed+3))
			}
			if i := s.rng.IntN(s.seen + 1); i < s.Keep {
				(*grants)[i] = kept()
			}
		}
		s.seen++
	}
}

// Platform is what the sampler kept, with the calls below each account,
// workspace and call type: enough for Queries.
func (s *Sampler) Platform() Platform {
	p := s.p
	p.CallsBelow = map[string][]string{}
	for _, call := range p.Levels[LevelCall] {
		for a := s.parent[call]; a != "" && a != authz.RootName; a = s.parent[a] {
			p.CallsBelow[a] = append(p.CallsBelow[a], call)
		}
	}
	return p
}

// Grants is how many grants the sampler saw, the crowd's left out.
func (s *Sampler) Grants() int { return s.seen }

// QueryFile is the queries of a Check load, drawn once from a data file
// (usher bench inprocess --save-queries) for a load tool that then replays
// them without generating the platform: at ten million grants, generating it
// again would take the load tool gigabytes beside the server's.
type QueryFile struct {
	Resources int     `json:"resources"`
	Grants    int     `json:"grants"`
	Queries   []Query `json:"queries"`
}

// Save writes f to path as JSON.
func (f QueryFile) Save(path string) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// LoadQueryFile reads what Save wrote.
func LoadQueryFile(path string) (QueryFile, error) {
	var f QueryFile
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Queries) == 0 {
		return f, fmt.Errorf("%s: no queries", path)
	}
	return f, nil
}
