package authz

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// The Builder takes a subject's grants as they come and makes the lists by
// resource once, at Build. These tests hold it to the builder it replaced,
// which inserted every grant into both lists as it came (legacyBuilder
// below): the index must be the same to the last id, however the grants are
// handed over and in whatever order.

// legacyBuilder is the Builder as it loaded grants before: one at a time,
// into both lists, sorted by Build comparing names.
type legacyBuilder struct{ *Builder }

func (b legacyBuilder) Grant(g Grant) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	x := b.x
	res := x.lookupNode(g.Resource)
	if res == noNode {
		return fmt.Errorf("grant of %q to %q: resource %q is not registered", g.Role, g.Subject, g.Resource)
	}
	role := x.internRole(g.Role)
	s := x.refSubject(g.Subject)
	exp := expiry(g.Expires)
	x.bySubject.insert(s, x.bySubject.count(s), subjectGrant{res: res, role: role, exp: exp})
	x.byResource.insert(res, x.byResource.count(res), resourceGrant{role: role, subj: s, exp: exp})
	x.roleHolders[role]++
	x.grants++
	return nil
}

func (b legacyBuilder) Build(rev Revision) (*Index, error) {
	x, err := b.buildTree()
	if err != nil {
		return nil, err
	}
	for s := range x.subj.maxID() {
		list := x.bySubject.get(uint32(s))
		slices.SortFunc(list, func(a, b subjectGrant) int {
			if a.res != b.res {
				return cmpUint32(a.res, b.res)
			}
			return strings.Compare(x.roleNames[a.role], x.roleNames[b.role])
		})
		if i := duplicateGrant(list); i >= 0 {
			return nil, fmt.Errorf("grant of %q to %q on %q is loaded twice", x.roleNames[list[i].role], x.subj.name(uint32(s)), x.name(list[i].res))
		}
		slices.Sort(x.created.get(uint32(s)))
	}
	x.countSubjectQuotas()
	for id := range x.nodes {
		slices.SortFunc(x.byResource.get(uint32(id)), func(a, b resourceGrant) int {
			return x.compareResourceGrant(a, x.roleNames[b.role], x.subj.name(b.subj))
		})
	}
	x.rev = rev
	b.x = nil
	return x, nil
}

// builderWorld is a random snapshot with what makes the builder's paths
// differ: subjects that registered resources before their grants come,
// grants on root, roles no resource defines, expiries, blocks and quotas
// naming subjects after the grants.
func builderWorld(seed uint64) Snapshot {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	var s Snapshot
	for i := range 5 {
		p := Permission{Name: fmt.Sprintf("p%d", i)}
		if i > 0 && r.IntN(2) == 0 {
			p.Parents = []string{fmt.Sprintf("p%d", r.IntN(i))}
		}
		s.Permissions = append(s.Permissions, p)
	}
	subjects := make([]string, 10+r.IntN(60))
	for i := range subjects {
		subjects[i] = fmt.Sprintf("user:u%d", r.IntN(1000))
	}
	resources := []string{RootName}
	for i := range 20 + r.IntN(100) {
		name := fmt.Sprintf("%s:r%d", []string{"account", "space", "call"}[r.IntN(3)], i)
		res := Resource{Name: name, Parent: resources[r.IntN(len(resources))]}
		if res.Parent == RootName && r.IntN(2) == 0 {
			res.Parent = ""
		}
		if r.IntN(4) == 0 {
			res.Creator = subjects[r.IntN(len(subjects))]
		}
		resources = append(resources, name)
		s.Resources = append(s.Resources, res)
	}
	s.Resources = inKeyOrder(s.Resources, func(r Resource) string { return r.Name })
	roles := []string{"viewer", "host", "zeta", "admin", "adhoc-a", "adhoc-b"}
	for range 6 {
		// The adhoc roles are granted but defined nowhere.
		s.Roles = append(s.Roles, Role{Name: roles[r.IntN(4)], Scope: resources[r.IntN(len(resources))],
			Permissions: []string{fmt.Sprintf("p%d", r.IntN(5))}})
	}
	s.Roles = inKeyOrder(s.Roles, func(r Role) string { return r.Scope + "\x00" + r.Name })
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for range r.IntN(3000) {
		g := Grant{Subject: subjects[r.IntN(len(subjects))], Resource: resources[r.IntN(len(resources))], Role: roles[r.IntN(len(roles))]}
		if r.IntN(3) == 0 {
			g.Expires = at.Add(time.Duration(r.IntN(1000)) * time.Second)
		}
		s.Grants = append(s.Grants, g)
	}
	s.Grants = inKeyOrder(s.Grants, grantKey)
	for i := range r.IntN(5) {
		s.Blocks = append(s.Blocks, Block{Subject: fmt.Sprintf("user:blocked%d", i), Resource: resources[r.IntN(len(resources))], ID: "b"})
	}
	for i := range r.IntN(4) {
		s.Quotas = append(s.Quotas, Quota{Scope: resources[r.IntN(len(resources))], ResourceType: "call", Subject: fmt.Sprintf("user:quota%d", i), Limit: 3})
	}
	s.Quotas = inKeyOrder(s.Quotas, func(q Quota) string { return q.Scope + "\x00" + q.Subject })
	s.Revision = 7
	return s
}

