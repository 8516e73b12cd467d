package etcd_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
)

// These tests run Usher replicas the way `usher serve --etcd` runs them, each
// an engine with an etcd client of its own, over one real etcd cluster, and
// hold them to DESIGN.md's "Storage, revisions and the cluster": limits and
// delegation hold across replicas, min_revision reads one's writes on any
// replica, acknowledged writes survive a killed member or leader, a restarted
// replica converges, and a replica cut off from the quorum refuses writes but
// keeps answering checks.

// admin writes on the caller's own authority, as an admin caller does.
var admin = authz.Author{Caller: "test"}

// converge bounds how long a replica may take to apply what another
// committed, on a slow, shared machine.
const converge = 30 * time.Second

// replica is one Usher replica over the cluster.
type replica struct {
	t      *testing.T
	name   string
	cli    *clientv3.Client
	prefix string
	opts   authz.Options
	store  *etcd.Store
	engine *authz.Engine

	// conflicts counts the writes the cluster sent back to be planned
	// again; delay holds each commit back, widening the window between a
	// write's plan and its commit in which another replica may commit.
	conflicts atomic.Int64
	delay     atomic.Int64 // a time.Duration
	// lag holds each change set back before the index applies it, as on a
	// replica catching up.
	lag atomic.Int64 // a time.Duration

	// Set by serve.
	authz  usherv1.AuthorizationServiceClient
	admin  usherv1.AdminServiceClient
	health healthpb.HealthClient
}

// startReplica starts a replica under prefix with an etcd client of cfg.
func startReplica(t *testing.T, name, prefix string, cfg clientv3.Config, opts authz.Options) *replica {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("%s: etcd client of %v: %v", name, cfg.Endpoints, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	r := &replica{t: t, name: name, cli: cli, prefix: prefix, opts: opts}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start starts the replica's store and engine on its client.
func (r *replica) start() {
	r.t.Helper()
	r.store = etcd.New(r.cli, etcd.Options{Prefix: r.prefix, MaxTxnOps: etcdtest.MaxTxnOps})
	ctx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	e, err := authz.Start(ctx, observed{r.store, r}, r.opts)
	if err != nil {
		r.t.Fatalf("%s: authz.Start: %v", r.name, err)
	}
	r.engine = e
}

// observed is a replica's store as its engine sees it.
type observed struct {
	*etcd.Store
	r *replica
}

func (o observed) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	time.Sleep(time.Duration(o.r.delay.Load()))
	res, err := o.Store.Commit(ctx, ws)
	for _, c := range res {
		if c.Conflict != "" {
			o.r.conflicts.Add(1)
		}
	}
	return res, err
}

func (o observed) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for cs, err := range o.Store.Watch(ctx, after) {
			time.Sleep(time.Duration(o.r.lag.Load()))
			if !yield(cs, err) {
				return
			}
		}
	}
}

// stop closes the replica's engine and store; its client stays open.
func (r *replica) stop() {
	if r.engine == nil {
		return
	}
	r.engine.Close()
	_ = r.store.Close()
	r.engine = nil
}

// serve puts the replica behind a gRPC server on loopback, as usher serve
// does, and connects generated clients to it.
func (r *replica) serve() {
	r.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	srv := server.New(r.engine, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(lis) }()
	r.t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = conn.Close() })
	r.authz, r.admin = usherv1.NewAuthorizationServiceClient(conn), usherv1.NewAdminServiceClient(conn)
	r.health = healthpb.NewHealthClient(conn)
}

// awaitHealth waits until the replica's server reports want for service,
// and fails the test if it does not within converge.
func (r *replica) awaitHealth(service string, want healthpb.HealthCheckResponse_ServingStatus) {
	r.t.Helper()
	deadline := time.Now().Add(converge)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		cancel()
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: health of %q: %v, %v; want %s within %v", r.name, service, resp.GetStatus(), err, want, converge)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *replica) revision() authz.Revision { return r.engine.Index().Revision() }

// await waits until the replica's index has applied rev.
func (r *replica) await(rev authz.Revision) {
	r.t.Helper()
	deadline := time.Now().Add(converge)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := r.engine.Await(ctx, rev)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: revision %d not applied within %v; the index is at %d", r.name, rev, converge, r.revision())
		}
	}
}

