package bench_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

func small() bench.Shape {
	return bench.Shape{Accounts: 3, WorkspacesPerAccount: 2, CallTypesPerSpace: 2, CallsPerType: 5,
		Users: 200, Grants: 2_000, Blocks: 20, Seed: 7}
}

func generate(t *testing.T, s bench.Shape) bench.Platform {
	t.Helper()
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	return bench.Generate(s, server.FromPolicy(msg))
}

func TestGenerateIsDeterministicAndShaped(t *testing.T) {
	s := small()
	a, b := generate(t, s), generate(t, s)
	if !reflect.DeepEqual(a.Snapshot, b.Snapshot) {
		t.Fatal("the same shape and seed gave two platforms")
	}
	if got, want := len(a.Snapshot.Resources), 3+3*2+3*2*2+3*2*2*5; got != want {
		t.Errorf("%d resources, want %d", got, want)
	}
	if len(a.Snapshot.Grants) != s.Grants || len(a.Snapshot.Blocks) != s.Blocks {
		t.Errorf("%d grants and %d blocks, want %d and %d", len(a.Snapshot.Grants), len(a.Snapshot.Blocks), s.Grants, s.Blocks)
	}
	levels := map[string]int{}
	for _, g := range a.Snapshot.Grants {
		levels[authz.TypeOf(g.Resource)]++
	}
	for _, typ := range []string{"account", "workspace", "calltype", "call"} {
		if levels[typ] == 0 {
			t.Errorf("no grants on %s resources: %v", typ, levels)
		}
	}
	s.Seed++
	if reflect.DeepEqual(a.Snapshot.Grants, generate(t, s).Snapshot.Grants) {
		t.Error("another seed gave the same grants")
	}
}

// A populated file loads into an index that answers every drawn query as
// the query says.
func TestImportedPlatformAnswersTheQueries(t *testing.T) {
	p := generate(t, small())
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if rev, err := store.Import(p.Snapshot, "test"); err != nil || rev != 1 {
		t.Fatalf("Import = %d, %v", rev, err)
	}
	if _, err := store.Import(p.Snapshot, "test"); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a second import: %v, want a refusal", err)
	}
	snap, err := storage.Snapshot(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Grants) != len(p.Snapshot.Grants) || len(snap.Resources) != len(p.Snapshot.Resources) {
		t.Fatalf("loaded %d grants and %d resources, want %d and %d", len(snap.Grants), len(snap.Resources), len(p.Snapshot.Grants), len(p.Snapshot.Resources))
	}
	idx, err := authz.NewIndex(snap)
	if err != nil {
		t.Fatal(err)
	}
	queries := bench.Queries(p, idx, 300, 1)
	kinds := map[string]int{}
	for _, q := range queries {
		kinds[q.Kind]++
		d, _, err := idx.Check(q.Query)
		if err != nil || d.Allowed != q.Allowed {
			t.Fatalf("%+v: %+v, %v", q, d, err)
		}
		if q.Kind == "inherited" && d.Scope == q.Resource || q.Kind == "direct" && d.Scope != q.Resource {
			t.Errorf("%s query %+v decided at %s", q.Kind, q.Query, d.Scope)
		}
	}
	if kinds["direct"] != 100 || kinds["inherited"] != 100 || kinds["denied"] != 100 {
		t.Errorf("mix %v, want a third of each", kinds)
	}
}

func TestClosedLoopRunsForItsDurationAndMeasuresEveryCall(t *testing.T) {
	fail := errors.New("refused")
	start := time.Now()
	s := bench.ClosedLoop(context.Background(), "sleep", 4, 200*time.Millisecond, func(ctx context.Context, w, seq int) (string, error) {
		time.Sleep(time.Millisecond)
		if seq == 0 {
			return "first", fail
		}
		return "", nil
	})
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("ran %s for a 200ms run", took)
	}
	if s.Calls < 40 || s.Errors != 4 || !errors.Is(s.FirstError, fail) {
		t.Errorf("calls %d, errors %d (%v); want dozens of calls and one error per worker", s.Calls, s.Errors, s.FirstError)
	}
	if !reflect.DeepEqual(s.Outcomes, map[string]int{"first": 4}) {
		t.Errorf("outcomes %v, want the first call of each of the 4 workers", s.Outcomes)
	}
	if p50, p99 := s.Percentile(0.5), s.Percentile(0.99); p50 < time.Millisecond || p99 < p50 {
		t.Errorf("p50 %s, p99 %s", p50, p99)
	}
}

