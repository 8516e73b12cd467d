package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/admission/storetest"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
)

// TestStore runs the store conformance suite against a three-member etcd
// cluster: each case under a prefix of its own, each replica with a client
// of its own.
func TestStore(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var prefixes sync.Map // admission.Store -> its prefix
	open := func(t *testing.T, prefix string, b storetest.Bounds) admission.Store {
		s, err := etcdstore.New(context.Background(), c.Client(t), etcdstore.Options{
			Prefix: prefix, MaxSessions: b.MaxSessions, MaxKnocks: b.MaxKnocks, CallerShare: b.CallerShare})
		if err != nil {
			t.Fatal(err)
		}
		prefixes.Store(admission.Store(s), prefix)
		return s
	}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T, b storetest.Bounds) admission.Store {
			return open(t, "/test/"+t.Name()+"/", b)
		},
		Replica: func(t *testing.T, of admission.Store, b storetest.Bounds) admission.Store {
			prefix, _ := prefixes.Load(of)
			return open(t, prefix.(string), b)
		},
	})
}

// replica is one Usher replica over the shared cluster: an engine on the
// storage backend and an admission manager on the session store, each with
// a client of its own.
type replica struct {
	eng *authz.Engine
	m   *admission.Manager
}

func startReplica(t *testing.T, c *etcdtest.Cluster, prefix string) replica {
	t.Helper()
	return startReplicaOn(t, c, prefix, replicaBackend(t, c, prefix))
}

// replicaBackend is the index's backend of a replica under prefix.
func replicaBackend(t *testing.T, c *etcdtest.Cluster, prefix string) *etcd.Store {
	return etcd.New(c.Client(t), etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps})
}

// startReplicaOn starts a replica whose index follows backend.
func startReplicaOn(t *testing.T, c *etcdtest.Cluster, prefix string, backend storage.Backend) replica {
	t.Helper()
	return startReplicaWith(t, c, prefix, backend, authz.Options{})
}

