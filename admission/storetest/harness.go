package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
)

// waitAtMost bounds how long a case waits for an event or for another
// replica to catch up.
const waitAtMost = 15 * time.Second

// harness opens the stores of one case and closes them when it ends.
type harness struct {
	t   *testing.T
	ctx context.Context
	b   Backend
}

// node is a store under test with the events it reported.
type node struct {
	admission.Store
	t   *testing.T
	rec *recorder
	// seen is how many of rec's events the case has looked at.
	seen int
}

func (h *harness) open(b Bounds) *node {
	h.t.Helper()
	return h.track(h.b.Open(h.t, b))
}

func (h *harness) replica(of *node, b Bounds) *node {
	h.t.Helper()
	return h.track(h.b.Replica(h.t, of.Store, b))
}

func (h *harness) track(s admission.Store) *node {
	ctx, stop := context.WithCancel(context.Background())
	n := &node{Store: s, t: h.t, rec: newRecorder(admission.Feed(ctx, s))}
	h.t.Cleanup(func() {
		if err := s.Close(); err != nil {
			h.t.Errorf("Close: %v", err)
		}
		stop()
		select {
		case <-n.rec.done:
		case <-time.After(waitAtMost):
			h.t.Errorf("the events feed did not end %s after Close", waitAtMost)
		}
	})
	return n
}

// recorder drains a store's events, as the admission Manager would.
type recorder struct {
	mu      sync.Mutex
	events  []admission.StoreEvent
	changed chan struct{}
	done    chan struct{}
}

