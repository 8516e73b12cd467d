package etcdstore

import (
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// managerOn starts an engine over the cluster's prefix and a manager over
// it and store.
func managerOn(t *testing.T, c *etcdtest.Cluster, prefix string, store admission.Store) *admission.Manager {
	t.Helper()
	backend := etcd.New(c.Client(t), etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps})
	eng, err := authz.Start(t.Context(), backend, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	m := admission.New(eng, admission.Options{Store: store})
	t.Cleanup(func() { m.Close() })
	return m
}

// user:a joins and leaves through one replica while another's session
// watch is away, and etcd compacts its history meanwhile, so that the
// other lists the sessions again and never sees user:a. A watch told of
// user:a's join through the first replica and resumed on the other is
// told that user:a left, or sent the whole state, rather than left
// believing user:a is in the call.
func TestAWatchResumedOnAReplicaThatListedTheSessionsAgainLosesNoEnding(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	const prefix, call = "/relist-resume/", "call:acme:1"
	a := managerOn(t, c, prefix, following(t, c, prefix))
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Resources:   []authz.Resource{{Name: call}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	if _, _, err := a.Engine().ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	away := lagging(t, c, prefix)
	b := managerOn(t, c, prefix, away)
	r, err := a.Engine().Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: call})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Engine().WaitApplied(ctx, r); err != nil {
		t.Fatal(err)
	}
	joined, err := a.Join(ctx, "", "user:a", call, r)
	if err != nil || joined.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v %v", joined, err)
	}
	if err := a.Leave(ctx, joined.Session); err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	resp, err := cli.Get(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	away.done.Add(1)
	go away.follow()
	if err := away.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(call, r)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, ev := range w.Initial {
		if ev.Kind == admission.EventLeft && ev.Subject == "user:a" || ev.Kind == admission.EventSynced && ev.Reset {
			return
		}
	}
	t.Errorf("the watch resumed from %d, on a replica whose session watch was compacted away while user:a joined and left, neither says user:a left nor sends the whole state: %+v",
		r, w.Initial)
}
