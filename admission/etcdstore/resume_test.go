package etcdstore_test

import (
	"context"
	"iter"
	"slices"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
)

// resumeWorld is a call on two replicas of one cluster, the second applying
// change sets two seconds late, with user:a and user:b in the call
// through the first. A watch on the first has received user:b's change at
// revision r and ended, as a server that stops ends it ("resume the watch on
// another").
type resumeWorld struct {
	a, lag  replica
	by      authz.Author
	session string // user:a's
	r       authz.Revision
}

const resumeCall = "call:acme:1"

func startResumeWorld(t *testing.T, prefix string, members ...string) resumeWorld {
	t.Helper()
	ctx := t.Context()
	a, lag, by := startResumePair(t, prefix, 2*time.Second)
	w := resumeWorld{a: a, lag: lag, by: by}
	var rev authz.Revision
	for _, u := range append([]string{"user:a", "user:b"}, members...) {
		r, err := w.a.eng.Grant(ctx, w.by, authz.Grant{Subject: u, Role: "member", Resource: resumeCall})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := w.lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"user:a", "user:b"} {
		r, err := w.a.m.Join(ctx, "", u, resumeCall, rev)
		if err != nil || r.Outcome != admission.Admitted {
			t.Fatalf("Join %s: %+v %v", u, r, err)
		}
		if u == "user:a" {
			w.session = r.Session
		}
	}
	wa, err := w.a.m.Watch(resumeCall, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	if w.r, err = w.a.eng.Grant(ctx, w.by, authz.Grant{Subject: "user:b", Role: "speaker", Resource: resumeCall}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-wa.C:
			if ev.Kind == admission.EventChanged && ev.Subject == "user:b" && ev.Revision == w.r {
				return w
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the watch on the first replica told no change of user:b")
		}
	}
}

// resume resumes the watch from r on the lagging replica, once it has
// applied through, and reports whether its initial state holds an event
// that has, or a whole state.
func (w resumeWorld) resume(t *testing.T, through authz.Revision, has func(admission.Event) bool) bool {
	t.Helper()
	if err := w.lag.eng.WaitApplied(t.Context(), through); err != nil {
		t.Fatal(err)
	}
	wc, err := w.lag.m.Watch(resumeCall, w.r)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	for _, ev := range wc.Initial {
		if has(ev) || ev.Kind == admission.EventSynced && ev.Reset {
			return true
		}
	}
	t.Logf("the resumed watch's initial state: %+v", wc.Initial)
	return false
}

// Within the lagging replica's lag, user:a leaves and user:c joins through
// it: told there below r, they are told to the watch that resumes there
// from r all the same.
func TestAWatchResumedOnALaggingReplicaHearsOfWhatFollowedItsRevision(t *testing.T) {
	w := startResumeWorld(t, "/resume/", "user:c")
	ctx := t.Context()
	if err := w.lag.m.Leave(ctx, w.session); err != nil {
		t.Fatal(err)
	}
	rc, err := w.lag.m.Join(ctx, "", "user:c", resumeCall, 0)
	if err != nil || rc.Outcome != admission.Admitted {
		t.Fatalf("Join user:c on the lagging replica: %+v %v", rc, err)
	}
	if told := w.lag.eng.Index().Revision(); told >= w.r {
		t.Fatalf("the lagging replica had applied %d, the watch's revision: the test needs it behind", told)
	}
	if !w.resume(t, w.r, func(ev admission.Event) bool { return ev.Kind == admission.EventLeft && ev.Subject == "user:a" }) {
		t.Errorf("the watch resumed from %d on the lagging replica does not say user:a left", w.r)
	}
	if !w.resume(t, w.r, func(ev admission.Event) bool { return ev.Kind == admission.EventPresent && ev.Subject == "user:c" }) {
		t.Errorf("the watch resumed from %d on the lagging replica does not say user:c is in the call", w.r)
	}
}

// user:a is banned through the first replica after r, and ejected: the
// watch resumed from r on the lagging replica, which heard of the ejection
// before it applied the ban, says so. The media server must act on it: a
// LiveKit token cannot be recalled.
func TestAWatchResumedOnALaggingReplicaHearsOfAnEjection(t *testing.T) {
	w := startResumeWorld(t, "/resume2/")
	ctx := t.Context()
	ban, _, err := w.a.eng.Block(ctx, w.by, authz.Block{Subject: "user:a", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, err := w.a.m.KeepAlive(ctx, w.session); err == nil && r.Outcome == admission.Blocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("user:a was not ejected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !w.resume(t, ban, func(ev admission.Event) bool { return ev.Kind == admission.EventEjected && ev.Subject == "user:a" }) {
		t.Errorf("the watch resumed from %d on the lagging replica does not say user:a was ejected (banned at %d)", w.r, ban)
	}
}

// A watch that was told, through one replica, of a participant's new
// capability at revision r resumes from r on a replica whose index has yet
// to apply it: its initial state tells the participant with that
// capability, not as it was before r, which a media server would take for
// the participant's state and act on.
func TestAWatchResumedOnAReplicaBehindItsRevisionTellsNothingOlder(t *testing.T) {
	ctx := t.Context()
	a, lag, by := startResumePair(t, "/resume-behind/", 300*time.Millisecond)
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:b", Role: "member", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if r, err := a.m.Join(ctx, "", "user:b", resumeCall, rev); err != nil || r.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v %v", r, err)
	}
	r, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:b", Role: "speaker", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	if told := lag.eng.Index().Revision(); told >= r {
		t.Fatalf("the lagging replica had applied %d, the watch's revision: the test needs it behind", told)
	}
	wc, err := lag.m.Watch(resumeCall, r)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	for _, ev := range wc.Initial {
		if ev.Subject == "user:b" && ev.Kind == admission.EventPresent && !slices.Contains(ev.Capabilities, "call.speak") {
			t.Errorf("the watch resumed from %d tells user:b present with %v, at revision %d; want call.speak, granted at %d", r, ev.Capabilities, ev.Revision, r)
		}
	}
}

