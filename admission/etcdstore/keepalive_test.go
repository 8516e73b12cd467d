package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// TestKeepAliveRightAfterAJoinElsewhere keeps a session and a knock alive
// through one replica the moment another made them, before the first
// replica's watch may have brought them: both are live, and KeepAlive must
// renew them.
func TestKeepAliveRightAfterAJoinElsewhere(t *testing.T) {
	const rounds = 30
	a, b, rev := lobbyCalls(t, "/keepalive/", rounds)
	ctx := t.Context()
	for i := range rounds {
		res, err := a.m.Join(ctx, "", "user:a", fmt.Sprintf("call:acme:%d", i), rev)
		if err != nil || res.Outcome != admission.Admitted {
			t.Fatalf("Join: %+v, %v", res, err)
		}
		if r, err := b.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Admitted {
			t.Fatalf("round %d: KeepAlive through another replica right after the join = %+v, %v", i, r, err)
		}
		res, err = a.m.Join(ctx, "", "user:g", fmt.Sprintf("call:acme:%d", i), rev)
		if err != nil || res.Outcome != admission.Lobby {
			t.Fatalf("Join of a guest: %+v, %v", res, err)
		}
		if r, err := b.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Lobby {
			t.Fatalf("round %d: KeepAlive of a knock through another replica right after it = %+v, %v", i, r, err)
		}
	}
}

// TestKeepAliveOnAReplicaBehindTheGrant has sessions admitted through one
// replica by grants that another, whose index applies each change set
// late, has not applied yet: that replica must neither eject them when
// its store tells it of them nor when they are kept alive through it.
func TestKeepAliveOnAReplicaBehindTheGrant(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/behind/")
	b := startLaggingReplica(t, c, "/behind/", 100*time.Millisecond)
	by := authz.Author{Caller: "test"}
	const rounds = 10
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	for i := range rounds {
		p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("call:acme:%d", i)})
	}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for i := range rounds {
		call := fmt.Sprintf("call:acme:%d", i)
		if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: call}); err != nil {
			t.Fatal(err)
		}
		res, err := a.m.Join(ctx, "", "user:a", call, rev)
		if err != nil || res.Outcome != admission.Admitted {
			t.Fatalf("Join: %+v, %v", res, err)
		}
		sessions = append(sessions, res.Session)
		if i%2 == 0 {
			if r, err := b.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Admitted {
				t.Fatalf("round %d: KeepAlive through a replica behind the grant = %+v, %v", i, r, err)
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := b.eng.WaitApplied(wctx, rev); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // for an ejection to reach the store
	for i, id := range sessions {
		if r, err := a.m.KeepAlive(ctx, id); err != nil || r.Outcome != admission.Admitted {
			t.Errorf("session %d, once the lagging replica caught up: KeepAlive = %+v, %v", i, r, err)
		}
	}
}

// lagging is a backend whose watch delivers each change set late, as to a
// replica that is catching up.
type lagging struct {
	*etcd.Store
	by time.Duration
}

func (l lagging) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for cs, err := range l.Store.Watch(ctx, after) {
			time.Sleep(l.by)
			if !yield(cs, err) {
				return
			}
		}
	}
}

// startLaggingReplica is startReplica with an index that applies each
// change set late.
func startLaggingReplica(t *testing.T, c *etcdtest.Cluster, prefix string, by time.Duration) replica {
	t.Helper()
	return startReplicaOn(t, c, prefix, lagging{replicaBackend(t, c, prefix), by})
}

// A KeepAlive through a replica too far behind the session's join to judge
// it in time is refused, FAILED_PRECONDITION naming the session and the
// revision it was admitted at, and the session stays.
func TestKeepAliveOnAReplicaTooFarBehind(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/far/")
	b := startLaggingReplica(t, c, "/far/", time.Second)
	by := authz.Author{Caller: "test"}
	p := memberPolicy("call:acme:1")
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.m.Join(ctx, "", "user:a", "call:acme:1", rev)
	if err != nil || res.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v, %v", res, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = b.m.KeepAlive(short, res.Session)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindRevisionNotReached ||
		e.Field != "session_id" || e.Value != res.Session || !strings.Contains(e.Reason, fmt.Sprintf("admitted at revision %d", res.Revision)) {
		t.Fatalf("KeepAlive through a replica far behind = %v (%#v), want FAILED_PRECONDITION naming the session and its revision", err, e)
	}
	if r, err := a.m.KeepAlive(ctx, res.Session); err != nil || r.Outcome != admission.Admitted {
		t.Errorf("after the refused KeepAlive: %+v, %v; want the session live", r, err)
	}
}