func grantKey(g Grant) string { return g.Subject + "\x00" + g.Resource + "\x00" + g.Role }

// inKeyOrder keeps the first of each key, in order of key: as a backend keeps
// them.
func inKeyOrder[T any](list []T, key func(T) string) []T {
	slices.SortStableFunc(list, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return slices.CompactFunc(list, func(a, b T) bool { return key(a) == key(b) })
}

// loadInBatches is s.Load, with the grants handed over in batches of
// random sizes.
func loadInBatches(s Snapshot, b *Builder, r *rand.Rand) error {
	grants := s.Grants
	s.Grants = nil
	var rest Snapshot
	rest.Blocks, rest.Quotas, rest.CreatorRoles, rest.DefaultQuotas, rest.Admissions = s.Blocks, s.Quotas, s.CreatorRoles, s.DefaultQuotas, s.Admissions
	s.Blocks, s.Quotas, s.CreatorRoles, s.DefaultQuotas, s.Admissions = nil, nil, nil, nil, nil
	if err := s.Load(b); err != nil {
		return err
	}
	for len(grants) > 0 {
		n := min(len(grants), 1+r.IntN(2*grantBlock))
		// The strings may alias the backend's buffers: the builder
		// must keep copies.
		batch := make([]Grant, n)
		for i, g := range grants[:n] {
			batch[i] = Grant{Subject: string(bytes.Clone([]byte(g.Subject))), Resource: string(bytes.Clone([]byte(g.Resource))),
				Role: string(bytes.Clone([]byte(g.Role))), Expires: g.Expires}
		}
		err := b.GrantBatch(batch)
		for i := range batch {
			batch[i] = Grant{Subject: "scribbled", Resource: "scribbled", Role: "scribbled"}
		}
		if err != nil {
			return err
		}
		grants = grants[n:]
	}
	return rest.Load(b)
}

func TestBuilderBuildsTheIndexGrantByGrantLoadingBuilt(t *testing.T) {
	for seed := range uint64(60) {
		s := builderWorld(seed)
		shuffled := s
		shuffled.Grants = slices.Clone(s.Grants)
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(shuffled.Grants), func(i, j int) {
			shuffled.Grants[i], shuffled.Grants[j] = shuffled.Grants[j], shuffled.Grants[i]
		})
		for _, tc := range []struct {
			name string
			s    Snapshot
			load func(Snapshot, *Builder) error
		}{
			{"grants in a backend's order, one at a time", s, func(s Snapshot, b *Builder) error { return s.Load(b) }},
			{"grants in a backend's order, in batches", s, func(s Snapshot, b *Builder) error { return loadInBatches(s, b, rand.New(rand.NewPCG(seed, 2))) }},
			{"grants in any order, one at a time", shuffled, func(s Snapshot, b *Builder) error { return s.Load(b) }},
			{"grants in any order, in batches", shuffled, func(s Snapshot, b *Builder) error { return loadInBatches(s, b, rand.New(rand.NewPCG(seed, 3))) }},
		} {
			legacy := legacyBuilder{NewBuilder(SystemClock{})}
			if err := tc.s.Load(legacy); err != nil {
				t.Fatalf("seed %d, %s: legacy load: %v", seed, tc.name, err)
			}
			want, err := legacy.Build(tc.s.Revision)
			if err != nil {
				t.Fatalf("seed %d, %s: legacy build: %v", seed, tc.name, err)
			}
			b := NewBuilder(SystemClock{})
			if err := tc.load(tc.s, b); err != nil {
				t.Fatalf("seed %d, %s: %v", seed, tc.name, err)
			}
			got, err := b.Build(tc.s.Revision)
			if err != nil {
				t.Fatalf("seed %d, %s: %v", seed, tc.name, err)
			}
			if diff := diffIndexes(got, want); diff != "" {
				t.Errorf("seed %d, %s: the index differs from the one grant by grant loading built: %s", seed, tc.name, diff)
			}
		}
	}
}

