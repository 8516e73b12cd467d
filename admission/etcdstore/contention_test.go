package etcdstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestADenyOfAGuestKnockingAgainAndAgainElsewhere: a guest whose media
// server knocks again and again through one replica, each time with a new
// note, is denied through another all the same: what the guest writes may
// make a Deny read its knock again, never give up.
func TestADenyOfAGuestKnockingAgainAndAgainElsewhere(t *testing.T) {
	ctx := context.Background()
	open := opener(t, "/deny/")
	guest, moderator := open(etcdstore.Options{}), open(etcdstore.Options{})
	defer meanwhile(func(i int) {
		now := time.Now()
		guest.Knock(ctx, admission.Knock{ID: fmt.Sprintf("k%d", i), Subject: "user:g", Call: "call:x",
			Note: fmt.Sprintf("let me in (%d)", i), Knocked: now, Expires: now.Add(time.Minute)})
	})()
	for round := range 60 {
		for !waits(moderator, "call:x", "user:g") {
			time.Sleep(time.Millisecond)
		}
		found, err := moderator.Unknock(ctx, "call:x", "user:g", admission.Denied)
		if err != nil || !found {
			t.Fatalf("round %d: Unknock of a guest knocking again and again elsewhere = %t, %v; want it denied", round, found, err)
		}
	}
}

// opener starts a cluster and returns what opens a store of it under
// prefix, closed when the test ends.
func opener(t *testing.T, prefix string) func(etcdstore.Options) *etcdstore.Store {
	c := etcdtest.Start(t, 1)
	return func(opts etcdstore.Options) *etcdstore.Store {
		opts.Prefix = prefix
		s, err := etcdstore.New(context.Background(), c.Client(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

// meanwhile calls f(0), f(1), ... in a goroutine of its own until the
// function it returns is called, which returns once f has.
func meanwhile(f func(i int)) (stop func()) {
	halt, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-halt:
				return
			default:
			}
			f(i)
		}
	}()
	return func() { close(halt); <-stopped }
}

// waits reports whether subject waits in call's lobby, in s's picture.
func waits(s *etcdstore.Store, call, subject string) bool {
	for _, k := range s.Knocks(call) {
		if k.Subject == subject {
			return true
		}
	}
	return false
}

// TestAKnockRenewedWithNothingNewIsWrittenOnce: a guest whose media server
// knocks again with the note it knocked with, within its knock's lease,
// costs etcd one write, of the knock's new expiry, which the lobby's list
// gives on every replica; the knock stays, renewed.
func TestAKnockRenewedWithNothingNewIsWrittenOnce(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	cli := c.Client(t)
	s, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: "/reknock/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now()
	k := admission.Knock{ID: "k1", Subject: "user:g", Call: "call:x", Caller: "sfu", Note: "let me in", Knocked: now, Expires: now.Add(time.Minute)}
	if _, err := s.Knock(ctx, k); err != nil {
		t.Fatal(err)
	}
	revision := func() int64 {
		t.Helper()
		resp, err := cli.Get(ctx, "/reknock/", clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	before := revision()
	again := k
	again.ID, again.Knocked = "k2", time.Now()
	again.Expires = again.Knocked.Add(time.Minute)
	got, err := s.Knock(ctx, again)
	if err != nil || got.ID != k.ID || !got.Expires.Equal(again.Expires) {
		t.Fatalf("Knock again = %+v, %v; want knock %s renewed to %v", got, err, k.ID, again.Expires)
	}
	if after := revision(); after != before+1 {
		t.Errorf("Knock again with nothing new moved etcd from revision %d to %d; want one write", before, after)
	}
	if got, ok := s.KnockOf(k.ID); !ok || got.Note != k.Note {
		t.Errorf("KnockOf(%s) = %+v, %t; want it waiting still", k.ID, got, ok)
	}
}

// TestANewKnockIsNotHeldUpByAnotherGuestsRenewals: a new knock counts the
// call's lobby, and conflicts only with a knock made since; a guest whose
// media server renews its knock again and again, each time with a new
// note, makes no one else's knock read the lobby again, even through a
// replica that would read it only once.
func TestANewKnockIsNotHeldUpByAnotherGuestsRenewals(t *testing.T) {
	ctx := context.Background()
	open := opener(t, "/renewals/")
	guest, door := open(etcdstore.Options{}), open(etcdstore.Options{RetryConflicts: 1})
	knock := func(s *etcdstore.Store, subject, note string) error {
		now := time.Now()
		_, err := s.Knock(ctx, admission.Knock{ID: subject + "-" + note, Subject: subject, Call: "call:x", Note: note, Knocked: now, Expires: now.Add(time.Minute)})
		return err
	}
	if err := knock(guest, "user:g", "0"); err != nil {
		t.Fatal(err)
	}
	defer meanwhile(func(i int) { knock(guest, "user:g", fmt.Sprint(i+1)) })()
	for i := range 30 {
		if err := knock(door, fmt.Sprintf("user:%d", i), "0"); err != nil {
			t.Fatalf("knock %d beside a guest renewing its knock: %v; want it waiting", i, err)
		}
	}
}

// TestAJoinNoOneElseDecidesIsNotHeldUpByARejoiningParticipant: a join into
// a call without max_participants, holding no exclusive role, is admitted
// whoever else is in the call, and conflicts with none of them; a
// participant whose media server joins it again and again through one
// replica makes no one else's join read the call again, even through a
// replica that would read it only once.
func TestAJoinNoOneElseDecidesIsNotHeldUpByARejoiningParticipant(t *testing.T) {
	ctx := context.Background()
	open := opener(t, "/rejoin/")
	participant, door := open(etcdstore.Options{}), open(etcdstore.Options{RetryConflicts: 1})
	const noMax = 0
	join := func(s *etcdstore.Store, id, subject string) (admission.Outcome, error) {
		now := time.Now()
		out, _, err := s.Join(ctx, admission.Session{ID: id, Subject: subject, Call: "call:x", Joined: now, Expires: now.Add(time.Minute), Counted: true}, noMax)
		return out, err
	}
	defer meanwhile(func(i int) { join(participant, fmt.Sprintf("h%d", i), "user:h") })()
	for i := range 30 {
		if out, err := join(door, fmt.Sprintf("s%d", i), fmt.Sprintf("user:%d", i)); err != nil || out != admission.Admitted {
			t.Fatalf("join %d beside a participant joining again and again = %s, %v; want ADMITTED", i, out, err)
		}
	}
}