// Joins draws distinct pairs that the default policy's admission rule for
// calls lets in: the join permission, and read-call to pass the lobby.
func TestJoinsAreDistinctAndAdmitted(t *testing.T) {
	p := generate(t, small())
	idx, err := authz.NewIndex(p.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	joins, err := bench.Joins(p, idx, 300, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(joins) != 300 {
		t.Fatalf("%d joins, want 300", len(joins))
	}
	seen := map[bench.Join]bool{}
	for _, j := range joins {
		if seen[j] {
			t.Errorf("%+v drawn twice: its sessions would replace each other", j)
		}
		seen[j] = true
		for _, perm := range []string{"join-call", "read-call"} {
			if d, _, err := idx.Check(authz.Query{Subject: j.Subject, Permission: perm, Resource: j.Call}); err != nil || !d.Allowed {
				t.Errorf("%+v: %s %+v, %v; want allowed", j, perm, d, err)
			}
		}
	}
	if _, err := bench.Joins(p, idx, 1_000_000, 1); err == nil {
		t.Error("a million joins drawn from 2,000 grants; want a refusal")
	}
	p.Snapshot.Admissions = nil
	if _, err := bench.Joins(p, idx, 10, 1); err == nil || !strings.Contains(err.Error(), "no admission rule") {
		t.Errorf("Joins without an admission rule: %v", err)
	}
}

// A crowd is one more call holding a grant to each of its own subjects; the
// load's queries and joins never draw from it.
func TestCrowdIsOneCallTheLoadsLeaveOut(t *testing.T) {
	s := small()
	s.Crowd = 500
	p := generate(t, s)
	if p.Crowd != bench.CrowdCall {
		t.Fatalf("crowd %q", p.Crowd)
	}
	on, subjects := 0, map[string]bool{}
	for _, g := range p.Snapshot.Grants {
		if g.Resource == bench.CrowdCall {
			on++
			subjects[g.Subject] = true
		}
	}
	if on != 500 || len(subjects) != 500 || len(p.Snapshot.Grants) != s.Grants+500 {
		t.Errorf("%d grants on the crowd to %d subjects, %d in all; want 500 to 500, %d in all", on, len(subjects), len(p.Snapshot.Grants), s.Grants+500)
	}
	without := small()
	if !reflect.DeepEqual(p.Snapshot.Grants[:s.Grants], generate(t, without).Snapshot.Grants) {
		t.Error("a crowd changed the rest of the platform")
	}
	idx, err := authz.NewIndex(p.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range bench.Queries(p, idx, 600, 1) {
		if q.Resource == bench.CrowdCall || subjects[q.Subject] {
			t.Fatalf("query %+v drawn from the crowd", q)
		}
	}
	joins, err := bench.Joins(p, idx, 300, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range joins {
		if j.Call == bench.CrowdCall || subjects[j.Subject] {
			t.Fatalf("join %+v drawn from the crowd", j)
		}
	}
}

// A history is grants and their revokes: applied to the platform, it
// leaves every grant as it was, with each subject of the history in many
// change sets.
func TestHistoryLeavesThePlatformAsItWas(t *testing.T) {
	p := generate(t, small())
	idx, err := authz.NewIndex(p.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	sets := bench.History(p, 4000, 1)
	if len(sets) != 4000 {
		t.Fatalf("%d change sets, want 4000", len(sets))
	}
	per := map[string]int{}
	for i, cs := range sets {
		cs.Revision = authz.Revision(i + 2)
		idx.Apply(cs)
		per[cs.Changes[0].Grant.Subject]++
	}
	if _, grants, _ := idx.Counts(); grants != len(p.Snapshot.Grants) {
		t.Errorf("%d grants after the history, want %d", grants, len(p.Snapshot.Grants))
	}
	if len(per) < bench.HistorySubjects/2 || per[bench.HistorySubject(0)] == 0 {
		t.Errorf("the history's subjects: %d of them; want most of %d", len(per), bench.HistorySubjects)
	}
}

// Read back from a data file, a platform's sampler finds the levels and the
// calls below each resource as Generate made them, keeps a uniform sample of
// the grants, and leaves the crowd out; the queries drawn from it are
// answered as they say.
func TestSamplerReadsThePlatformBack(t *testing.T) {
	s := small()
	s.Crowd = 100
	p := generate(t, s)
	b := authz.NewBuilder(authz.SystemClock{})
	sampler := &bench.Sampler{Sink: b, Keep: 500, Seed: 1}
	if err := p.Snapshot.Load(sampler); err != nil {
		t.Fatal(err)
	}
	idx, err := b.Build(1)
	if err != nil {
		t.Fatal(err)
	}
	back := sampler.Platform()
	if !reflect.DeepEqual(back.Levels, p.Levels) || back.Crowd != bench.CrowdCall {
		t.Errorf("levels %v (crowd %q), want %v", back.Levels, back.Crowd, p.Levels)
	}
	if !reflect.DeepEqual(back.CallsBelow, p.CallsBelow) {
		t.Error("calls below differ from the generated platform's")
	}
	if len(back.Snapshot.Grants) != 500 || sampler.Grants() != s.Grants {
		t.Errorf("kept %d of %d grants, want 500 of %d", len(back.Snapshot.Grants), sampler.Grants(), s.Grants)
	}
	for _, g := range back.Snapshot.Grants {
		if g.Resource == bench.CrowdCall {
			t.Fatalf("sampled the crowd's %+v", g)
		}
	}
	queries := bench.Queries(back, idx, 300, 1)
	path := filepath.Join(t.TempDir(), "queries.json")
	if err := (bench.QueryFile{Resources: 10, Grants: 20, Queries: queries}).Save(path); err != nil {
		t.Fatal(err)
	}
	f, err := bench.LoadQueryFile(path)
	if err != nil || f.Resources != 10 || f.Grants != 20 || !reflect.DeepEqual(f.Queries, queries) {
		t.Fatalf("read back %d queries (%v), want what was saved", len(f.Queries), err)
	}
	c, err := bench.TimeChecks(idx, []authz.Query{queries[0].Query, queries[2].Query}, 10*time.Millisecond, 3)
	if err != nil || c.Queries != 2 || len(c.Timings) != 3 || c.NsPerCheck <= 0 || c.AllocsPerOp > 0.01 {
		t.Errorf("TimeChecks = %+v, %v; want three timings without allocations", c, err)
	}
}

// inBatches hands the grants a snapshot loads to a Sampler's GrantBatch,
// seven at a time, as a backend does; flush sends the last ones.
type inBatches struct {
	*bench.Sampler
	buf []authz.Grant
}

func (b *inBatches) Grant(g authz.Grant) error {
	if b.buf = append(b.buf, g); len(b.buf) == 7 {
		return b.flush()
	}
	return nil
}

func (b *inBatches) flush() error {
	err := b.Sampler.GrantBatch(b.buf)
	b.buf = b.buf[:0]
	return err
}

// onlyGrants hides a Builder's GrantBatch: a sink that takes grants one at
// a time.
type onlyGrants struct{ authz.Sink }

// A Sampler given the grants in batches samples and passes on what it does
// given them one at a time, to a sink that takes batches and to one that
// does not.
func TestSamplerSamplesBatchesAsOneByOne(t *testing.T) {
	s := small()
	s.Crowd = 100
	p := generate(t, s)
	load := func(batched, sinkTakesBatches bool) (*bench.Sampler, int) {
		t.Helper()
		b := authz.NewBuilder(authz.SystemClock{})
		var into authz.Sink = b
		if !sinkTakesBatches {
			into = onlyGrants{b}
		}
		sampler := &bench.Sampler{Sink: into, Keep: 500, Seed: 1}
		if batched {
			in := &inBatches{Sampler: sampler}
			if err := p.Snapshot.Load(in); err != nil {
				t.Fatal(err)
			}
			if err := in.flush(); err != nil {
				t.Fatal(err)
			}
		} else if err := p.Snapshot.Load(sampler); err != nil {
			t.Fatal(err)
		}
		idx, err := b.Build(1)
		if err != nil {
			t.Fatal(err)
		}
		_, grants, _ := idx.Counts()
		return sampler, grants
	}
	one, oneGrants := load(false, true)
	for _, tc := range []struct {
		name             string
		sinkTakesBatches bool
	}{{"to a sink of batches", true}, {"to a sink of grants one at a time", false}} {
		t.Run(tc.name, func(t *testing.T) {
			batched, grants := load(true, tc.sinkTakesBatches)
			if !reflect.DeepEqual(batched.Platform().Snapshot.Grants, one.Platform().Snapshot.Grants) || batched.Grants() != one.Grants() {
				t.Errorf("batched: kept %d of %d grants, differing from one by one's %d of %d",
					len(batched.Platform().Snapshot.Grants), batched.Grants(), len(one.Platform().Snapshot.Grants), one.Grants())
			}
			if grants != oneGrants || grants != s.Grants+s.Crowd {
				t.Errorf("the index built from batches holds %d grants, from one by one %d; want %d", grants, oneGrants, s.Grants+s.Crowd)
			}
		})
	}
}