// latest is the revision the cluster holds, read through the replica's
// client, retried while the cluster elects a leader.
func (r *replica) latest() authz.Revision {
	r.t.Helper()
	deadline := time.Now().Add(converge)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rev, err := r.store.Revision(ctx)
		cancel()
		if err == nil {
			return rev
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: reading the latest revision: %v", r.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// must returns a sink for a write's results that fails the test on error
// and returns the write's revision: r.must("what")(r.engine.Grant(...)).
func (r *replica) must(what string) func(authz.Revision, error) authz.Revision {
	return func(rev authz.Revision, err error) authz.Revision {
		r.t.Helper()
		if err != nil {
			r.t.Fatalf("%s: %s: %v", r.name, what, err)
		}
		return rev
	}
}

// applyDefaultPolicy applies the shipped default policy through r, as usher
// serve does on an empty store.
func applyDefaultPolicy(t *testing.T, r *replica) authz.Revision {
	t.Helper()
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	rev, _, err := r.engine.ApplyPolicy(context.Background(), admin, server.FromPolicy(msg), authz.ApplyOptions{})
	return r.must("applying the default policy")(rev, err)
}

// replicaState is everything a replica's index answers that these tests
// write, read at one revision: two replicas that hold the same state answer
// every query alike.
type replicaState struct {
	Revision    authz.Revision
	Policy      authz.Policy                // every page's, resources and what is defined on them by name
	Grants      map[string][]authz.Grant    // by resource
	Quotas      map[string][]authz.QuotaUse // by resource
	Permissions map[[2]string][]string      // by subject and resource, reserved ones too
	Registered  map[[2]string]bool          // ListPermissions' answer whether the resource exists

	subjects  map[string]bool // subjects named by grants or by the caller
	resources []string        // every resource, root first
}

// state reads r's index whole. Nothing may write meanwhile.
func (r *replica) state(subjects ...string) replicaState {
	r.t.Helper()
	x := r.engine.Index()
	s := replicaState{
		Revision:    x.Revision(),
		Grants:      map[string][]authz.Grant{},
		Quotas:      map[string][]authz.QuotaUse{},
		Permissions: map[[2]string][]string{},
		Registered:  map[[2]string]bool{},
		subjects:    map[string]bool{},
		resources:   []string{authz.RootName},
	}
	for _, sub := range subjects {
		s.subjects[sub] = true
	}
	for token := ""; ; {
		p, next, _, err := x.ExportPolicy(authz.MaxPageSize, token)
		if err != nil {
			r.t.Fatalf("%s: ExportPolicy: %v", r.name, err)
		}
		if token == "" {
			s.Policy.Permissions, s.Policy.CreatorRoles, s.Policy.DefaultQuotas = p.Permissions, p.CreatorRoles, p.DefaultQuotas
		}
		s.Policy.Resources = append(s.Policy.Resources, p.Resources...)
		s.Policy.Roles = append(s.Policy.Roles, p.Roles...)
		s.Policy.Quotas = append(s.Policy.Quotas, p.Quotas...)
		for _, res := range p.Resources {
			s.resources = append(s.resources, res.Name)
		}
		if token = next; token == "" {
			break
		}
	}
	// An index lists siblings in the order it learned of them, which a
	// replica that loaded a snapshot did not share with one that followed
	// the writes.
	slices.SortFunc(s.Policy.Resources, func(a, b authz.Resource) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Policy.Roles, func(a, b authz.Role) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.Name, b.Name))
	})
	slices.SortFunc(s.Policy.Quotas, func(a, b authz.Quota) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType), strings.Compare(a.Subject, b.Subject))
	})
	for _, res := range s.resources {
		for token := ""; ; {
			gs, next, _, err := x.ListGrants(authz.GrantFilter{Resource: res}, authz.MaxPageSize, token)
			if err != nil {
				r.t.Fatalf("%s: ListGrants(%s): %v", r.name, res, err)
			}
			s.Grants[res] = append(s.Grants[res], gs...)
			for _, g := range gs {
				s.subjects[g.Subject] = true
			}
			if token = next; token == "" {
				break
			}
		}
		qs, _, err := x.ListQuotas(res)
		if err != nil {
			r.t.Fatalf("%s: ListQuotas(%s): %v", r.name, res, err)
		}
		s.Quotas[res] = qs
	}
	for sub := range s.subjects {
		for _, res := range s.resources {
			perms, ok, _ := x.ListPermissions(sub, res, true)
			s.Permissions[[2]string{sub, res}] = perms
			s.Registered[[2]string{sub, res}] = ok
		}
	}
	if x.Revision() != s.Revision || r.engine.Index() != x {
		r.t.Fatalf("%s: the index moved from revision %d while it was read", r.name, s.Revision)
	}
	return s
}

// sameState fails the test unless every replica answers alike.
func sameState(t *testing.T, subjects []string, rs ...*replica) {
	t.Helper()
	want := rs[0].state(subjects...)
	for _, r := range rs[1:] {
		got := r.state(subjects...)
		if got.Revision != want.Revision {
			t.Fatalf("%s is at revision %d, %s at %d", r.name, got.Revision, rs[0].name, want.Revision)
		}
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"the exported policy", got.Policy, want.Policy},
			{"the grants", got.Grants, want.Grants},
			{"the quotas and their use", got.Quotas, want.Quotas},
			{"the effective permissions", got.Permissions, want.Permissions},
			{"the registered resources", got.Registered, want.Registered},
		} {
			if !reflect.DeepEqual(f.got, f.want) {
				t.Errorf("at revision %d, %s and %s differ in %s:\n%s: %v\n%s: %v", want.Revision, r.name, rs[0].name, f.name, r.name, f.got, rs[0].name, f.want)
			}
		}
	}
}

// prefixOf gives each test its own keyspace in a shared cluster.
func prefixOf(t *testing.T) string { return "/" + t.Name() + "/" }

// TestReplicas holds two replicas over one three-member cluster to what a
// single process guarantees: limits, delegation, read-your-writes and a
// restart.
func TestReplicas(t *testing.T) {
	c := etcdtest.Start(t, 3)
	t.Run("limits hold across replicas", func(t *testing.T) { testLimits(t, c) })
	t.Run("delegation holds across replicas", func(t *testing.T) { testDelegation(t, c) })
	t.Run("read your writes on another replica", func(t *testing.T) { testReadYourWrites(t, c) })
	t.Run("a restarted replica converges", func(t *testing.T) { testRestart(t, c) })
	t.Run("a write through a replica behind another's commit is judged after it", func(t *testing.T) { testWriteBehind(t, c) })
	t.Run("a write that changes nothing behind another's commit is planned after it", func(t *testing.T) { testNoOpBehind(t, c) })
}

// outcomes counts how the writes of a storm ended.
type outcomes struct {
	mu      sync.Mutex
	ok      int
	refused int // by the limit under test
	aborted int // conflicted more often than the engine retries
	other   []error
	revs    map[authz.Revision]string // acknowledged revision -> what
}

func (o *outcomes) add(what string, rev authz.Revision, err error, refusal authz.Code) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch authz.CodeOf(err) {
	case 0:
		if err != nil {
			o.other = append(o.other, fmt.Errorf("%s: %w", what, err))
			return
		}
		o.ok++
		if prev, dup := o.revs[rev]; dup {
			o.other = append(o.other, fmt.Errorf("%s and %s were both acknowledged at revision %d", prev, what, rev))
		}
		o.revs[rev] = what
	case refusal:
		o.refused++
	case authz.Aborted:
		o.aborted++
	default:
		o.other = append(o.other, fmt.Errorf("%s: %w", what, err))
	}
}