func newRecorder(c <-chan []admission.StoreEvent) *recorder {
	r := &recorder{changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for batch := range c {
			r.mu.Lock()
			for _, e := range batch {
				r.events = append(r.events, snapshot(e))
			}
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r
}

// snapshot copies what an event points to, as a consumer that keeps it must.
func snapshot(e admission.StoreEvent) admission.StoreEvent {
	if e.Session != nil {
		s := *e.Session
		e.Session = &s
	}
	if e.Knock != nil {
		k := *e.Knock
		e.Knock = &k
	}
	if e.Ended != nil {
		x := *e.Ended
		e.Ended = &x
	}
	return e
}

// await returns the events after the first from, once there are n of them.
func (r *recorder) await(t *testing.T, from, n int) []admission.StoreEvent {
	t.Helper()
	deadline := time.After(waitAtMost)
	for {
		r.mu.Lock()
		if len(r.events) >= from+n {
			out := slices.Clone(r.events[from : from+n])
			r.mu.Unlock()
			return out
		}
		got := slices.Clone(r.events[from:])
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("waited %s for %d events; got %d:\n%s", waitAtMost, n, len(got), describeAll(got))
		}
	}
}

// expect waits for the next events and compares them whole, in order.
func (n *node) expect(want ...admission.StoreEvent) {
	n.t.Helper()
	got := n.rec.await(n.t, n.seen, len(want))
	n.seen += len(want)
	for i := range want {
		if !sameEvent(got[i], want[i]) {
			n.t.Fatalf("events:\n%s\nwant:\n%s", describeAll(got), describeAll(want))
		}
	}
}

// expectLater waits for want among the events to come, passing over
// those before it.
func (n *node) expectLater(want admission.StoreEvent) {
	n.t.Helper()
	for {
		got := n.rec.await(n.t, n.seen, 1)
		n.seen++
		if sameEvent(got[0], want) {
			return
		}
	}
}

// expectAnyOrder waits for the next events and compares them whole, in any
// order: for events of separate sessions that no order binds.
func (n *node) expectAnyOrder(want ...admission.StoreEvent) {
	n.t.Helper()
	got := n.rec.await(n.t, n.seen, len(want))
	n.seen += len(want)
	left := slices.Clone(got)
	for _, w := range want {
		i := slices.IndexFunc(left, func(g admission.StoreEvent) bool { return sameEvent(g, w) })
		if i < 0 {
			n.t.Fatalf("events:\n%s\nwant, in any order:\n%s", describeAll(got), describeAll(want))
		}
		left = slices.Delete(left, i, i+1)
	}
}

// eventually waits for cond, which reads another replica's picture.
func (n *node) eventually(what string, cond func() bool) {
	n.t.Helper()
	deadline := time.Now().Add(waitAtMost)
	for !cond() {
		if time.Now().After(deadline) {
			n.t.Fatalf("waited %s for %s", waitAtMost, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func began(s admission.Session) admission.StoreEvent { return admission.StoreEvent{Session: &s} }

func ended(s admission.Session, why admission.Ending) admission.StoreEvent {
	return admission.StoreEvent{Session: &s, Ended: &why}
}

func knocked(k admission.Knock) admission.StoreEvent { return admission.StoreEvent{Knock: &k} }

func unknocked(k admission.Knock, why admission.Why) admission.StoreEvent {
	return admission.StoreEvent{Knock: &k, Ended: &admission.Ending{Why: why}}
}

// sameEvent compares events whole but for Time, which must be set.
func sameEvent(got, want admission.StoreEvent) bool {
	if got.Time.IsZero() {
		return false
	}
	if (got.Session == nil) != (want.Session == nil) || (got.Knock == nil) != (want.Knock == nil) || (got.Ended == nil) != (want.Ended == nil) {
		return false
	}
	if got.Session != nil && !sameSession(*got.Session, *want.Session) {
		return false
	}
	if got.Knock != nil && !sameKnock(*got.Knock, *want.Knock) {
		return false
	}
	return got.Ended == nil || *got.Ended == *want.Ended
}

func sameSession(a, b admission.Session) bool { return describeSession(a) == describeSession(b) }

func sameKnock(a, b admission.Knock) bool { return describeKnock(a) == describeKnock(b) }

// describeSession spells every field, times to the nanosecond in UTC and
// empty lists as none, so that equal values read the same whatever a
// backend's encoding did to their representation.
func describeSession(s admission.Session) string {
	return fmt.Sprintf("session{id=%s subject=%s call=%s caller=%q joined=%s expires=%s counted=%t exclusive=%v capabilities=%v revision=%d}",
		s.ID, s.Subject, s.Call, s.Caller, stamp(s.Joined), stamp(s.Expires), s.Counted, list(s.Exclusive), list(s.Capabilities), s.Revision)
}

func describeKnock(k admission.Knock) string {
	return fmt.Sprintf("knock{id=%s subject=%s call=%s caller=%q note=%q knocked=%s expires=%s}",
		k.ID, k.Subject, k.Call, k.Caller, k.Note, stamp(k.Knocked), stamp(k.Expires))
}

func describe(e admission.StoreEvent) string {
	var b strings.Builder
	switch {
	case e.Session != nil:
		b.WriteString(describeSession(*e.Session))
	case e.Knock != nil:
		b.WriteString(describeKnock(*e.Knock))
	}
	if e.Ended != nil {
		fmt.Fprintf(&b, " ended(why=%d outcome=%s block=%q)", e.Ended.Why, e.Ended.Outcome, e.Ended.BlockID)
	} else {
		b.WriteString(" began")
	}
	return b.String()
}

func describeAll(evs []admission.StoreEvent) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString("  " + describe(e) + "\n")
	}
	return b.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return time.Unix(0, t.UnixNano()).UTC().Format(time.RFC3339Nano)
}

func list(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// session is a session of subject in call that ends after lease, with every
// field set, so that a store that drops one fails.
func session(call, subject string, lease time.Duration) admission.Session {
	now := time.Now()
	return admission.Session{ID: newID(), Subject: subject, Call: call, Joined: now, Expires: now.Add(lease),
		Counted: true, Capabilities: []string{"call.join", "send-audio"}, Revision: 42}
}

func knock(call, subject, note string, lease time.Duration) admission.Knock {
	now := time.Now()
	return admission.Knock{ID: newID(), Subject: subject, Call: call, Note: note, Knocked: now, Expires: now.Add(lease)}
}

// by makes s a session of caller.
func by(caller string, s admission.Session) admission.Session {
	s.Caller = caller
	return s
}

// knockBy makes k a knock of caller.
func knockBy(caller string, k admission.Knock) admission.Knock {
	k.Caller = caller
	return k
}

// refusedShare fails the case unless err refuses caller for holding held
// of its share.
func (n *node) refusedShare(what string, err error, caller string, share, held int) {
	n.t.Helper()
	var e *admission.ShareError
	if !errors.As(err, &e) || *e != (admission.ShareError{Caller: caller, Share: share, Held: held}) {
		n.t.Errorf("%s: %v; want the share of caller %q refused, holding %d of %d", what, err, caller, held, share)
	}
}

// admit is the max of a call without a capacity.
const admit = 0

// capacity is the max of a call of n counted participants.
func capacity(n int) uint32 { return uint32(n) }

func (n *node) join(s admission.Session, max uint32) admission.Outcome {
	n.t.Helper()
	out, _, err := n.Join(context.Background(), s, max)
	if err != nil {
		n.t.Fatalf("Join(%s in %s): %v", s.Subject, s.Call, err)
	}
	return out
}

func (n *node) mustJoin(s admission.Session) {
	n.t.Helper()
	if out := n.join(s, admit); out != admission.Admitted {
		n.t.Fatalf("Join(%s in %s) = %s, want ADMITTED", s.Subject, s.Call, out)
	}
}

func (n *node) mustKnock(k admission.Knock) admission.Knock {
	n.t.Helper()
	got, err := n.Knock(context.Background(), k)
	if err != nil {
		n.t.Fatalf("Knock(%s in %s): %v", k.Subject, k.Call, err)
	}
	return got
}

func (n *node) mustEnd(id string, why admission.Ending) admission.Session {
	n.t.Helper()
	s, err := n.End(context.Background(), id, why)
	if err != nil {
		n.t.Fatalf("End(%s): %v", id, err)
	}
	return s
}

// sessionsOf returns call's sessions, described, in a stable order.
func sessionsOf(st admission.Store, call string) []string {
	var out []string
	for _, s := range st.Sessions(call) {
		out = append(out, describeSession(s))
	}
	slices.Sort(out)
	return out
}

func describeSessions(ss ...admission.Session) []string {
	var out []string
	for _, s := range ss {
		out = append(out, describeSession(s))
	}
	slices.Sort(out)
	return out
}

func knocksOf(st admission.Store, call string) []string {
	var out []string
	for _, k := range st.Knocks(call) {
		out = append(out, describeKnock(k))
	}
	slices.Sort(out)
	return out
}

func describeKnocks(ks ...admission.Knock) []string {
	var out []string
	for _, k := range ks {
		out = append(out, describeKnock(k))
	}
	slices.Sort(out)
	return out
}
