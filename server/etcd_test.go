package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/etcd"
)

// On etcd, a write larger than one transaction may be, in operations or in
// bytes, is refused RESOURCE_EXHAUSTED (LIMIT_EXCEEDED), naming the limit,
// and writes nothing: tried again it would be refused again, so it is no
// outage, UNAVAILABLE, for a client to retry. A dry run of it is refused
// alike, rather than promise an apply that would fail.
func TestAWriteTooLargeForAnEtcdTransactionIsALimit(t *testing.T) {
	c := etcdtest.Start(t, 1)
	view := []string{"view"}
	roles := func(n int, perms []string, description string) []*usherv1.Role {
		var out []*usherv1.Role
		for i := range n {
			out = append(out, &usherv1.Role{Name: fmt.Sprintf("r%d", i), Scope: authz.RootName, Permissions: perms, Description: description})
		}
		return out
	}
	// 1,000 permissions of 120 bytes: 25 roles that each hold them all are
	// a request of some 3 MB, which etcd, at its defaults, does not take
	// in one transaction (1.5 MiB), nor its client send (2 MiB).
	var long []string
	for i := range 1000 {
		long = append(long, fmt.Sprintf("p%03d-%s", i, strings.Repeat("x", 115)))
	}
	for i, tc := range []struct {
		name  string
		opts  etcd.Options
		perms []string
		roles []*usherv1.Role
		limit string
	}{
		{"more operations than etcd's --max-txn-ops", etcd.Options{MaxTxnOps: 16}, view, roles(16, view, ""), "16"},
		{"more bytes than etcd's --max-request-bytes", etcd.Options{MaxTxnBytes: 16 << 10}, view, roles(8, view, strings.Repeat("d", 1024)), "16384"},
		{"more bytes than etcd takes at its defaults", etcd.Options{MaxTxnOps: etcdtest.MaxTxnOps}, long, roles(25, long, ""), fmt.Sprint(etcd.DefaultMaxTxnBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Prefix = fmt.Sprintf("/too-large-%d/", i)
			store := etcd.New(c.Client(t), tc.opts)
			engine, err := authz.Start(context.Background(), store, authz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { engine.Close(); store.Close() })
			f := serveEngine(t, engine)
			catalog := &usherv1.Policy{}
			for _, p := range tc.perms {
				catalog.Permissions = append(catalog.Permissions, &usherv1.Permission{Name: p})
			}
			if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: catalog}); err != nil {
				t.Fatalf("ApplyPolicy of a catalog: %v", err)
			}
			before := f.snapshotState()

			// A dry run says what the apply would: that it is refused.
			for _, dry := range []bool{true, false} {
				_, err = f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: &usherv1.Policy{Permissions: catalog.Permissions, Roles: tc.roles}, DryRun: dry})
				st := wantCode(t, err, codes.ResourceExhausted)
				wantDetails(t, st, refusal{reason: "LIMIT_EXCEEDED", meta: map[string]string{"limit": tc.limit}})
				if diff := before.diff(f.snapshotState()); len(diff) > 0 {
					t.Errorf("a refused write (dry run: %v) wrote something: %v", dry, diff)
				}
			}
		})
	}
}

// A replica cut off from etcd answers ListChanges, which reads the change
// log in etcd, UNAVAILABLE (UNAVAILABLE_STORAGE) within the commit timeout,
// however long its caller would wait, rather than hold the call until etcd
// is back.
func TestListChangesFailsUnavailableWithEtcdOutOfReach(t *testing.T) {
	c := etcdtest.Start(t, 1)
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/cut-off-changes/"})
	engine, err := authz.Start(context.Background(), store, authz.Options{CommitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); store.Close() })
	f := serveEngine(t, engine)
	if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "call:1"}); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)

	for _, req := range []*usherv1.ListChangesRequest{{}, {AfterRevision: 1}} {
		answersUnavailable(t, fmt.Sprintf("ListChanges after %d", req.GetAfterRevision()), func(ctx context.Context) error {
			_, err := f.admin.ListChanges(ctx, req)
			return err
		})
	}
}

// answersUnavailable fails the test unless call, made with no deadline
// while etcd is out of reach, fails UNAVAILABLE (UNAVAILABLE_STORAGE).
func answersUnavailable(t *testing.T, what string, call func(context.Context) error) {
	t.Helper()
	endsUnavailable(t, nil, what+" with etcd out of reach, called with no deadline, never answered", call)
}

// endsUnavailable fails the test unless call, made with no deadline while
// etcd is out of reach, fails UNAVAILABLE (UNAVAILABLE_STORAGE) with the
// metadata meta; stuck says what a call that never does failed to do.
func endsUnavailable(t *testing.T, meta map[string]string, stuck string, call func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	answered := make(chan error, 1)
	go func() { answered <- call(ctx) }()
	select {
	case err := <-answered:
		st := wantCode(t, err, codes.Unavailable)
		wantDetails(t, st, refusal{reason: "UNAVAILABLE_STORAGE", meta: meta})
	// Far more than the commit timeout: a call still waiting then waits
	// for etcd to come back.
	case <-time.After(time.Minute):
		t.Fatal(stuck)
	}
}

// untilEnd receives from a stream until it ends, and returns how.
func untilEnd[M any](recv func() (M, error)) error {
	for {
		if _, err := recv(); err != nil {
			return err
		}
	}
}

