package etcdstore_test

import (
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestAWatchResumedOnALaggingReplicaHearsOfWhatFollowedItsRevision: a WatchCall stream on replica A has
// received an event at revision R when A stops ("resume the watch on
// another"). Meanwhile user:a leaves and user:c joins through replica C,
// whose index is a little behind A's (it applies R later). Once C has
// applied R, the stream resumes on C from R. It must hear that user:a left
// and that user:c is present.
func TestAWatchResumedOnALaggingReplicaHearsOfWhatFollowedItsRevision(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/resume/")
	lag := startLaggingReplica(t, c, "/resume/", 500*time.Millisecond)
	by := authz.Author{Caller: "test"}
	const call = "call:acme:1"
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.speak"}},
		Resources:   []authz.Resource{{Name: call}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "speaker", Scope: "root", Permissions: []string{"call.speak"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var rev authz.Revision
	for _, u := range []string{"user:a", "user:b", "user:c"} {
		r, err := a.eng.Grant(ctx, by, authz.Grant{Subject: u, Role: "member", Resource: call})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	ra, err := a.m.Join(ctx, "user:a", call, rev)
	if err != nil || ra.Outcome != admission.Admitted {
		t.Fatalf("Join user:a: %+v %v", ra, err)
	}
	if rb, err := a.m.Join(ctx, "user:b", call, rev); err != nil || rb.Outcome != admission.Admitted {
		t.Fatalf("Join user:b: %+v %v", rb, err)
	}

	wa, err := a.m.Watch(call, 0)
	if err != nil {
		t.Fatal(err)
	}
	// user:b gains a capability at R; the stream on A tells it at R.
	R, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:b", Role: "speaker", Resource: call})
	if err != nil {
		t.Fatal(err)
	}
	var last authz.Revision
	for got := false; !got; {
		select {
		case ev := <-wa.C:
			last = max(last, ev.Revision)
			got = ev.Kind == admission.EventChanged && ev.Subject == "user:b"
		case <-time.After(5 * time.Second):
			t.Fatal("no CHANGED for user:b on A")
		}
	}
	if last != R {
		t.Fatalf("last revision received %d, want %d", last, R)
	}
	wa.Close() // A stops; the media server resumes on the other replica

	// Within the other replica's lag: user:a leaves, user:c joins there.
	if err := lag.m.Leave(ctx, ra.Session); err != nil {
		t.Fatal(err)
	}
	rc, err := lag.m.Join(ctx, "user:c", call, 0)
	if err != nil || rc.Outcome != admission.Admitted {
		t.Fatalf("Join user:c on the lagging replica: %+v %v", rc, err)
	}
	t.Logf("lagging replica's index at %d when user:a left and user:c joined (R = %d)", lag.eng.Index().Revision(), R)

	if err := lag.eng.WaitApplied(ctx, R); err != nil {
		t.Fatal(err)
	}
	wc, err := lag.m.Watch(call, R)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	left, present := false, false
	for _, ev := range wc.Initial {
		t.Logf("resumed initial: kind %d subject %s revision %d reset %t", ev.Kind, ev.Subject, ev.Revision, ev.Reset)
		if ev.Kind == admission.EventLeft && ev.Subject == "user:a" {
			left = true
		}
		if ev.Kind == admission.EventPresent && ev.Subject == "user:c" {
			present = true
		}
		if ev.Kind == admission.EventSynced && ev.Reset {
			left, present = true, true // a whole state would do
		}
	}
	if !left {
		t.Errorf("the stream resumed from %d on the other replica does not say user:a left", R)
	}
	if !present {
		t.Errorf("the stream resumed from %d on the other replica does not say user:c is in the call", R)
	}
}

// TestAWatchResumedOnALaggingReplicaHearsOfAnEjection: the stream on A has received revision R
// when it ends. user:a is then banned through A (revision R+1) and ejected.
// The stream resumes from R on replica C, whose index applies change sets a
// little late: it must hear of the ejection, which the media server must
// act on (the LiveKit token cannot be recalled).
func TestAWatchResumedOnALaggingReplicaHearsOfAnEjection(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/resume2/")
	lag := startLaggingReplica(t, c, "/resume2/", 500*time.Millisecond)
	by := authz.Author{Caller: "test"}
	const call = "call:acme:1"
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.speak"}},
		Resources:   []authz.Resource{{Name: call}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "speaker", Scope: "root", Permissions: []string{"call.speak"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var rev authz.Revision
	for _, u := range []string{"user:a", "user:b"} {
		r, err := a.eng.Grant(ctx, by, authz.Grant{Subject: u, Role: "member", Resource: call})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	ra, err := a.m.Join(ctx, "user:a", call, rev)
	if err != nil || ra.Outcome != admission.Admitted {
		t.Fatalf("Join user:a: %+v %v", ra, err)
	}
	if rb, err := a.m.Join(ctx, "user:b", call, rev); err != nil || rb.Outcome != admission.Admitted {
		t.Fatalf("Join user:b: %+v %v", rb, err)
	}
	wa, err := a.m.Watch(call, 0)
	if err != nil {
		t.Fatal(err)
	}
	R, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:b", Role: "speaker", Resource: call})
	if err != nil {
		t.Fatal(err)
	}
	for got := false; !got; {
		select {
		case ev := <-wa.C:
			got = ev.Kind == admission.EventChanged && ev.Subject == "user:b" && ev.Revision == R
		case <-time.After(5 * time.Second):
			t.Fatal("no CHANGED for user:b at R on A")
		}
	}
	wa.Close() // the stream ends having received R

	ban, _, err := a.eng.Block(ctx, by, authz.Block{Subject: "user:a", Resource: call})
	if err != nil {
		t.Fatal(err)
	}
	// A ejects user:a; wait until the session is gone from etcd.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, err := a.m.KeepAlive(ctx, ra.Session); err == nil && r.Outcome == admission.Blocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("user:a was not ejected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("ban at %d; lagging replica's index at %d when the ejection reached it", ban, lag.eng.Index().Revision())
	if err := lag.eng.WaitApplied(ctx, ban); err != nil {
		t.Fatal(err)
	}
	wc, err := lag.m.Watch(call, R)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	ejected := false
	for _, ev := range wc.Initial {
		t.Logf("resumed initial: kind %d subject %s revision %d reset %t", ev.Kind, ev.Subject, ev.Revision, ev.Reset)
		if ev.Kind == admission.EventEjected && ev.Subject == "user:a" || ev.Kind == admission.EventSynced && ev.Reset {
			ejected = true
		}
	}
	if !ejected {
		t.Errorf("the stream resumed from %d on the other replica does not say user:a was ejected (banned at %d)", R, ban)
	}
}