// A KeepAlive through a replica cut off from etcd before its index applied
// the session's join is refused UNAVAILABLE, naming the session, as every
// session write there is: the replica will not catch up while the cut
// lasts, and the session is to be kept alive through another.
func TestKeepAliveOnAReplicaCutOffBehindTheJoin(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/cut-behind/")
	stop := make(chan struct{})
	b := startReplicaOn(t, c, "/cut-behind/", stalled{replicaBackend(t, c, "/cut-behind/"), stop})
	by := authz.Author{Caller: "test"}
	p := memberPolicy("call:acme:1")
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	res, err := a.m.Join(ctx, "", "user:a", "call:acme:1", rev)
	if err != nil || res.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v, %v", res, err)
	}
	// b's picture of the sessions follows etcd: it holds the session.
	for giveUp := time.Now().Add(5 * time.Second); b.m.Participants("call:acme:1") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(giveUp) {
			t.Fatal("the replica's picture never held the session")
		}
	}
	c.Kill(0)
	if at := b.eng.Index().Revision(); at >= res.Revision {
		t.Fatalf("the stalled replica had applied %d, the join's revision: the test needs it behind", at)
	}
	_, err = b.m.KeepAlive(ctx, res.Session)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.Unavailable || e.Kind != authz.KindUnavailableStorage || e.Field != "session_id" || e.Value != res.Session {
		t.Errorf("KeepAlive through a replica cut off behind the join = %v (%#v), want UNAVAILABLE_STORAGE naming the session", err, e)
	}
}

// stalled is a backend whose watch delivers nothing once stop is closed,
// as to a replica cut off from etcd before it heard of what followed.
type stalled struct {
	*etcd.Store
	stop <-chan struct{}
}

func (s stalled) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for cs, err := range s.Store.Watch(ctx, after) {
			select {
			case <-s.stop:
				<-ctx.Done()
				return
			default:
			}
			if !yield(cs, err) {
				return
			}
		}
	}
}

// lobbyCalls starts two replicas on prefix, with calls call:acme:0 up to
// rounds, each with a lobby: user:a is a member of each, who enters, and
// user:g a guest, who knocks. It returns once b has applied all of it.
func lobbyCalls(t *testing.T, prefix string, rounds int) (a, b replica, rev authz.Revision) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a = startReplica(t, c, prefix)
	b = startReplica(t, c, prefix)
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.admit"}, {Name: "call.bypass"}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join", "call.bypass"}},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "invitee", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second,
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "invitee", Bypass: "call.bypass"}}},
	}
	for i := range rounds {
		p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("call:acme:%d", i)})
	}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		if _, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: fmt.Sprintf("call:acme:%d", i)}); err != nil {
			t.Fatal(err)
		}
		if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: fmt.Sprintf("call:acme:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	return a, b, rev
}

// knockBehindGrant starts a cluster, a replica a and a replica b whose
// index applies each change set 400 ms late, under lobbyPolicy; user:g is
// granted guest at call:acme:1 and knocks through a, which b has yet to
// apply the grant of.
func knockBehindGrant(t *testing.T, prefix string) (a, b replica, knock admission.Result) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a = startReplica(t, c, prefix)
	b = startLaggingReplica(t, c, prefix, 400*time.Millisecond)
	by := authz.Author{Caller: "test"}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, lobbyPolicy(), authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	knock, err = a.m.Join(ctx, "", "user:g", "call:acme:1", rev)
	if err != nil || knock.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", knock, err)
	}
	if at := b.eng.Index().Revision(); at >= rev {
		t.Fatalf("the lagging replica had applied %d, the grant's revision: the test needs it behind", at)
	}
	return a, b, knock
}

// A knock made through one replica, by a grant that another replica, whose
// index applies each change set late, has yet to apply, is kept alive
// through that replica: it waits in the lobby, and is not denied for a
// grant the replica has not seen.
func TestKeepAliveOfAKnockOnAReplicaBehindTheGrant(t *testing.T) {
	ctx := t.Context()
	a, b, knock := knockBehindGrant(t, "/knock-behind/")
	if r, err := b.m.KeepAlive(ctx, knock.Session); err != nil || r.Outcome != admission.Lobby {
		t.Errorf("KeepAlive of the knock through a replica behind the grant = %+v, %v; want LOBBY", r, err)
	}
	if r, err := a.m.KeepAlive(ctx, knock.Session); err != nil || r.Outcome != admission.Lobby {
		t.Errorf("KeepAlive of the knock through the replica it was made on, after = %+v, %v; want LOBBY", r, err)
	}
}

// A knock made through one replica, by a grant that another replica, whose
// index applies each change set late, has yet to apply, is among the
// waiting of a watch of the call started from the beginning on that
// replica: a watch that left it out would never tell of it, and no one
// watching there would let the guest in.
func TestAWatchOnAReplicaBehindTheGrantTellsOfTheKnock(t *testing.T) {
	_, b, knock := knockBehindGrant(t, "/watch-knock-behind/")
	w, err := b.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, ev := range w.Initial {
		if ev.Kind == admission.EventWaiting && ev.Subject == "user:g" && ev.Session == knock.Session {
			return
		}
	}
	// The replica's picture of the sessions may have yet to hear of the
	// knock, and then tells of it as it does.
	for {
		select {
		case ev, ok := <-w.C:
			if !ok {
				t.Fatalf("the watch ended: %v", w.Err())
			}
			if ev.Kind == admission.EventKnocked && ev.Subject == "user:g" && ev.Session == knock.Session {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a watch on a replica behind the grant, whose initial state was %+v, told nothing of user:g waiting (knock %s)", w.Initial, knock.Session)
		}
	}
}

// memberPolicy registers call, which members join by call.join, on a lease
// of ten seconds.
func memberPolicy(call string) authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Resources:   []authz.Resource{{Name: call}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
}