// testLimits sends hundreds of concurrent writes, half to each replica, at a
// quota of N and a role of at most M holders: exactly N and M succeed, and
// every other write is refused by the limit or, had it kept conflicting,
// aborted.
func testLimits(t *testing.T, c *etcdtest.Cluster) {
	const (
		quota      = 20
		maxHolders = 5
		writers    = 150 // of each kind
	)
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	applyDefaultPolicy(t, a)
	for _, res := range []authz.Resource{{Name: "account:acme"}, {Name: "workspace:quota", Parent: "account:acme"}, {Name: "workspace:stage", Parent: "account:acme"}, {Name: "event:stage", Parent: "workspace:stage"}} {
		a.must("PutResource " + res.Name)(a.engine.PutResource(ctx, admin, res))
	}
	a.must("PutQuota")(a.engine.PutQuota(ctx, admin, authz.Quota{Scope: "workspace:quota", ResourceType: "event", Limit: quota}))
	rev := a.must("PutRole speaker")(a.engine.PutRole(ctx, admin, authz.Role{Name: "speaker", Scope: authz.RootName, Permissions: []string{"send-audio"}, MaxHolders: maxHolders}))
	b.await(rev)
	for _, r := range []*replica{a, b} {
		r.delay.Store(int64(10 * time.Millisecond))
	}

	events := &outcomes{revs: map[authz.Revision]string{}}
	speakers := &outcomes{revs: map[authz.Revision]string{}}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		r := []*replica{a, b}[i%2]
		wg.Go(func() {
			<-start
			name := fmt.Sprintf("event:e%d", i)
			rev, err := r.engine.PutResource(ctx, admin, authz.Resource{Name: name, Parent: "workspace:quota"})
			events.add(r.name+" registering "+name, rev, err, authz.ResourceExhausted)
		})
		wg.Go(func() {
			<-start
			subject := fmt.Sprintf("user:s%d", i)
			rev, err := r.engine.Grant(ctx, admin, authz.Grant{Subject: subject, Role: "speaker", Resource: "event:stage"})
			speakers.add(r.name+" granting speaker to "+subject, rev, err, authz.FailedPrecondition)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	conflicts := a.conflicts.Load() + b.conflicts.Load()
	t.Logf("%d registrations under a quota of %d: %d made, %d refused, %d aborted; %d grants of a role of at most %d holders: %d made, %d refused, %d aborted; %d commits conflicted; in %v",
		writers, quota, events.ok, events.refused, events.aborted, writers, maxHolders, speakers.ok, speakers.refused, speakers.aborted, conflicts, time.Since(began).Round(time.Millisecond))
	// Each replica keeps its own writes from conflicting with one another;
	// only the cluster stops one replica's from overtaking the other's.
	if conflicts == 0 {
		t.Errorf("no commit conflicted: the replicas never raced for the same limit")
	}
	for _, o := range []*outcomes{events, speakers} {
		for _, err := range o.other {
			t.Errorf("unexpected outcome: %v", err)
		}
	}
	check := func(what string, o *outcomes, limit int) {
		if o.ok+o.refused+o.aborted != writers {
			t.Errorf("%s: %d made, %d refused and %d aborted of %d writes", what, o.ok, o.refused, o.aborted, writers)
		}
		// A refusal means the limit was full when the write was planned,
		// and nothing here frees a place: then exactly limit were made.
		if o.ok > limit || (o.refused > 0 && o.ok != limit) {
			t.Errorf("%s: %d made with a limit of %d (%d refused)", what, o.ok, limit, o.refused)
		}
		if o.refused == 0 {
			t.Errorf("%s: no write was refused: %d writes never reached the limit of %d", what, writers, limit)
		}
	}
	check("registrations", events, quota)
	check("grants of speaker", speakers, maxHolders)

	// Both replicas, and the cluster itself, show exactly what was
	// acknowledged.
	latest := a.latest()
	a.await(latest)
	b.await(latest)
	for _, r := range []*replica{a, b} {
		qs, _, err := r.engine.Index().ListQuotas("workspace:quota")
		if err != nil || len(qs) != 1 || qs[0].Used != events.ok {
			t.Errorf("%s: the quota on workspace:quota: %+v, %v; want %d used", r.name, qs, err, events.ok)
		}
		gs, _, _, err := r.engine.Index().ListGrants(authz.GrantFilter{Resource: "event:stage"}, 100, "")
		if err != nil || len(gs) != speakers.ok {
			t.Errorf("%s: %d grants on event:stage (%v); want %d", r.name, len(gs), err, speakers.ok)
		}
	}
	snap, err := storage.Snapshot(ctx, a.store)
	if err != nil {
		t.Fatal(err)
	}
	var registered, granted int
	for _, res := range snap.Resources {
		if res.Parent == "workspace:quota" {
			registered++
		}
	}
	for _, g := range snap.Grants {
		if g.Role == "speaker" {
			granted++
		}
	}
	if registered != events.ok || granted != speakers.ok {
		t.Errorf("etcd holds %d events under workspace:quota and %d speakers; %d and %d were acknowledged", registered, granted, events.ok, speakers.ok)
	}
	sameState(t, nil, a, b)

	// Churn: places are freed and taken again on both replicas at once,
	// by deletes, moves out of and into the quota's scope, and revokes.
	// Replaying the log shows the limits held at every revision, not only
	// at the end.
	from := latest
	inScope := map[string]bool{}
	for _, res := range snap.Resources {
		if res.Parent == "workspace:quota" {
			inScope[res.Name] = true
		}
	}
	holders := map[string]bool{}
	for _, g := range snap.Grants {
		if g.Role == "speaker" {
			holders[g.Subject] = true
		}
	}
	stop := make(chan struct{})
	var churned, other atomic.Int64
	for w := range 8 {
		r := []*replica{a, b}[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0))
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Names from small pools, so that the writers collide.
				event := fmt.Sprintf("event:e%d", rng.IntN(writers))
				subject := fmt.Sprintf("user:s%d", rng.IntN(writers/5))
				var err error
				switch n := rng.IntN(5); n {
				case 0:
					_, err = r.engine.DeleteResource(ctx, admin, event)
				case 1, 2:
					parent := []string{"workspace:quota", "workspace:stage"}[n-1]
					_, err = r.engine.PutResource(ctx, admin, authz.Resource{Name: event, Parent: parent})
				case 3:
					_, err = r.engine.Revoke(ctx, admin, authz.Grant{Subject: subject, Role: "speaker", Resource: "event:stage"})
				default:
					_, err = r.engine.Grant(ctx, admin, authz.Grant{Subject: subject, Role: "speaker", Resource: "event:stage"})
				}
				switch authz.CodeOf(err) {
				case 0:
					if err != nil {
						t.Errorf("%s: %v", r.name, err)
						return
					}
					churned.Add(1)
				case authz.ResourceExhausted, authz.FailedPrecondition, authz.NotFound, authz.Aborted:
					other.Add(1)
				default:
					t.Errorf("%s: %v", r.name, err)
					return
				}
			}
		})
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	latest = a.latest()
	var peak, peakHolders int
	for after := from; after < latest; {
		css, err := a.store.Changes(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, cs := range css {
			for _, ch := range cs.Changes {
				switch {
				case ch.Op == authz.OpPutResource:
					inScope[ch.Resource.Name] = ch.Resource.Parent == "workspace:quota"
				case ch.Op == authz.OpDeleteResource:
					delete(inScope, ch.Resource.Name)
				case ch.Op == authz.OpPutGrant && ch.Grant.Role == "speaker":
					holders[ch.Grant.Subject] = true
				case ch.Op == authz.OpDeleteGrant && ch.Grant.Role == "speaker":
					delete(holders, ch.Grant.Subject)
				}
			}
			n := 0
			for _, in := range inScope {
				if in {
					n++
				}
			}
			peak, peakHolders = max(peak, n), max(peakHolders, len(holders))
			if n > quota || len(holders) > maxHolders {
				t.Fatalf("at revision %d, %d events are under workspace:quota (at most %d) and %d subjects hold speaker (at most %d)", cs.Revision, n, quota, len(holders), maxHolders)
			}
		}
		after = css[len(css)-1].Revision
	}
	t.Logf("churn: %d writes made and %d refused over revisions %d to %d; at most %d events in scope and %d speakers", churned.Load(), other.Load(), from, latest, peak, peakHolders)
	if churned.Load() == 0 {
		t.Error("the churn made no write")
	}
	a.await(latest)
	b.await(latest)
	sameState(t, nil, a, b)
}

