package etcdstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestFollowAfterCompaction: a store whose watch cannot resume, because etcd
// compacted the history it would resume from, lists the prefix again and
// reports the difference: what began, what was replaced, and, its reason
// gone with its lease, what ended as Lapsed; then that it lost track of
// what began and ended meanwhile.
func TestFollowAfterCompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	other := following(t, c, "/t/")
	go func() {
		for range admission.Feed(t.Context(), other) {
		}
	}()
	now := time.Now()
	sess := func(subject string) admission.Session {
		return admission.Session{ID: subject + "-" + fmt.Sprint(time.Now().UnixNano()), Subject: subject, Call: "call:x",
			Joined: now, Expires: now.Add(time.Minute), Revision: 1}
	}
	const admit = 0 // no capacity
	gone, kept, replaced := sess("user:gone"), sess("user:kept"), sess("user:replaced")
	for _, s := range []admission.Session{gone, kept, replaced} {
		if _, _, err := other.Join(ctx, s, admit); err != nil {
			t.Fatal(err)
		}
	}

	var logs syncBuffer
	s := newStore(c.Client(t), Options{Prefix: "/t/", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := s.load(ctx); err != nil {
		t.Fatal(err)
	}
	// The store is not following: what happens now, it does not see.
	if _, err := other.End(ctx, gone.ID, admission.Ending{Why: admission.Left}); err != nil {
		t.Fatal(err)
	}
	again := sess("user:replaced")
	if _, _, err := other.Join(ctx, again, admit); err != nil {
		t.Fatal(err)
	}
	newcomer := sess("user:new")
	if _, _, err := other.Join(ctx, newcomer, admit); err != nil {
		t.Fatal(err)
	}
	k := admission.Knock{ID: "k1", Subject: "user:k", Call: "call:x", Knocked: now, Expires: now.Add(time.Minute)}
	if _, err := other.Knock(ctx, k); err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	resp, err := cli.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	s.done.Add(1)
	go s.follow()
	defer s.Close()
	events := admission.Feed(t.Context(), s)
	var got []string
	describe := func(e admission.StoreEvent) string {
		if e.Lost {
			return "lost"
		}
		id := ""
		if e.Session != nil {
			id = e.Session.ID
		} else {
			id = e.Knock.ID
		}
		if e.Ended == nil {
			return "began " + id
		}
		return fmt.Sprintf("ended %s why=%d", id, e.Ended.Why)
	}
	// The first batch is what the store listed when it opened.
	want := []string{"began " + gone.ID, "began " + kept.ID, "began " + replaced.ID}
	for len(got) < len(want)+6 {
		select {
		case batch := <-events:
			for _, e := range batch {
				got = append(got, describe(e))
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("events: %v", got)
		}
	}
	first, rest := got[:3], got[3:]
	slices.Sort(first)
	slices.Sort(want)
	if !slices.Equal(first, want) {
		t.Errorf("the store opened with %v, want %v", first, want)
	}
	// Endings come before beginnings; each in no particular order. Then
	// the store says it lost track of what began and ended meanwhile.
	ends, begins, lost := rest[:2], rest[2:5], rest[5]
	slices.Sort(ends)
	slices.Sort(begins)
	wantEnds := []string{fmt.Sprintf("ended %s why=%d", gone.ID, admission.Lapsed), fmt.Sprintf("ended %s why=%d", replaced.ID, admission.Replaced)}
	slices.Sort(wantEnds)
	wantBegins := []string{"began " + again.ID, "began " + newcomer.ID, "began k1"}
	slices.Sort(wantBegins)
	if !slices.Equal(ends, wantEnds) || !slices.Equal(begins, wantBegins) || lost != "lost" {
		t.Errorf("after the relist: %v, want %v then %v, then lost", rest, wantEnds, wantBegins)
	}
	if got, want := len(s.Sessions("call:x")), 3; got != want {
		t.Errorf("Sessions = %d, want %d", got, want)
	}
	if _, ok := s.KnockOf("k1"); !ok {
		t.Error("the knock made while the store was not following is not live")
	}
	if !strings.Contains(logs.String(), "relist=true") {
		t.Errorf("the store did not say it listed again:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