// A replica cut off from etcd answers the next page of a lookup, which
// reads in etcd's change log what the replica applied since the first page,
// UNAVAILABLE (UNAVAILABLE_STORAGE) within the commit timeout, however long
// its caller would wait, rather than hold the call until etcd is back and
// then call the token expired.
func TestALookupsNextPageFailsUnavailableWithEtcdOutOfReach(t *testing.T) {
	c := etcdtest.Start(t, 1)
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/cut-off-lookup/"})
	engine, err := authz.Start(context.Background(), store, authz.Options{CommitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); store.Close() })
	f := serveEngine(t, engine)
	_, err = f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: &usherv1.Policy{
		Permissions: []*usherv1.Permission{{Name: "view"}},
		Roles:       []*usherv1.Role{{Name: "viewer", Scope: authz.RootName, Permissions: []string{"view"}}},
		Resources:   []*usherv1.Resource{{Name: "call:1"}, {Name: "call:2"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:a", Role: "viewer", Resource: authz.RootName}); err != nil {
		t.Fatal(err)
	}
	req := &usherv1.LookupResourcesRequest{Subject: "user:a", Permission: "view", ResourceType: "call", PageSize: 1}
	first, err := f.authz.LookupResources(f.ctx(), req)
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("the first page = %v, %v; want one with a token", first, err)
	}
	// A write the lookup's next page must look at in the log.
	if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "room:1"}); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)

	req.PageToken = first.GetNextPageToken()
	answersUnavailable(t, "the next page of a lookup", func(ctx context.Context) error {
		_, err := f.authz.LookupResources(ctx, req)
		return err
	})
}

// A Watch on a replica cut off from etcd, which reads the change log there,
// ends UNAVAILABLE (UNAVAILABLE_STORAGE), naming the revision to watch
// again after, within the commit timeout, so that its client moves to
// another replica, rather than wait for etcd to come back.
func TestAWatchOnAReplicaCutOffFromEtcdEndsUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/cut-off-watch/"})
	engine, err := authz.Start(context.Background(), store, authz.Options{CommitTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); store.Close() })
	f := serveEngine(t, engine)
	put, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "call:1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(0)

	endsUnavailable(t, map[string]string{"after_revision": fmt.Sprint(put.GetRevision())},
		"a Watch with etcd out of reach neither sent a change nor ended", func(ctx context.Context) error {
			// From now: the revision the replica answers at.
			stream, err := f.authz.Watch(ctx, &usherv1.WatchRequest{})
			if err != nil {
				return err
			}
			return untilEnd(stream.Recv)
		})
}

// A WatchCall on a replica cut off from etcd, which hears nothing more of
// what other replicas commit (a ban, a revoke) nor of the sessions they
// end, ends UNAVAILABLE (UNAVAILABLE_STORAGE), naming the revision of the
// last event it sent, to resume from on another replica, rather than stay
// open and silent while the participants it should eject stay in the call.
func TestAWatchCallOnAReplicaCutOffFromEtcdEndsUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	backend := etcd.New(c.Client(t), etcd.Options{Prefix: "/cut-off-watch-call/"})
	engine, err := authz.Start(ctx, backend, authz.Options{CommitTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); backend.Close() })
	store, err := etcdstore.New(ctx, c.Client(t), etcdstore.Options{Prefix: "/cut-off-watch-call/"})
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(engine, admission.Options{Store: store})
	t.Cleanup(func() { m.Close() })
	by := authz.Author{Caller: "test"}
	rev, _, err := engine.ApplyPolicy(ctx, by, authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rev, err = engine.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "root"}); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Join(ctx, "", "user:a", "call:acme:1", rev); err != nil || r.Outcome != admission.Admitted {
		t.Fatalf("Join = %+v, %v", r, err)
	}
	client := usherv1.NewAdmissionServiceClient(server.ServeLoopback(t, server.New(engine, slog.New(slog.DiscardHandler), server.WithAdmission(m))))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchCall(wctx, &usherv1.WatchCallRequest{Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("the initial state: %v", err)
		}
		last = max(last, resp.GetEvent().GetRevision())
		if resp.GetEvent().GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
			break
		}
	}
	c.Kill(0)
	endsUnavailable(t, map[string]string{"after_revision": fmt.Sprint(last)},
		"a WatchCall with etcd out of reach neither sent an event nor ended", func(context.Context) error { return untilEnd(stream.Recv) })
}

// A Watch that has caught up, and waits for what is committed next, on a
// replica then cut off from etcd ends UNAVAILABLE (UNAVAILABLE_STORAGE),
// naming the revision to watch again after, as one that reads the log
// then does: the replica would hear of nothing committed elsewhere.
func TestAWatchWaitingOnAReplicaThenCutOffFromEtcdEndsUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/cut-off-waiting-watch/"})
	engine, err := authz.Start(context.Background(), store, authz.Options{CommitTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); store.Close() })
	f := serveEngine(t, engine)
	put, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "call:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := f.authz.Watch(ctx, &usherv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The first message: the stream has found its revision in the log.
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	endsUnavailable(t, map[string]string{"after_revision": fmt.Sprint(put.GetRevision())},
		"a Watch waiting when etcd went out of reach neither sent a change nor ended", func(context.Context) error { return untilEnd(stream.Recv) })
}