// testDelegation: an actor's power granted on one replica is used on the
// other; an escalation is refused on both; a block on one replica takes the
// power away on the other, also from writes planned before the block arrived.
func testDelegation(t *testing.T, c *etcdtest.Cluster) {
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	applyDefaultPolicy(t, a)
	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "account:acme"}))
	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "call:c1", Parent: "account:acme"}))
	rev := a.must("granting host")(a.engine.Grant(ctx, admin, authz.Grant{Subject: "user:host", Role: "host", Resource: "call:c1"}))

	host := authz.Author{Caller: "test", Actor: "user:host"}
	b.await(rev)
	rev = b.must("the host granting moderator on B")(b.engine.Grant(ctx, host, authz.Grant{Subject: "user:mod", Role: "moderator", Resource: "call:c1"}))
	a.await(rev)
	mod := authz.Author{Caller: "test", Actor: "user:mod"}
	a.must("the moderator granting call-member on A")(a.engine.Grant(ctx, mod, authz.Grant{Subject: "user:member", Role: "call-member", Resource: "call:c1"}))

	refused := func(r *replica, what string, err error) {
		t.Helper()
		if authz.CodeOf(err) != authz.PermissionDenied {
			t.Errorf("%s: %s: got %v, want PERMISSION_DENIED", r.name, what, err)
		}
	}
	for _, r := range []*replica{a, b} {
		_, err := r.engine.Grant(ctx, host, authz.Grant{Subject: "user:x", Role: "admin", Resource: "call:c1"})
		refused(r, "the host granting admin, which it may not assign", err)
		_, err = r.engine.Grant(ctx, mod, authz.Grant{Subject: "user:x", Role: "moderator", Resource: "call:c1"})
		refused(r, "the moderator granting moderator, which it may not assign", err)
		_, _, err = r.engine.Block(ctx, mod, authz.Block{Subject: "user:host", Resource: "call:c1"})
		refused(r, "the moderator blocking the host of everything, more than it holds", err)
		_, err = r.engine.Revoke(ctx, host, authz.Grant{Subject: "user:host", Role: "host", Resource: "call:c1"})
		refused(r, "the host revoking its own grant", err)
	}

	// The host keeps granting on B while A blocks it: whatever B committed
	// came before the block, and nothing after it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := map[string]authz.Revision{}
	var refusedAfter atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("user:m%d-%d", w, i)
				rev, err := b.engine.Grant(ctx, host, authz.Grant{Subject: subject, Role: "call-member", Resource: "call:c1"})
				switch {
				case err == nil:
					mu.Lock()
					made[subject] = rev
					mu.Unlock()
				case authz.CodeOf(err) == authz.PermissionDenied:
					refusedAfter.Add(1)
					time.Sleep(5 * time.Millisecond)
				default:
					t.Errorf("%s: the host granting call-member to %s: %v", b.name, subject, err)
					return
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	blocked, _, err := a.engine.Block(ctx, admin, authz.Block{Subject: "user:host", Resource: "call:c1", Permissions: []string{"update-call-permissions"}, Reason: "test"})
	a.must("blocking the host's grants on A")(blocked, err)
	b.await(blocked)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("the host made %d grants on B before the block on A at revision %d, and was refused %d times; %d of B's commits conflicted",
		len(made), blocked, refusedAfter.Load(), b.conflicts.Load())
	if len(made) == 0 || refusedAfter.Load() == 0 {
		t.Errorf("the host made %d grants and was refused %d times: the race was not run", len(made), refusedAfter.Load())
	}
	for subject, rev := range made {
		if rev > blocked {
			t.Errorf("the host's grant to %s committed at revision %d, after its block at %d", subject, rev, blocked)
		}
	}
	// The log agrees: no change set on the host's behalf follows the block.
	for after := authz.Revision(0); ; {
		css, err := a.store.Changes(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(css) == 0 {
			break
		}
		for _, cs := range css {
			if cs.Actor == host.Actor && cs.Revision > blocked {
				t.Errorf("change set %d was written on behalf of %s after its block at %d", cs.Revision, host.Actor, blocked)
			}
		}
		after = css[len(css)-1].Revision
	}
	for _, r := range []*replica{a, b} {
		_, err := r.engine.Grant(ctx, host, authz.Grant{Subject: "user:late", Role: "call-member", Resource: "call:c1"})
		refused(r, "the blocked host granting call-member", err)
	}
	latest := a.latest()
	a.await(latest)
	b.await(latest)
	sameState(t, []string{"user:x", "user:late"}, a, b)
}

// testReadYourWrites writes on one replica and checks on the other with the
// write's revision as min_revision, both ways, over gRPC.
func testReadYourWrites(t *testing.T, c *etcdtest.Cluster) {
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	applyDefaultPolicy(t, a)
	a.serve()
	b.serve()
	ctx := context.Background()
	for i := range 40 {
		w, r := a, b
		if i%2 == 1 {
			w, r = b, a
		}
		subject := fmt.Sprintf("user:u%d", i)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var rev uint64
		var want usherv1.Reason
		if i%4 < 2 {
			resp, err := w.admin.Grant(wctx, &usherv1.GrantRequest{Subject: subject, Role: "user", Resource: "root"})
			if err != nil {
				t.Fatalf("%s: Grant: %v", w.name, err)
			}
			rev, want = resp.GetRevision(), usherv1.Reason_REASON_GRANTED
		} else {
			// A block must be seen too: a stale replica would let the
			// blocked subject in.
			if _, err := w.admin.Grant(wctx, &usherv1.GrantRequest{Subject: subject, Role: "user", Resource: "root"}); err != nil {
				t.Fatalf("%s: Grant: %v", w.name, err)
			}
			resp, err := w.admin.Block(wctx, &usherv1.BlockRequest{Subject: subject, Resource: "root", Permissions: []string{"join-call"}})
			if err != nil {
				t.Fatalf("%s: Block: %v", w.name, err)
			}
			rev, want = resp.GetRevision(), usherv1.Reason_REASON_BLOCKED
		}
		cancel()
		// A deadline a sidecar might give a check.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := r.authz.Check(rctx, &usherv1.CheckRequest{Subject: subject, Permission: "join-call", Resource: "root", MinRevision: rev})
		cancel()
		if err != nil {
			t.Fatalf("%s: Check at min_revision %d, written on %s: %v", r.name, rev, w.name, err)
		}
		if resp.GetRevision() < rev || resp.GetDecision().GetReason() != want {
			t.Fatalf("%s: Check of %s at min_revision %d, written on %s: %v at revision %d; want %v", r.name, subject, rev, w.name,
				resp.GetDecision().GetReason(), resp.GetRevision(), want)
		}
	}
	// A revision no one wrote is refused before the caller's deadline, not
	// waited for past it.
	rev := b.revision() + 1000
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := b.authz.Check(rctx, &usherv1.CheckRequest{Subject: "user:u0", Permission: "join-call", Resource: "root", MinRevision: uint64(rev)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("%s: Check at min_revision %d, which no one wrote: %v; want FAILED_PRECONDITION", b.name, rev, err)
	}
}

// testWriteBehind writes through a replica whose index has yet to apply
// what another replica committed a moment before: a resource registered,
// a role granted to the actor. Any replica accepts writes, so neither is
// refused as absent.
func testWriteBehind(t *testing.T, c *etcdtest.Cluster) {
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	b.await(applyDefaultPolicy(t, a))
	b.lag.Store(int64(time.Second))

	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "call:c1"}))
	rev, err := b.engine.Grant(ctx, admin, authz.Grant{Subject: "user:host", Role: "host", Resource: "call:c1"})
	if err != nil {
		t.Fatalf("%s: granting host on a call registered through %s a moment before: %v", b.name, a.name, err)
	}
	a.await(rev)
	a.must("granting moderator")(a.engine.Grant(ctx, admin, authz.Grant{Subject: "user:mod", Role: "moderator", Resource: "call:c1"}))
	mod := authz.Author{Caller: "test", Actor: "user:mod"}
	if _, err := b.engine.Grant(ctx, mod, authz.Grant{Subject: "user:member", Role: "call-member", Resource: "call:c1"}); err != nil {
		t.Errorf("%s: a moderator granted through %s a moment before granting call-member: %v", b.name, a.name, err)
	}
	// What the latest revision refuses is refused still.
	if _, err := b.engine.Grant(ctx, mod, authz.Grant{Subject: "user:x", Role: "admin", Resource: "call:c1"}); authz.CodeOf(err) != authz.PermissionDenied {
		t.Errorf("%s: the moderator granting admin: %v, want PERMISSION_DENIED", b.name, err)
	}
}

