package authz_test

import (
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// batchWorld is an index at revision 7 where user:alice joins call:1 and
// user:carol does not, with the change set that grants carol the member
// role at revision 8, and a batch of 200 checks (four strides) that asks
// about both, carol first.
func batchWorld(t *testing.T) (*authz.Index, authz.ChangeSet, []authz.Query) {
	t.Helper()
	x, err := authz.NewIndex(authz.Snapshot{
		Revision:    7,
		Permissions: []authz.Permission{{Name: "join-call"}},
		Resources:   []authz.Resource{{Name: "account:acme", Parent: "root"}, {Name: "call:1", Parent: "account:acme"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"join-call"}}},
		Grants:      []authz.Grant{{Subject: "user:alice", Role: "member", Resource: "account:acme"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	grant := authz.ChangeSet{Revision: 8, Changes: []authz.Change{
		{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:carol", Role: "member", Resource: "call:1"}},
	}}
	qs := make([]authz.Query, 200)
	for i := range qs {
		qs[i] = authz.Query{Subject: "user:carol", Permission: "join-call", Resource: "call:1"}
		if i%2 == 1 {
			qs[i].Subject = "user:alice"
		}
	}
	return x, grant, qs
}

// wantBatchAt checks that a batch's answers are those Check gives at rev:
// alice joins, and carol joins from revision 8 on.
func wantBatchAt(t *testing.T, got []authz.Decision, errs []error, gotRev, rev authz.Revision) {
	t.Helper()
	if errs != nil {
		t.Fatalf("errors: %v", errs)
	}
	if gotRev != rev {
		t.Errorf("the batch was answered at revision %d, want %d", gotRev, rev)
	}
	for i, d := range got {
		want := i%2 == 1 || rev >= 8
		if d.Allowed != want {
			t.Fatalf("check %d (of %d) allowed %v at revision %d, want %v: every answer of a batch is at one revision", i, len(got), d.Allowed, gotRev, want)
		}
	}
}

// batchAnswer is a CheckBatch's answer.
type batchAnswer struct {
	ds   []authz.Decision
	errs []error
	rev  authz.Revision
}

// checkBatchAsync asks x the batch qs, and sends its answer once it has
// one.
func checkBatchAsync(x *authz.Index, qs []authz.Query) <-chan batchAnswer {
	batch := make(chan batchAnswer, 1)
	go func() {
		ds, errs, rev := x.CheckBatch(qs)
		batch <- batchAnswer{ds, errs, rev}
	}()
	return batch
}

// The DESIGN's "Checks never wait on a write": a batch that holds the index
// for long (a thousand checks of a subject with a hundred roles on each level
// of a deep path take a second) does so under the lock of the index's long
// readers, which an Apply takes first, and not under Check's: a Check is
// answered while the batch runs and an Apply waits for it.
func TestALongCheckBatchHoldsNoCheckBack(t *testing.T) {
	x, grant, qs := batchWorld(t)
	moved, resume := make(chan bool, 1), make(chan struct{})
	authz.SetBatchHold(t, 0, func() {}, func(waiting bool) {
		moved <- waiting
		<-resume
	})
	batch := checkBatchAsync(x, qs)
	select {
	case waiting := <-moved:
		if waiting {
			t.Fatal("the batch found an Apply waiting, and none was")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the batch never moved off the lock Check takes")
	}
	applied := make(chan error, 1)
	go func() { applied <- x.Apply(grant) }()
	for !authz.ApplyWaits(x) {
		time.Sleep(time.Millisecond)
	}
	checked := make(chan authz.Decision, 1)
	go func() {
		d, _, _ := x.Check(authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:1"})
		checked <- d
	}()
	select {
	case d := <-checked:
		if !d.Allowed {
			t.Errorf("Check beside the batch: %+v, want alice allowed", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Check waited for a batch that an Apply waits for")
	}
	select {
	case err := <-applied:
		t.Fatalf("the Apply went on under the batch: %v", err)
	default:
	}
	close(resume)
	a := <-batch
	wantBatchAt(t, a.ds, a.errs, a.rev, 7)
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if rev := x.Revision(); rev != 8 {
		t.Errorf("after the batch, the index is at revision %d, want 8", rev)
	}
}

// A long batch that finds an Apply holding the long readers' lock and
// waiting for Check's, which every Check then queues behind, lets it go
// first, and answers every check again at the revision it leaves: none at
// the revision before.
func TestALongCheckBatchLetsAWaitingApplyInAndStartsAgain(t *testing.T) {
	x, grant, qs := batchWorld(t)
	applied := make(chan error, 1)
	moved := make(chan bool, 1)
	first := true
	authz.SetBatchHold(t, 0, func() {
		if !first {
			return
		}
		first = false
		go func() { applied <- x.Apply(grant) }()
		for !authz.ApplyWaitsForMu(x) {
			time.Sleep(time.Millisecond)
		}
	}, func(waiting bool) { moved <- waiting })
	a := <-checkBatchAsync(x, qs)
	if waiting := <-moved; !waiting {
		t.Error("the batch moved past an Apply that waited for it")
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	wantBatchAt(t, a.ds, a.errs, a.rev, 8)
}

// DESIGN: Checks "never wait on a write or on a slow admin read", and nor
// does a batch: while an Apply waits for an admin read to end, Checks go
// on under their own lock, and so does a long batch, to its end, at the
// revision it started at.
func TestALongCheckBatchWaitsForNoAdminRead(t *testing.T) {
	x, grant, qs := batchWorld(t)
	release := authz.HoldView(x)
	defer func() { release() }() // once, should the test end early
	applied := make(chan error, 1)
	go func() { applied <- x.Apply(grant) }()
	for !authz.ApplyWaits(x) {
		time.Sleep(time.Millisecond)
	}
	yields := 0
	authz.SetBatchHold(t, 0, func() { yields++ }, func(bool) { t.Error("the batch moved to the lock an admin read holds") })
	select {
	case a := <-checkBatchAsync(x, qs):
		wantBatchAt(t, a.ds, a.errs, a.rev, 7)
	case <-time.After(10 * time.Second):
		t.Fatal("the batch waited for an admin read")
	}
	if yields == 0 {
		t.Error("the batch never looked whether it could leave the lock Check takes")
	}
	release()
	release = func() {}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
}

// A batch that stays short is answered under Check's lock from first to
// last, at the revision it started at.
func TestAShortCheckBatchIsAnsweredAtOneRevision(t *testing.T) {
	x, _, qs := batchWorld(t)
	authz.SetBatchHold(t, time.Hour, func() { t.Error("a batch shorter than an hour looked to leave Check's lock") },
		func(bool) { t.Error("a batch shorter than an hour moved to the long readers' lock") })
	ds, errs, rev := x.CheckBatch(qs)
	wantBatchAt(t, ds, errs, rev, 7)
}