// A call registered through one replica is watched, a moment after, through
// another whose index applies each change set late: the watch starts,
// rather than being refused NOT_FOUND for a call that is registered.
func TestAWatchOfACallRegisteredElsewhereAMomentAgoStarts(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/watch-new-call/")
	lag := startLaggingReplica(t, c, "/watch-new-call/", 300*time.Millisecond)
	by := authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if rev, err = a.eng.PutResource(ctx, by, authz.Resource{Name: resumeCall}); err != nil {
		t.Fatal(err)
	}
	if at := lag.eng.Index().Revision(); at >= rev {
		t.Fatalf("the lagging replica had applied %d, the call's registration: the test needs it behind", at)
	}
	w, err := lag.m.Watch(resumeCall, 0)
	if err != nil {
		t.Fatalf("WatchCall of a call registered through another replica a moment ago = %v; want it watched", err)
	}
	w.Close()
}

// A watch resumes from r on a replica that heard of user:a leaving below r,
// once the change log no longer holds r (compacted past it): when r was
// committed can no longer be read, so the watch cannot tell what followed
// it, and it sends the whole state rather than leave user:a in the call.
func TestAWatchResumedFromACompactedRevisionOnALaggingReplicaLosesNoEnding(t *testing.T) {
	ctx := t.Context()
	a, lag, by := startResumePair(t, "/resume-compacted/", 150*time.Millisecond)
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	joined, err := a.m.Join(ctx, "", "user:a", resumeCall, rev)
	if err != nil || joined.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v %v", joined, err)
	}
	r, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "speaker", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.m.Leave(ctx, joined.Session); err != nil {
		t.Fatal(err)
	}
	if told := lag.eng.Index().Revision(); told >= r {
		t.Fatalf("the lagging replica had applied %d, the watch's revision: the test needs it behind", told)
	}
	if err := lag.eng.WaitApplied(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := a.eng.Backend().(storage.Backend).Compact(ctx, r); err != nil {
		t.Fatal(err)
	}
	w, err := lag.m.Watch(resumeCall, r)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, ev := range w.Initial {
		if ev.Kind == admission.EventLeft && ev.Subject == "user:a" || ev.Kind == admission.EventSynced && ev.Reset {
			return
		}
	}
	t.Errorf("the watch resumed from %d, compacted away, on a replica that heard of user:a leaving below it neither says user:a left nor sends the whole state: %+v", r, w.Initial)
}