// testNoOpBehind grants, through a replica whose index has yet to apply a
// revoke committed through another a moment before, the grant revoked: the
// replica's index still holds it, but the grant must be in force at the
// revision the write answers, and that revision must not be older than
// the revoke's.
func testNoOpBehind(t *testing.T, c *etcdtest.Cluster) {
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	b.await(applyDefaultPolicy(t, a))
	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "call:c1"}))
	g := authz.Grant{Subject: "user:x", Role: "call-member", Resource: "call:c1"}
	b.await(a.must("Grant")(a.engine.Grant(ctx, admin, g)))
	b.lag.Store(int64(time.Second))

	revoked := a.retry("Revoke", func() (authz.Revision, error) { return a.engine.Revoke(ctx, admin, g) })
	rev, err := b.engine.Grant(ctx, admin, g)
	if err != nil {
		t.Fatalf("%s: granting again what %s revoked a moment before: %v", b.name, a.name, err)
	}
	if rev <= revoked {
		t.Errorf("%s: granting again what %s revoked at revision %d answered revision %d, before the revoke", b.name, a.name, revoked, rev)
	}
	b.lag.Store(0)
	a.await(rev)
	b.await(rev)
	for _, r := range []*replica{a, b} {
		if d, _, err := r.engine.Check(authz.Query{Subject: "user:x", Permission: "join-call", Resource: "call:c1"}); err != nil || !d.Allowed {
			t.Errorf("%s: user:x join-call on call:c1 after the grant at revision %d: %+v, %v; want allowed", r.name, rev, d, err)
		}
	}
}

// testRestart closes a replica while another writes, starts it again on the
// same prefix, and holds it to the other: it never goes back in revision
// and ends up answering alike.
func testRestart(t *testing.T, c *etcdtest.Cluster) {
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	applyDefaultPolicy(t, a)
	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "account:acme"}))

	stop := make(chan struct{})
	written := make(chan authz.Revision, 1)
	go func() {
		var last authz.Revision
		defer func() { written <- last }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var rev authz.Revision
			var err error
			switch i % 3 {
			case 0:
				rev, err = a.engine.PutResource(ctx, admin, authz.Resource{Name: fmt.Sprintf("event:e%d", i), Parent: "account:acme"})
			case 1:
				rev, err = a.engine.Grant(ctx, admin, authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "owner", Resource: fmt.Sprintf("event:e%d", i-1)})
			default:
				rev, _, err = a.engine.Block(ctx, admin, authz.Block{Subject: fmt.Sprintf("user:u%d", i-1), Resource: fmt.Sprintf("event:e%d", i-2), Permissions: []string{"send-video"}})
			}
			if err != nil {
				t.Errorf("%s: write %d: %v", a.name, i, err)
				return
			}
			last = rev
		}
	}()
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		before := b.revision()
		b.stop()
		time.Sleep(200 * time.Millisecond)
		b.start()
		if after := b.revision(); after < before {
			t.Errorf("%s was at revision %d before its restart and at %d after", b.name, before, after)
		}
	}
	// The restarted replica writes, and the other sees it.
	rev := b.must("a write on the restarted replica")(b.engine.Grant(ctx, admin, authz.Grant{Subject: "user:after", Role: "user", Resource: "account:acme"}))
	a.await(rev)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	last := <-written
	if last == 0 {
		t.Fatal("the writer wrote nothing")
	}
	latest := a.latest()
	a.await(latest)
	b.await(latest)
	sameState(t, nil, a, b)
	t.Logf("replicas identical at revision %d after three restarts", latest)
}