// startReplicaWith starts a replica whose index follows backend, its
// engine started with opts.
func startReplicaWith(t *testing.T, c *etcdtest.Cluster, prefix string, backend storage.Backend, opts authz.Options) replica {
	t.Helper()
	eng, err := authz.Start(t.Context(), backend, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	store, err := etcdstore.New(t.Context(), c.Client(t), etcdstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(eng, admission.Options{Store: store})
	t.Cleanup(func() { m.Close() })
	return replica{eng: eng, m: m}
}

// TestManagersShareCalls runs two replicas' managers over one cluster: a
// call's capacity holds across them, a session joined through one is renewed
// and left through the other, and a call's watch on either sees every
// participant.
func TestManagersShareCalls(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := t.Context()
	a := startReplica(t, c, "/usher/")
	b := startReplica(t, c, "/usher/")

	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", MaxParticipants: 2, Lease: 10 * time.Second}},
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var rev authz.Revision
	for _, u := range []string{"user:a", "user:b", "user:c"} {
		r, err := a.eng.Grant(ctx, by, authz.Grant{Subject: u, Role: "member", Resource: "call:acme:1"})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}

	wa, err := a.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wb, err := b.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()

	join := func(r replica, subject string, want admission.Outcome) admission.Result {
		t.Helper()
		res, err := r.m.Join(ctx, "", subject, "call:acme:1", rev)
		if err != nil || res.Outcome != want {
			t.Fatalf("Join(%s) = %s (%s), %v; want %s", subject, res.Outcome, res.Reason, err, want)
		}
		return res
	}
	next := func(w *admission.Watch, kind admission.EventKind, subject string) {
		t.Helper()
		for {
			select {
			case ev, ok := <-w.C:
				if !ok {
					t.Fatalf("the watch ended: %v", w.Err())
				}
				if ev.Kind == kind && ev.Subject == subject {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no event %d for %s", kind, subject)
			}
		}
	}

	ra := join(a, "user:a", admission.Admitted)
	join(b, "user:b", admission.Admitted)
	for _, w := range []*admission.Watch{wa, wb} {
		next(w, admission.EventJoined, "user:a")
		next(w, admission.EventJoined, "user:b")
	}
	join(a, "user:c", admission.Full)
	join(b, "user:c", admission.Full)

	if r, err := b.m.KeepAlive(ctx, ra.Session); err != nil || r.Outcome != admission.Admitted {
		t.Fatalf("KeepAlive through the other replica = %+v, %v", r, err)
	}
	if err := b.m.Leave(ctx, ra.Session); err != nil {
		t.Fatalf("Leave through the other replica: %v", err)
	}
	for _, w := range []*admission.Watch{wa, wb} {
		next(w, admission.EventLeft, "user:a")
	}
	join(a, "user:c", admission.Admitted)
}

// A subject that holds every permission of a large catalog joins a call on
// a cluster as it does on one server: its session, which carries its
// capabilities, is not refused for its size.
func TestAJoinWithManyCapabilitiesIsAdmitted(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/many/")
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles:       []authz.Role{{Name: "owner", Scope: "root", Permissions: []string{"*"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	for i := range 2000 {
		p.Permissions = append(p.Permissions, authz.Permission{Name: fmt.Sprintf("feature.area-%04d.manage-settings", i)})
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "owner", Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.m.Join(ctx, "", "user:a", "call:acme:1", rev)
	if err != nil || r.Outcome != admission.Admitted || len(r.Capabilities) != len(p.Permissions) {
		t.Fatalf("Join of a subject holding %d permissions = %s with %d capabilities, %v; want ADMITTED with all of them",
			len(p.Permissions), r.Outcome, len(r.Capabilities), err)
	}
	if k, err := a.m.KeepAlive(ctx, r.Session); err != nil || k.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the session = %+v, %v; want ADMITTED", k, err)
	}
}

func TestStoreEdges(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	open := func(t *testing.T, opts etcdstore.Options) *etcdstore.Store {
		t.Helper()
		if opts.Prefix == "" {
			opts.Prefix = "/edges/" + t.Name() + "/"
		}
		s, err := etcdstore.New(ctx, c.Client(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	drain := func(s *etcdstore.Store) {
		go func() {
			for range admission.Feed(t.Context(), s) {
			}
		}()
	}
	now := time.Now()
	sess := func(subject string, lease time.Duration) admission.Session {
		return admission.Session{ID: subject + "-" + fmt.Sprint(time.Now().UnixNano()), Subject: subject, Call: "call:x",
			Joined: now, Expires: time.Now().Add(lease), Counted: true, Revision: 1}
	}
	const admit = 0 // no capacity
	// collect reads events until none came for a while.
	collect := func(s *etcdstore.Store, quiet time.Duration) []admission.StoreEvent {
		var out []admission.StoreEvent
		for {
			select {
			case <-s.Pending():
				out = append(out, s.Take()...)
			case <-time.After(quiet):
				return out
			}
		}
	}

	t.Run("a record past MaxValueBytes is refused", func(t *testing.T) {
		s := open(t, etcdstore.Options{MaxValueBytes: 512})
		drain(s)
		big := sess("user:a", time.Minute)
		for i := range 40 {
			big.Capabilities = append(big.Capabilities, fmt.Sprintf("capability.number-%d", i))
		}
		if _, _, err := s.Join(ctx, big, admit); authz.CodeOf(err) != authz.ResourceExhausted {
			t.Errorf("Join of a %d-capability session: %v, want RESOURCE_EXHAUSTED", len(big.Capabilities), err)
		}
		k := admission.Knock{ID: "k", Subject: "user:b", Call: "call:x", Note: strings.Repeat("n", 600), Knocked: now, Expires: now.Add(time.Minute)}
		if _, err := s.Knock(ctx, k); authz.CodeOf(err) != authz.ResourceExhausted {
			t.Errorf("Knock with a 600-byte note: %v, want RESOURCE_EXHAUSTED", err)
		}
	})

	t.Run("a store that opens reports what is live already as begun", func(t *testing.T) {
		a := open(t, etcdstore.Options{})
		drain(a)
		s := sess("user:a", time.Minute)
		if _, _, err := a.Join(ctx, s, admit); err != nil {
			t.Fatal(err)
		}
		k := admission.Knock{ID: "k", Subject: "user:b", Call: "call:x", Knocked: now, Expires: now.Add(time.Minute)}
		if _, err := a.Knock(ctx, k); err != nil {
			t.Fatal(err)
		}
		b := open(t, etcdstore.Options{Prefix: "/edges/" + t.Name() + "/"})
		got := collect(b, 300*time.Millisecond)
		if len(got) != 2 || got[0].Ended != nil || got[1].Ended != nil {
			t.Fatalf("a new store's first events: %+v", got)
		}
		if _, ok := b.Session(s.ID); !ok {
			t.Error("the new store does not hold the live session")
		}
		if _, ok := b.KnockOf("k"); !ok {
			t.Error("the new store does not hold the live knock")
		}
	})

	t.Run("Close leaves sessions to their media servers; with RevokeOnClose they lapse", func(t *testing.T) {
		prefix := "/edges/" + t.Name() + "/"
		watcher := open(t, etcdstore.Options{Prefix: prefix})
		kept := open(t, etcdstore.Options{Prefix: prefix})
		revoking := open(t, etcdstore.Options{Prefix: prefix, RevokeOnClose: true})
		drain(kept)
		drain(revoking)
		s1, s2 := sess("user:a", time.Minute), sess("user:b", time.Minute)
		if _, _, err := kept.Join(ctx, s1, admit); err != nil {
			t.Fatal(err)
		}
		if _, _, err := revoking.Join(ctx, s2, admit); err != nil {
			t.Fatal(err)
		}
		kept.Close()
		revoking.Close()
		got := collect(watcher, time.Second)
		var ends []string
		for _, e := range got {
			if e.Ended != nil {
				ends = append(ends, fmt.Sprintf("%s why=%d", e.Session.ID, e.Ended.Why))
			}
		}
		if want := []string{fmt.Sprintf("%s why=%d", s2.ID, admission.Lapsed)}; !slices.Equal(ends, want) {
			t.Errorf("ends after the stores closed: %v, want %v", ends, want)
		}
		if _, err := watcher.Renew(ctx, s1.ID, time.Now().Add(time.Minute)); err != nil {
			t.Errorf("the session of a store closed without RevokeOnClose: Renew: %v", err)
		}
	})

	t.Run("a consumer that falls behind gets a collapsed queue, never a wrong one", func(t *testing.T) {
		s := open(t, etcdstore.Options{MaxPending: 8})
		var live []string
		for i := range 20 {
			x := sess(fmt.Sprintf("user:%d", i), time.Minute)
			if _, _, err := s.Join(ctx, x, admit); err != nil {
				t.Fatal(err)
			}
			if i < 17 {
				if _, err := s.End(ctx, x.ID, admission.Ending{Why: admission.Left}); err != nil {
					t.Fatal(err)
				}
			} else {
				live = append(live, x.ID)
			}
		}
		got := collect(s, 500*time.Millisecond)
		if len(got) >= 20+17 {
			t.Errorf("the queue was not collapsed: %d events", len(got))
		}
		begun := map[string]bool{}
		for _, e := range got {
			id := e.Session.ID
			if e.Ended == nil {
				begun[id] = true
			} else if !begun[id] {
				t.Errorf("%s ended without beginning", id)
			} else {
				delete(begun, id)
			}
		}
		var open []string
		for id := range begun {
			open = append(open, id)
		}
		slices.Sort(open)
		slices.Sort(live)
		if !slices.Equal(open, live) {
			t.Errorf("the events leave %v live, want %v", open, live)
		}
	})

	t.Run("a collapsed queue keeps the ending of a knock the consumer knew, renoted since", func(t *testing.T) {
		s := open(t, etcdstore.Options{MaxPending: 8})
		k := admission.Knock{ID: "k", Subject: "user:k", Call: "call:x", Note: "Gus", Knocked: now, Expires: now.Add(time.Minute)}
		if _, err := s.Knock(ctx, k); err != nil {
			t.Fatal(err)
		}
		if got := collect(s, 300*time.Millisecond); len(got) != 1 || got[0].Knock == nil || got[0].Ended != nil {
			t.Fatalf("the knock's events: %+v; want its beginning", got)
		}
		// The consumer knows the knock; it takes a new note, then ends, and
		// the consumer falls behind.
		k.Note = "Gus, the auditor"
		if _, err := s.Knock(ctx, k); err != nil {
			t.Fatal(err)
		}
		if found, err := s.Unknock(ctx, "call:x", "user:k", admission.Left); !found || err != nil {
			t.Fatalf("Unknock = %t, %v", found, err)
		}
		for i := range 12 {
			x := sess(fmt.Sprintf("user:%d", i), time.Minute)
			if _, _, err := s.Join(ctx, x, admit); err != nil {
				t.Fatal(err)
			}
			if _, err := s.End(ctx, x.ID, admission.Ending{Why: admission.Left}); err != nil {
				t.Fatal(err)
			}
		}
		got := collect(s, 500*time.Millisecond)
		if len(got) >= 2+24 {
			t.Errorf("the queue was not collapsed: %d events", len(got))
		}
		ended := false
		for _, e := range got {
			if e.Knock != nil && e.Knock.ID == "k" && e.Ended != nil {
				ended = true
			}
		}
		if !ended {
			t.Errorf("the collapsed queue %+v does not end knock k, which the consumer knew", got)
		}
	})

	t.Run("a record this replica cannot read is left out and not counted", func(t *testing.T) {
		prefix := "/edges/" + t.Name() + "/"
		if _, err := c.Client(t).Put(ctx, prefix+"adm/s/call:x\x00user:junk", `{"v":99}`); err != nil {
			t.Fatal(err)
		}
		s := open(t, etcdstore.Options{Prefix: prefix})
		drain(s)
		if got := s.Sessions("call:x"); len(got) != 0 {
			t.Errorf("Sessions = %+v", got)
		}
		// With room for one counted session, the unreadable one does not
		// take it.
		if out, _, err := s.Join(ctx, sess("user:a", time.Minute), 1); err != nil || out != admission.Admitted {
			t.Fatalf("Join = %s, %v; want ADMITTED", out, err)
		}
	})

	t.Run("a record written before callers were recorded is read, and counts for nobody's share", func(t *testing.T) {
		prefix := "/edges/" + t.Name() + "/"
		old := map[string]string{
			"adm/s/call:x\x00user:old":   `{"v":1,"id":"old-session","subject":"user:old","call":"call:x","joined":1,"expires":1,"counted":true,"revision":1}`,
			"adm/k/call:x\x00user:waits": `{"v":1,"id":"old-knock","subject":"user:waits","call":"call:x","knocked":1,"expires":1}`,
		}
		for key, value := range old {
			if _, err := c.Client(t).Put(ctx, prefix+key, value); err != nil {
				t.Fatal(err)
			}
		}
		s := open(t, etcdstore.Options{Prefix: prefix, CallerShare: 1})
		drain(s)
		if got, ok := s.Session("old-session"); !ok || got.Subject != "user:old" || got.Caller != "" {
			t.Errorf("Session of the older record = %+v, %t; want user:old's, of no caller", got, ok)
		}
		if got, ok := s.KnockOf("old-knock"); !ok || got.Subject != "user:waits" || got.Caller != "" {
			t.Errorf("KnockOf the older record = %+v, %t; want user:waits's, of no caller", got, ok)
		}
		mine := sess("user:a", time.Minute)
		mine.Caller = "media-a"
		if out, _, err := s.Join(ctx, mine, admit); err != nil || out != admission.Admitted {
			t.Fatalf("a caller's first Join beside the older records = %s, %v; want ADMITTED", out, err)
		}
		// The caller holds one, its own, of its share of one.
		more := sess("user:b", time.Minute)
		more.Caller = "media-a"
		var e *admission.ShareError
		if _, _, err := s.Join(ctx, more, admit); !errors.As(err, &e) || *e != (admission.ShareError{Caller: "media-a", Share: 1, Held: 1}) {
			t.Errorf("a caller's second Join = %v; want its share of 1 refused, holding 1", err)
		}
	})
}

// A Join whose session would be a record past MaxValueBytes (a subject
// holding thousands of capabilities in the call) is refused naming the call
// it asked about, the subject and the limit in the metadata, and nothing is
// written: not a session id the caller was never given.
func TestAJoinTooLargeForTheStoreNamesTheCall(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	prefix := "/too-large/"
	eng, err := authz.Start(ctx, replicaBackend(t, c, prefix), authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	store, err := etcdstore.New(ctx, c.Client(t), etcdstore.Options{Prefix: prefix, MaxValueBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(eng, admission.Options{Store: store})
	t.Cleanup(func() { m.Close() })
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"*"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	for i := range 60 {
		p.Permissions = append(p.Permissions, authz.Permission{Name: fmt.Sprintf("call.capability-%02d", i)})
	}
	if _, _, err := eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Join(ctx, "", "user:a", "call:acme:1", rev)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.ResourceExhausted || authz.KindOf(e) != authz.KindLimitExceeded {
		t.Fatalf("Join of a session past MaxValueBytes = %+v, %v; want RESOURCE_EXHAUSTED, LIMIT_EXCEEDED", r, err)
	}
	if e.Field != "resource" || e.Value != "call:acme:1" || e.Meta["subject"] != "user:a" || e.Meta["limit"] != "1024" {
		t.Errorf("the refusal names %s %q (metadata %v); want resource %q, with the subject and the limit, 1024, in the metadata",
			e.Field, e.Value, e.Meta, "call:acme:1")
	}
	if !strings.HasPrefix(e.Error(), `resource "call:acme:1": `) {
		t.Errorf("message %q does not name the call", e.Error())
	}
	if sessions, knocks := store.Count("call:acme:1"); sessions != 0 || knocks != 0 {
		t.Errorf("after the refusal the call holds %d sessions and %d knocks, want none", sessions, knocks)
	}
}