// gated is a replica's backend whose index feed starts only once open is
// closed: a replica cut off from the change log, whose feed then finds the
// log compacted past its index and loads a snapshot.
type gated struct {
	*etcd.Store
	open <-chan struct{}
}

func (g gated) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		select {
		case <-g.open:
		case <-ctx.Done():
			return
		}
		for cs, err := range g.Store.Watch(ctx, after) {
			if !yield(cs, err) {
				return
			}
		}
	}
}

// A watch told through one replica that user:a may speak (at r), and then
// cut, resumes from r on a replica whose index missed both that grant and
// its revocation, and loaded a snapshot past them when it found the change
// log compacted past its own revision: it is told user:a
// speaks no longer, or sent the whole state, rather than left believing
// user:a may speak.
func TestAWatchResumedOnAReplicaThatLoadedASnapshotPastItsRevision(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	const prefix = "/resume-snapshot/"
	a := startReplica(t, c, prefix)
	by := authz.Author{Caller: "test"}
	p := resumePolicy()
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	joined, err := a.m.Join(ctx, "", "user:a", resumeCall, rev)
	if err != nil || joined.Outcome != admission.Admitted {
		t.Fatalf("Join: %+v %v", joined, err)
	}
	open := make(chan struct{})
	b := startReplicaOn(t, c, prefix, gated{replicaBackend(t, c, prefix), open})
	// The log is compacted past the replica's index, not past r.
	missed, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:z", Role: "member", Resource: resumeCall})
	if err != nil {
		t.Fatal(err)
	}
	speaker := authz.Grant{Subject: "user:a", Role: "speaker", Resource: resumeCall}
	r, err := a.eng.Grant(ctx, by, speaker)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := a.eng.Revoke(ctx, by, speaker)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.eng.Backend().(storage.Backend).Compact(ctx, missed); err != nil {
		t.Fatal(err)
	}
	close(open)
	if err := b.eng.WaitApplied(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	w, err := b.m.Watch(resumeCall, r)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, ev := range w.Initial {
		if ev.Kind == admission.EventPresent && ev.Subject == "user:a" && !slices.Contains(ev.Capabilities, "call.speak") ||
			ev.Kind == admission.EventSynced && ev.Reset {
			return
		}
	}
	t.Errorf("the watch resumed from %d, on a replica whose index loaded a snapshot at %d, neither tells user:a without call.speak (revoked at %d) nor sends the whole state: %+v",
		r, b.eng.Index().Revision(), revoked, w.Initial)
}

// startResumePair starts a cluster and two replicas of it under
// resumePolicy, the second applying change sets lag late.
func startResumePair(t *testing.T, prefix string, lag time.Duration) (a, late replica, by authz.Author) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	a, late, by = startReplica(t, c, prefix), startLaggingReplica(t, c, prefix, lag), authz.Author{Caller: "test"}
	if _, _, err := a.eng.ApplyPolicy(t.Context(), by, resumePolicy(), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	return a, late, by
}

// resumePolicy is the policy of the resume tests: members join resumeCall,
// speakers speak there.
func resumePolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.speak"}},
		Resources:   []authz.Resource{{Name: resumeCall}},
		Roles: []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "speaker", Scope: "root", Permissions: []string{"call.speak"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second}},
	}
}