// ledger is every write of a load and what its writer knows of it.
type ledger struct {
	mu      sync.Mutex
	acked   map[string]authz.Revision // subject granted "user" on root -> revision
	unknown map[string]error          // subject -> the error its grant got
	revs    map[authz.Revision]string
	times   []time.Time // when each acknowledgement arrived
}

// load runs writers on the replicas, each granting to subjects of its own,
// until stop is closed. A write may fail while the cluster elects a leader
// or a member is gone (UNAVAILABLE, or a deadline): its grant is unknown.
func (l *ledger) load(t *testing.T, stop <-chan struct{}, rs ...*replica) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range 3 * len(rs) {
		r := rs[w%len(rs)]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("user:%s-w%d-%d", r.name[len(r.name)-1:], w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				rev, err := r.engine.Grant(ctx, admin, authz.Grant{Subject: subject, Role: "user", Resource: authz.RootName})
				cancel()
				l.mu.Lock()
				switch {
				case err == nil:
					if prev, dup := l.revs[rev]; dup {
						t.Errorf("grants to %s and %s were both acknowledged at revision %d", prev, subject, rev)
					}
					l.acked[subject], l.revs[rev] = rev, subject
					l.times = append(l.times, time.Now())
				case authz.CodeOf(err) == authz.Unavailable || authz.CodeOf(err) == authz.Aborted || errors.Is(err, context.DeadlineExceeded):
					l.unknown[subject] = err
				default:
					t.Errorf("%s: granting to %s: %v", r.name, subject, err)
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return &wg
}

// ackedSince counts the acknowledgements that arrived after t.
func (l *ledger) ackedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.times {
		if at.After(t) {
			n++
		}
	}
	return n
}

// waitAcks waits until n writes were acknowledged after since: writes go
// on.
func (l *ledger) waitAcks(t *testing.T, what string, since time.Time, n int) {
	t.Helper()
	deadline := time.Now().Add(converge)
	for l.ackedSince(since) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: only %d writes acknowledged in the %v after it", what, l.ackedSince(since), converge)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: %d writes acknowledged %v after it", what, n, time.Since(since).Round(time.Millisecond))
}

// TestReplicasSurviveKilledMembers kills a follower and then the leader of
// the cluster with SIGKILL while two replicas write: no acknowledged write
// is lost, from the log or from either replica, and writes go on.
func TestReplicasSurviveKilledMembers(t *testing.T) {
	c := etcdtest.Start(t, 3)
	prefix := prefixOf(t)
	// A commit that an election holds up fails after a few seconds rather
	// than the default ten, so that the writers move on.
	opts := authz.Options{CommitTimeout: 3 * time.Second}
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), opts)
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), opts)
	b.await(applyDefaultPolicy(t, a))

	l := &ledger{acked: map[string]authz.Revision{}, unknown: map[string]error{}, revs: map[authz.Revision]string{}}
	stop := make(chan struct{})
	wg := l.load(t, stop, a, b)
	l.waitAcks(t, "the start", time.Now(), 30)

	leaderCtx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	leader, err := c.Leader(leaderCtx)
	if err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	killed := time.Now()
	c.Kill(follower)
	l.waitAcks(t, fmt.Sprintf("killing follower m%d", follower), killed, 30)
	c.Restart(follower)
	if err := c.WaitHealthy(leaderCtx); err != nil {
		t.Fatal(err)
	}
	l.waitAcks(t, fmt.Sprintf("restarting m%d", follower), time.Now(), 10)

	if leader, err = c.Leader(leaderCtx); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	c.Kill(leader)
	l.waitAcks(t, fmt.Sprintf("killing leader m%d", leader), killed, 30)
	c.Restart(leader)
	if err := c.WaitHealthy(leaderCtx); err != nil {
		t.Fatal(err)
	}
	l.waitAcks(t, fmt.Sprintf("restarting m%d", leader), time.Now(), 10)
	close(stop)
	wg.Wait()

	latest := a.latest()
	a.await(latest)
	b.await(latest)
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d grants acknowledged, %d of unknown outcome; latest revision %d", len(l.acked), len(l.unknown), latest)
	// Every acknowledged write is in the log at its revision, and in both
	// indexes.
	logged := map[authz.Revision]authz.ChangeSet{}
	for after := authz.Revision(0); after < latest; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		css, err := a.store.Changes(ctx, after, 1000)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(css) == 0 {
			t.Fatalf("the log ends at revision %d, before the latest, %d", after, latest)
		}
		for _, cs := range css {
			if cs.Revision != after+1 {
				t.Fatalf("the log skips from revision %d to %d", after, cs.Revision)
			}
			logged[cs.Revision] = cs
			after = cs.Revision
		}
	}
	for subject, rev := range l.acked {
		cs := logged[rev]
		if len(cs.Changes) != 1 || cs.Changes[0].Grant == nil || cs.Changes[0].Grant.Subject != subject {
			t.Errorf("the grant to %s was acknowledged at revision %d, whose change set is %+v", subject, rev, cs)
		}
	}
	for _, r := range []*replica{a, b} {
		x := r.engine.Index()
		for subject, rev := range l.acked {
			d, _, err := x.Check(authz.Query{Subject: subject, Permission: "join-call", Resource: authz.RootName})
			if err != nil || !d.Allowed {
				t.Errorf("%s at revision %d: the grant to %s acknowledged at revision %d: %+v, %v", r.name, x.Revision(), subject, rev, d, err)
			}
		}
	}
	subjects := slices.Collect(func(yield func(string) bool) {
		for s := range l.unknown {
			if !yield(s) {
				return
			}
		}
	})
	sameState(t, subjects, a, b)
}