func TestBuilderRefusesWhatGrantByGrantLoadingRefused(t *testing.T) {
	s := builderWorld(3)
	if len(s.Grants) < 10 {
		t.Fatal("too few grants")
	}
	for _, tc := range []struct {
		name   string
		damage func(s *Snapshot)
	}{
		{"a grant on a resource that is not registered", func(s *Snapshot) {
			s.Grants[len(s.Grants)/2].Resource = "call:nowhere"
		}},
		{"two grants on a resource that is not registered", func(s *Snapshot) {
			s.Grants[3].Resource = "call:nowhere"
			s.Grants[len(s.Grants)-2].Resource = "call:elsewhere"
		}},
		{"a grant loaded twice, one after the other", func(s *Snapshot) {
			s.Grants = slices.Insert(s.Grants, 5, s.Grants[5])
		}},
		{"a grant loaded twice, apart", func(s *Snapshot) {
			s.Grants = append(s.Grants, s.Grants[2])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			damaged := s
			damaged.Grants = slices.Clone(s.Grants)
			tc.damage(&damaged)
			legacy := legacyBuilder{NewBuilder(SystemClock{})}
			err := damaged.Load(legacy)
			if err == nil {
				_, err = legacy.Build(damaged.Revision)
			}
			if err == nil {
				t.Fatal("grant by grant loading accepted it")
			}
			b := NewBuilder(SystemClock{})
			got := loadInBatches(damaged, b, rand.New(rand.NewPCG(1, 1)))
			if got == nil {
				_, got = b.Build(damaged.Revision)
			}
			if fmt.Sprint(got) != err.Error() {
				t.Errorf("got %v, want %v", got, err)
			}
		})
	}
}

// diffIndexes describes the first difference between a and b, or returns
// "". Lists and name tables are compared by what they hold rather than how
// they are laid out in memory.
func diffIndexes(a, b *Index) string {
	ia, ib := indexImage(a), indexImage(b)
	for name, va := range ia {
		if vb := ib[name]; !reflect.DeepEqual(va, vb) {
			return fmt.Sprintf("%s: %v, want %v", name, va, vb)
		}
	}
	return ""
}

// indexImage is every field of x but its locks, channels, clock, record
// of where its arrays were (huge) and what tells it apart from every other
// index (epoch, sealKey), with lists as each key's records and name tables
// as each id's name.
func indexImage(x *Index) map[string]any {
	v := reflect.ValueOf(x).Elem()
	out := map[string]any{}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		field := reflect.NewAt(f.Type, unsafe.Pointer(v.Field(i).UnsafeAddr())).Elem().Interface()
		switch f.Name {
		case "mu", "view", "changed", "replaced", "once", "clock", "huge", "epoch", "sealKey":
		case "res", "types", "subj":
			out[f.Name] = namesImage(field.(*names))
		case "bySubject":
			out[f.Name] = listsImage(&x.bySubject)
		case "byResource":
			out[f.Name] = listsImage(&x.byResource)
		case "created":
			out[f.Name] = listsImage(&x.created)
		default:
			out[f.Name] = field
		}
	}
	return out
}

func namesImage(t *names) []any {
	ids := make([]string, t.maxID())
	for id := range ids {
		if t.spans[id].n > 0 {
			ids[id] = t.name(uint32(id))
		}
	}
	return []any{ids, t.free, t.live, t.bytes, t.waste}
}

func listsImage[R any](l *lists[R]) map[uint32][]R {
	out := map[uint32][]R{}
	for key := range l.heads {
		if list := l.get(uint32(key)); len(list) > 0 {
			out[uint32(key)] = slices.Clone(list)
		}
	}
	return out
}