// TestReplicaCutOff stops two of three members under a replica: its writes
// fail UNAVAILABLE within its commit timeout, its checks go on answering at
// its last revision, and it catches up once the members are back.
func TestReplicaCutOff(t *testing.T) {
	c := etcdtest.Start(t, 3)
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	// The replica talks to member 0 only, the one left running.
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{c.Endpoint(0)}
	const commitTimeout = time.Second
	cut := startReplica(t, "the cut-off replica", prefix, cfg, authz.Options{CommitTimeout: commitTimeout})
	applyDefaultPolicy(t, a)
	ctx := context.Background()
	last := a.must("Grant")(a.engine.Grant(ctx, admin, authz.Grant{Subject: "user:before", Role: "user", Resource: authz.RootName}))
	cut.await(last)
	cut.serve()

	// Killed rather than stopped in order, which is slower and ends the
	// same: member 0 alone, without a quorum.
	c.Kill(1)
	c.Kill(2)
	// Writes fail, each within the commit timeout and a margin for a slow
	// machine, never past the caller's deadline.
	for i := range 2 {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		began := time.Now()
		_, err := cut.admin.Grant(wctx, &usherv1.GrantRequest{Subject: fmt.Sprintf("user:cut%d", i), Role: "user", Resource: "root"})
		took := time.Since(began)
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: a write without quorum: %v after %v; want UNAVAILABLE", cut.name, err, took.Round(time.Millisecond))
		}
		if took > commitTimeout+3*time.Second {
			t.Errorf("%s: a write without quorum took %v to fail, with a commit timeout of %v", cut.name, took.Round(time.Millisecond), commitTimeout)
		}
	}
	// Checks answer from the index, at the last revision it applied.
	for i := range 3 {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cut.authz.Check(rctx, &usherv1.CheckRequest{Subject: "user:before", Permission: "join-call", Resource: "root", MinRevision: uint64(last)})
		cancel()
		if err != nil {
			t.Fatalf("%s: check %d without quorum: %v", cut.name, i, err)
		}
		if resp.GetRevision() != uint64(last) || !resp.GetDecision().GetAllowed() {
			t.Errorf("%s: check without quorum: %v at revision %d; want allowed at %d", cut.name, resp.GetDecision(), resp.GetRevision(), last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// GetRevision says where the replica is without waiting on etcd.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	began := time.Now()
	rev, err := cut.authz.GetRevision(rctx, &usherv1.GetRevisionRequest{})
	took := time.Since(began)
	cancel()
	if err != nil || rev.GetRevision() != uint64(last) {
		t.Errorf("%s: GetRevision without quorum: %v, %v; want revision %d", cut.name, rev, err, last)
	}
	if took > 3*time.Second {
		t.Errorf("%s: GetRevision without quorum took %v", cut.name, took.Round(time.Millisecond))
	}

	c.Restart(1)
	c.Restart(2)
	wctx, cancel := context.WithTimeout(ctx, converge)
	defer cancel()
	if err := c.WaitHealthy(wctx); err != nil {
		t.Fatal(err)
	}
	// Written elsewhere, seen here.
	var back authz.Revision
	for {
		back, err = a.engine.Grant(wctx, admin, authz.Grant{Subject: "user:after", Role: "user", Resource: authz.RootName})
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("%s: no write succeeded once the members were back: %v", a.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := cut.authz.Check(wctx, &usherv1.CheckRequest{Subject: "user:after", Permission: "join-call", Resource: "root", MinRevision: uint64(back)})
	if err != nil || !resp.GetDecision().GetAllowed() {
		t.Fatalf("%s: check of a write made once the members were back: %v, %v", cut.name, resp, err)
	}
	// And written here again.
	for {
		_, err = cut.admin.Grant(wctx, &usherv1.GrantRequest{Subject: "user:again", Role: "user", Resource: "root"})
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("%s: no write succeeded once the members were back: %v", cut.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	latest := a.latest()
	a.await(latest)
	cut.await(latest)
	// The writes refused without quorum may have landed since: Raft may
	// still commit what the member held. Either is right; they are listed
	// so that the comparison covers them.
	sameState(t, []string{"user:cut0", "user:cut1"}, a, cut)

	// Its one member gone, the replica is cut off while the others write
	// on and compact the log past it: it refuses writes and answers checks
	// as before, and once the member is back it catches up, from a
	// snapshot if the log no longer reaches back to it.
	last = cut.revision()
	c.Kill(0)
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = cut.admin.Grant(wctx, &usherv1.GrantRequest{Subject: "user:alone", Role: "user", Resource: "root"})
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("%s: a write with its member gone: %v; want UNAVAILABLE", cut.name, err)
	}
	var written authz.Revision
	for i := range 20 {
		wctx, cancel := context.WithTimeout(ctx, converge)
		for {
			written, err = a.engine.Grant(wctx, admin, authz.Grant{Subject: fmt.Sprintf("user:meanwhile%d", i), Role: "user", Resource: authz.RootName})
			if err == nil || wctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		if err != nil {
			t.Fatalf("%s: writing with members 1 and 2: %v", a.name, err)
		}
	}
	wctx, cancel = context.WithTimeout(ctx, converge)
	defer cancel()
	if err := a.store.Compact(wctx, written); err != nil {
		t.Fatalf("compacting the log up to %d: %v", written, err)
	}
	// etcd's own history is compacted too, as --auto-compaction does in
	// production: without it, the replica's etcd watch would resume and
	// replay the deleted log entries from etcd's history.
	head, err := a.cli.Get(wctx, "compact")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Compact(wctx, head.Header.Revision); err != nil {
		t.Fatalf("compacting etcd's history: %v", err)
	}
	resp, err = cut.authz.Check(wctx, &usherv1.CheckRequest{Subject: "user:meanwhile0", Permission: "join-call", Resource: "root"})
	if err != nil || resp.GetRevision() != uint64(last) || resp.GetDecision().GetAllowed() {
		t.Errorf("%s: a check with its member gone: %v, %v; want a denial at revision %d", cut.name, resp, err, last)
	}
	// A read-your-writes check sent now is answered once the replica has
	// rebuilt its index past the compaction: it waits on the index it
	// began on, which the rebuild replaces.
	caughtUp := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := cut.authz.Check(rctx, &usherv1.CheckRequest{Subject: "user:meanwhile0", Permission: "join-call", Resource: "root", MinRevision: uint64(written)})
		if err == nil && !resp.GetDecision().GetAllowed() {
			err = fmt.Errorf("%v at revision %d", resp.GetDecision(), resp.GetRevision())
		}
		caughtUp <- err
	}()
	time.Sleep(100 * time.Millisecond)
	began = time.Now()
	c.Restart(0)
	if err := <-caughtUp; err != nil {
		t.Errorf("%s: a check at min_revision %d sent before its member returned: %v (%v after the restart began)", cut.name, written, err, time.Since(began).Round(time.Millisecond))
	}
	if err := c.WaitHealthy(wctx); err != nil {
		t.Fatal(err)
	}
	cut.await(written)
	if cut.engine.Resyncs() == 0 {
		t.Errorf("%s caught up from revision %d to %d without a snapshot, past a log compacted up to %d", cut.name, last, written, written)
	}
	latest = a.latest()
	a.await(latest)
	cut.await(latest)
	sameState(t, []string{"user:cut0", "user:cut1", "user:alone"}, a, cut)
}

// TestANoOpWriteOnAReplicaCutOffFailsUnavailable grants again, through a
// replica cut off from etcd, a grant another replica revoked meanwhile: the
// cut-off replica's index still holds it, but it cannot tell what etcd
// holds, so the write fails UNAVAILABLE rather than answer, at a revision
// older than the revoke's, a grant in force nowhere.
func TestANoOpWriteOnAReplicaCutOffFailsUnavailable(t *testing.T) {
	c, a, cut := replicaToBeCutOff(t)
	applyDefaultPolicy(t, a)
	ctx := context.Background()
	a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "call:c1"}))
	g := authz.Grant{Subject: "user:x", Role: "call-member", Resource: "call:c1"}
	cut.await(a.must("Grant")(a.engine.Grant(ctx, admin, g)))
	cut.serve()

	c.Kill(0)
	revoked := a.retry("Revoke", func() (authz.Revision, error) { return a.engine.Revoke(ctx, admin, g) })

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := cut.admin.Grant(wctx, &usherv1.GrantRequest{Subject: g.Subject, Role: g.Role, Resource: g.Resource})
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("%s: granting again what %s revoked at revision %d: %v, revision %d; want UNAVAILABLE", cut.name, a.name, revoked, err, resp.GetRevision())
	}
	cut.wantUnavailableStorage(err)
	// The revoke is the latest revision, and the grant in force nowhere.
	a.wantNoGrantSince(revoked, "call:c1")
}

// TestARefusedWriteOnAReplicaCutOffFailsUnavailable grants, through a
// replica cut off from etcd, a role on a resource another replica
// registered meanwhile: the cut-off replica's index has no such resource,
// but it cannot tell what etcd holds, so the write fails UNAVAILABLE, to be
// tried again, rather than NOT_FOUND.
func TestARefusedWriteOnAReplicaCutOffFailsUnavailable(t *testing.T) {
	c, a, cut := replicaToBeCutOff(t)
	cut.await(applyDefaultPolicy(t, a))
	cut.serve()

	c.Kill(0)
	ctx := context.Background()
	registered := a.retry("PutResource", func() (authz.Revision, error) {
		return a.engine.PutResource(ctx, admin, authz.Resource{Name: "call:c2"})
	})

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := cut.admin.Grant(wctx, &usherv1.GrantRequest{Subject: "user:x", Role: "call-member", Resource: "call:c2"})
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("%s: granting a role on what %s registered at revision %d: %v; want UNAVAILABLE", cut.name, a.name, registered, err)
	}
	cut.wantUnavailableStorage(err)
	a.wantNoGrantSince(registered, "call:c2")
}

// A replica cut off from etcd refuses every write Unavailable until etcd is
// back: its AdminService reports NOT_SERVING meanwhile, so that a load
// balancer sends writes elsewhere, while the services answered from its
// index, and the server as a whole, stay SERVING. Once etcd is back it
// reports SERVING again and takes writes.
func TestAReplicaCutOffReportsItsWritesRefused(t *testing.T) {
	c, a, cut := replicaToBeCutOff(t)
	cut.await(applyDefaultPolicy(t, a))
	cut.serve()
	adminService := usherv1.AdminService_ServiceDesc.ServiceName
	cut.awaitHealth(adminService, healthpb.HealthCheckResponse_SERVING)

	c.Kill(0)
	cut.awaitHealth(adminService, healthpb.HealthCheckResponse_NOT_SERVING)
	for _, service := range []string{"", usherv1.AuthorizationService_ServiceDesc.ServiceName} {
		resp, err := cut.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s: health of %q while cut off: %v, %v; want SERVING", cut.name, service, resp.GetStatus(), err)
		}
	}
	if _, err := cut.authz.Check(context.Background(), &usherv1.CheckRequest{Subject: "user:x", Permission: "join-call", Resource: "root"}); err != nil {
		t.Errorf("%s: a Check while cut off: %v", cut.name, err)
	}

	c.Restart(0)
	ctx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	cut.awaitHealth(adminService, healthpb.HealthCheckResponse_SERVING)
	if _, err := cut.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:back"}); err != nil {
		t.Errorf("%s: a write once etcd is back: %v", cut.name, err)
	}
}

// replicaToBeCutOff starts a cluster of three and two replicas over it:
// replica A talks to members 1 and 2, which keep their quorum, the other
// (with a commit timeout of a second) to member 0 only, for the test to
// kill.
func replicaToBeCutOff(t *testing.T) (*etcdtest.Cluster, *replica, *replica) {
	t.Helper()
	c := etcdtest.Start(t, 3)
	prefix := prefixOf(t)
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{c.Endpoint(1), c.Endpoint(2)}
	a := startReplica(t, "replica A", prefix, cfg, authz.Options{})
	cfg = c.ClientConfig()
	cfg.Endpoints = []string{c.Endpoint(0)}
	cut := startReplica(t, "the cut-off replica", prefix, cfg, authz.Options{CommitTimeout: time.Second})
	return c, a, cut
}

// wantNoGrantSince fails the test unless, after a refused grant of a role
// to user:x on resource, rev is still the latest revision r sees and user:x
// may not join-call there: nothing was written.
func (r *replica) wantNoGrantSince(rev authz.Revision, resource string) {
	r.t.Helper()
	if latest := r.latest(); latest != rev {
		r.t.Errorf("%s: the latest revision is %d after the refusal; want %d, as before it", r.name, latest, rev)
	}
	if d, _, err := r.engine.Check(authz.Query{Subject: "user:x", Permission: "join-call", Resource: resource}); err != nil || d.Allowed {
		r.t.Errorf("%s: user:x join-call on %s after the refusal: %+v, %v; want denied", r.name, resource, d, err)
	}
}

// wantUnavailableStorage fails the test unless err, refused Unavailable,
// carries Usher's ErrorInfo of reason UNAVAILABLE_STORAGE.
func (r *replica) wantUnavailableStorage(err error) {
	r.t.Helper()
	var info *errdetails.ErrorInfo
	for _, d := range status.Convert(err).Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != "UNAVAILABLE_STORAGE" || info.GetDomain() != "usher.v1" {
		r.t.Errorf("%s: the refusal's ErrorInfo: %v; want reason UNAVAILABLE_STORAGE in domain usher.v1", r.name, info)
	}
}

// retry makes write through r until it succeeds, while the cluster elects
// a leader after a member was killed.
func (r *replica) retry(what string, write func() (authz.Revision, error)) authz.Revision {
	r.t.Helper()
	deadline := time.Now().Add(converge)
	for {
		rev, err := write()
		if err == nil {
			return rev
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: %s: %v", r.name, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
