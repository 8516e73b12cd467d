package admission_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// A WatchCall stream holds a buffer of DefaultWatchBuffer events, and a
// node at most DefaultMaxWatchers of them: what the defaults let call
// watches hold stays in tens of MiB.
func TestCallWatchesHoldTensOfMiBAtMostByDefault(t *testing.T) {
	w := newWorld(t)
	watch := w.watch("call:acme:1")
	if got := cap(watch.C); got != admission.DefaultWatchBuffer || got > 256 {
		t.Errorf("a watch's buffer holds %d events, want DefaultWatchBuffer (%d), at most 256", got, admission.DefaultWatchBuffer)
	}
	const bound = 64 << 20
	held := admission.DefaultMaxWatchers * admission.DefaultWatchBuffer * int(unsafe.Sizeof(admission.Event{}))
	if held > bound {
		t.Errorf("%d watches of %d events of %d bytes hold %d MiB, more than %d MiB",
			admission.DefaultMaxWatchers, admission.DefaultWatchBuffer, unsafe.Sizeof(admission.Event{}), held>>20, bound>>20)
	}
}

// A watch whose reader stops is cut once its buffer is full, with
// ResourceExhausted saying it fell behind, and resumes from the last
// revision it received.
func TestAWatchThatFallsBehindIsCutAndResumes(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	w.grant("user:busy", "member", "call:acme:1")
	in := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	last := watch.Initial[len(watch.Initial)-1].Revision
	// More joins and leaves than the buffer holds, none read.
	for range admission.DefaultWatchBuffer {
		r := w.wantJoin("user:busy", "call:acme:1", admission.Admitted)
		if err := w.m.Leave(w.ctx, r.Session); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for ev := range watch.C {
		n++
		last = max(last, ev.Revision)
	}
	if n != admission.DefaultWatchBuffer {
		t.Errorf("the watch delivered %d events before it was cut, want its buffer's %d", n, admission.DefaultWatchBuffer)
	}
	err := watch.Err()
	if authz.CodeOf(err) != authz.ResourceExhausted || authz.KindOf(err) != authz.KindWatchFellBehind {
		t.Fatalf("the cut watch's error: %v, want ResourceExhausted %s", err, authz.KindWatchFellBehind)
	}
	resumed, err := w.m.Watch("call:acme:1", last)
	if err != nil {
		t.Fatalf("resuming from revision %d: %v", last, err)
	}
	defer resumed.Close()
	synced := resumed.Initial[len(resumed.Initial)-1]
	if synced.Kind != admission.EventSynced || synced.Reset {
		t.Errorf("the resumed watch ends its initial state with %+v, want SYNCED without a reset", synced)
	}
	if counts := w.m.Counts(); counts.Watches != 1 || counts.Sessions != 1 {
		t.Errorf("Counts = %+v, want the resumed watch and %s's session", counts, in.Session)
	}
}

// A watch resumed from a revision the manager has not reached (an older
// backup restored under its clients, a bad client) cannot tell what changed
// since: it gets the whole state, with Reset, rather than a state that
// leaves out everyone who joined before that revision.
func TestAWatchResumedFromPastTheLatestRevisionGetsTheWholeState(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	in := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	latest := w.eng.Index().Revision()
	for _, after := range []authz.Revision{latest + 1, latest + 1000, 1<<64 - 1} {
		watch, err := w.m.Watch("call:acme:1", after)
		if err != nil {
			t.Fatalf("resuming from revision %d: %v", after, err)
		}
		if len(watch.Initial) != 2 || watch.Initial[0].Kind != admission.EventPresent || watch.Initial[0].Session != in.Session {
			t.Errorf("resumed from revision %d (the latest is %d): initial %+v, want the participant present, then synced", after, latest, watch.Initial)
		}
		if synced := watch.Initial[len(watch.Initial)-1]; synced.Kind != admission.EventSynced || !synced.Reset || synced.Revision != latest {
			t.Errorf("resumed from revision %d: ends with %+v, want SYNCED at %d with Reset", after, synced, latest)
		}
		watch.Close()
	}
	// A resume from the latest revision is no reset.
	watch, err := w.m.Watch("call:acme:1", latest)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if synced := watch.Initial[len(watch.Initial)-1]; synced.Reset {
		t.Errorf("resumed from the latest revision %d: %+v, want no reset", latest, synced)
	}
}

// The initial states that streams are still sending count against
// MaxInitialEvents: a watch whose state does not fit beside them is refused
// with ResourceExhausted naming the call, the limit and its own size, and
// fits once another's state is sent, or its watch closed.
func TestInitialStatesBeingSentAreBounded(t *testing.T) {
	w, _ := newWorldWith(t, admission.Options{MaxInitialEvents: 6}, admission.MemoryOptions{})
	for _, s := range []string{"user:a", "user:b"} {
		w.grant(s, "member", "call:acme:1")
		w.wantJoin(s, "call:acme:1", admission.Admitted)
	}
	// Two participants and SYNCED: 3 events each.
	first, second := w.watch("call:acme:1"), w.watch("call:acme:1")
	if len(first.Initial) != 3 || len(second.Initial) != 3 {
		t.Fatalf("initial states of %d and %d events, want 3", len(first.Initial), len(second.Initial))
	}
	refused := func() {
		t.Helper()
		watch, err := w.m.Watch("call:acme:1", 0)
		if err == nil {
			watch.Close()
			t.Fatal("a third initial state of 3 events was served beside two of 3, with MaxInitialEvents 6")
		}
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.ResourceExhausted || e.Kind != authz.KindWatchLimit ||
			e.Field != "resource" || e.Value != "call:acme:1" || e.Meta["limit"] != "6" || e.Meta["events"] != "3" {
			t.Fatalf("the third watch: %#v, want ResourceExhausted %s on resource call:acme:1 with limit 6 and events 3", err, authz.KindWatchLimit)
		}
	}
	refused()
	if counts := w.m.Counts(); counts.Watches != 2 {
		t.Errorf("after the refusal, %d watches, want the 2 served", counts.Watches)
	}
	first.Sent()
	if first.Initial != nil {
		t.Error("Sent left the initial state in the watch")
	}
	third := w.watch("call:acme:1")
	refused()
	// Closing a watch whose state was not sent gives its share back too.
	third.Close()
	w.watch("call:acme:1")
	// The first watch, sent, still follows the call.
	w.wantJoin("user:a", "call:acme:1", admission.Admitted)
	nextEvent(t, first, "user:a joining again", func(ev admission.Event) bool { return ev.Kind == admission.EventJoined && ev.Subject == "user:a" })
}

// The manager remembers how the last Remember sessions ended, and no more:
// a KeepAlive of one of them is told why it ended, one of an older session
// only that there is none; a watch resumed from before the oldest ending it
// remembers gets the whole state again.
func TestEndingsAreRememberedUpToRemember(t *testing.T) {
	const remember = 4
	w, _ := newWorldWith(t, admission.Options{Remember: remember}, admission.MemoryOptions{})
	w.grant("user:a", "member", "call:acme:1")
	var ids []string
	var revs []authz.Revision
	for range 3 * remember {
		r := w.wantJoin("user:a", "call:acme:1", admission.Admitted)
		if err := w.m.Leave(w.ctx, r.Session); err != nil {
			t.Fatal(err)
		}
		ids, revs = append(ids, r.Session), append(revs, w.eng.Index().Revision())
	}
	w.watch("call:acme:1") // the view has taken in every ending
	for i, id := range ids {
		_, err := w.m.KeepAlive(w.ctx, id)
		remembered := i >= len(ids)-remember
		if got := err != nil && strings.Contains(err.Error(), "it left"); got != remembered {
			t.Errorf("KeepAlive of the session that ended %d of %d: %v; want it told that it left: %v", i+1, len(ids), err, remembered)
		}
		if authz.CodeOf(err) != authz.NotFound {
			t.Errorf("KeepAlive of an ended session: %v, want NotFound", err)
		}
	}
	resumed, err := w.m.Watch("call:acme:1", revs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	// Sessions write nothing to the index, so every ending here is at the
	// same revision, and some of those the ring dropped.
	if synced := resumed.Initial[len(resumed.Initial)-1]; synced.Kind != admission.EventSynced || !synced.Reset {
		t.Fatalf("the watch resumed from revision %d ends its initial state with %+v, want SYNCED with a reset", revs[0], synced)
	}
}

// overtakingStore commits a write, once, between a Join's read of the index
// and its session, and waits until the view has told watchers of it: the
// order a write that commits while a Join is under way gives.
type overtakingStore struct {
	*admission.MemoryStore
	subject string
	write   func()
	once    sync.Once
}

func (s *overtakingStore) Join(ctx context.Context, sess admission.Session, max uint32) (admission.Outcome, string, error) {
	if sess.Subject == s.subject {
		s.once.Do(s.write)
	}
	return s.MemoryStore.Join(ctx, sess, max)
}

// A join whose read of the index a write overtook is told at the revision
// the view saw it at, no older than the events told before it: a stream
// cut after the write's event resumes from its revision, and must still
// find the participant who joined after it.
func TestAWatchResumedAfterAWriteThatOvertookAJoinFindsTheParticipant(t *testing.T) {
	store := &overtakingStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{}), subject: "user:late"}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	w.grant("user:late", "member", "call:acme:1")
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	var muted authz.Revision
	store.write = func() {
		w.block("user:member", "call:acme:1", "send-audio")
		muted = nextEvent(t, watch, "the mute's CHANGED", kindOf(admission.EventChanged, "user:member")).Revision
	}
	late := w.wantJoin("user:late", "call:acme:1", admission.Admitted)
	joined := nextEvent(t, watch, "the late JOINED", kindOf(admission.EventJoined, "user:late"))
	if joined.Revision < muted {
		t.Errorf("JOINED at revision %d follows CHANGED at %d: a stream cut between them resumes past the join", joined.Revision, muted)
	}
	// The stream was cut after the mute's event: it resumes from there.
	resumed, err := w.m.Watch("call:acme:1", muted)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	found := slices.ContainsFunc(resumed.Initial, func(ev admission.Event) bool {
		return ev.Kind == admission.EventPresent && ev.Session == late.Session
	})
	if !found {
		t.Errorf("resumed from revision %d, the initial state %+v leaves out %s, who joined after it", muted, resumed.Initial, late.Session)
	}
}

// A watch cut off for falling behind counts against MaxWatchers until it is
// closed: until then its stream holds what it sent and its client has not
// read, and a client that let every stream fall behind would hold any
// number of them.
func TestACutWatchCountsAgainstMaxWatchersUntilClosed(t *testing.T) {
	w, _ := newWorldWith(t, admission.Options{MaxWatchers: 1, WatchBuffer: 4}, admission.MemoryOptions{})
	w.grant("user:busy", "member", "call:acme:1")
	watch := w.watch("call:acme:1")
	for range 5 {
		r := w.wantJoin("user:busy", "call:acme:1", admission.Admitted)
		if err := w.m.Leave(w.ctx, r.Session); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the watch is cut off", func() bool {
		return authz.KindOf(watch.Err()) == authz.KindWatchFellBehind
	})
	if _, err := w.m.Watch("call:acme:1", 0); authz.CodeOf(err) != authz.ResourceExhausted || authz.KindOf(err) != authz.KindWatchLimit {
		t.Fatalf("a watch beside one cut off and not closed: %v, want ResourceExhausted %s", err, authz.KindWatchLimit)
	}
	watch.Close()
	next, err := w.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatalf("a watch once the cut one is closed: %v", err)
	}
	next.Close()
	// Closing again frees no second slot.
	watch.Close()
	if next, err = w.m.Watch("call:acme:1", 0); err != nil {
		t.Fatalf("a watch after closing twice: %v", err)
	}
	defer next.Close()
	if _, err := w.m.Watch("call:acme:1", 0); authz.CodeOf(err) != authz.ResourceExhausted {
		t.Fatalf("a second watch after closing one twice: %v, want ResourceExhausted", err)
	}
}

// A manager started anew (a restart, or a replica that a client fails over
// to) remembers no ending from before it started: a watch resumed from a
// revision before then gets the whole state, with Reset, rather than one
// that leaves out the participants who left, lapsed or were banned
// meanwhile.
func TestAWatchResumedFromBeforeTheManagerStartedGetsTheWholeState(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	w.grant("user:banned", "member", "call:acme:1")
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	w.wantJoin("user:banned", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	last := watch.Initial[len(watch.Initial)-1].Revision
	// The manager stops, its sessions with it; user:banned is banned
	// meanwhile; a new manager starts over the same engine.
	w.m.Close()
	w.block("user:banned", "call:acme:1")
	w.m = admission.New(w.eng, admission.Options{})
	in := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	resumed, err := w.m.Watch("call:acme:1", last)
	if err != nil {
		t.Fatalf("resuming from revision %d: %v", last, err)
	}
	defer resumed.Close()
	synced := resumed.Initial[len(resumed.Initial)-1]
	if synced.Kind != admission.EventSynced || !synced.Reset {
		t.Errorf("resumed from revision %d, before the manager started: ends with %+v, want SYNCED with Reset", last, synced)
	}
	if len(resumed.Initial) != 2 || resumed.Initial[0].Kind != admission.EventPresent || resumed.Initial[0].Session != in.Session {
		t.Errorf("resumed from revision %d: initial %+v, want user:member present, then synced", last, resumed.Initial)
	}
	// Resuming from a revision the new manager has seen is no reset.
	w.grant("user:other", "member", "call:acme:1")
	latest := w.eng.Index().Revision()
	again, err := w.m.Watch("call:acme:1", latest)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if synced := again.Initial[len(again.Initial)-1]; synced.Reset {
		t.Errorf("resumed from revision %d, after the manager started: %+v, want no reset", latest, synced)
	}
}

// A watch started while participants join and leave the call sees each of
// them as the store holds them: its initial state and the events after it,
// replayed, end with the call's participants, each in the session it is in,
// as does the initial state of a watch started afterwards. The initial state is read in one step and made
// after, while the call goes on, and nothing may fall between the two.
func TestWatchesStartedAmidJoinsAndLeavesEndWithTheCallsParticipants(t *testing.T) {
	// A buffer for every event the players make: a watch that falls behind
	// is cut, and then this test tells nothing.
	w, store := newWorldWith(t, admission.Options{WatchBuffer: 4 * 400 * 2}, admission.MemoryOptions{})
	const call = "call:acme:1"
	const subjects = 200
	name := func(i int) string { return fmt.Sprintf("user:w%03d", i) }
	for i := range subjects {
		w.grant(name(i), "member", "account:acme")
	}
	// replay follows a watch, subject by subject, until stop, and returns
	// what it holds then.
	replay := func(watch *admission.Watch, stop <-chan struct{}) map[string]string {
		in := map[string]string{} // subject -> session
		for _, ev := range watch.Initial {
			hold(in, ev)
		}
		watch.Sent()
		// Once stopped, every event is queued: take them, then return.
		stopped := false
		for {
			var ev admission.Event
			ok := true
			if stopped {
				select {
				case ev, ok = <-watch.C:
				default:
					return in
				}
			} else {
				select {
				case ev, ok = <-watch.C:
				case <-stop:
					stopped = true
					continue
				}
			}
			if !ok {
				t.Errorf("a watch ended: %v", watch.Err())
				return nil
			}
			hold(in, ev)
		}
	}
	stop := make(chan struct{})
	var players, watchers sync.WaitGroup
	for g := range 4 {
		players.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 400 {
				subject := name(rng.IntN(subjects))
				var err error
				if rng.IntN(3) == 0 {
					err = w.m.LeaveCall(w.ctx, subject, call)
				} else {
					_, err = w.m.Join(w.ctx, "", subject, call, 0)
				}
				if err != nil && authz.CodeOf(err) != authz.NotFound {
					t.Errorf("%s: %v", subject, err)
					return
				}
			}
		})
	}
	seen := make([]map[string]string, 6)
	for i := range seen {
		watchers.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond)
			watch, err := w.m.Watch(call, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer watch.Close()
			seen[i] = replay(watch, stop)
		})
	}
	players.Wait()
	// Every event of the joins and leaves has reached the watches once a
	// watch started after them has its initial state.
	final := w.watch(call)
	want, last := map[string]string{}, map[string]string{}
	for _, s := range store.Sessions(call) {
		want[s.Subject] = s.ID
	}
	for _, ev := range final.Initial {
		if ev.Kind == admission.EventPresent {
			last[ev.Subject] = ev.Session
		}
	}
	close(stop)
	watchers.Wait()
	if len(want) == 0 {
		t.Fatal("no one is in the call at the end: the test tells nothing")
	}
	if !maps.Equal(last, want) {
		t.Errorf("a watch started at the end holds %d participants, the store %d: %v", len(last), len(want), diffParticipants(last, want))
	}
	for i, got := range seen {
		if got != nil && !maps.Equal(got, want) {
			t.Errorf("watch %d ends with %d participants, want %d: %v", i, len(got), len(want), diffParticipants(got, want))
		}
	}
}

// diffParticipants names the subjects whose sessions got and want disagree
// on, at most 5.
func diffParticipants(got, want map[string]string) []string {
	var out []string
	for s, id := range want {
		if got[s] != id {
			out = append(out, fmt.Sprintf("%s: %q, want %q", s, got[s], id))
		}
	}
	for s, id := range got {
		if _, ok := want[s]; !ok {
			out = append(out, fmt.Sprintf("%s: %q, want none", s, id))
		}
	}
	slices.Sort(out)
	return out[:min(len(out), 5)]
}

// ADMITTED tells watchers of a knock let in, on every node alike: an Admit
// of a subject not waiting in the lobby lets no knock in, and watchers
// hear nothing of it (its grant is the index's, as any grant is).
func TestAnAdmitOfASubjectNotWaitingTellsWatchersNothing(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:member", "member", "account:acme")
	watch := w.watch("call:acme:1")
	if _, err := w.m.Admit(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:visitor", time.Time{}); err != nil {
		t.Fatalf("Admit of a subject not waiting: %v", err)
	}
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	nextEvent(t, watch, "the member's JOINED, and no ADMITTED before it", func(ev admission.Event) bool {
		if ev.Kind == admission.EventAdmitted {
			t.Errorf("watchers heard of an Admit that let no knock in: %+v", ev)
		}
		return ev.Kind == admission.EventJoined && ev.Subject == "user:member"
	})
	if p := w.eng.Index().Presence("user:visitor", "call:acme:1"); !p.Joins || !p.SkipsLobby {
		t.Errorf("after the Admit, the visitor's standing = %+v; want the admit role's grant, skipping the lobby", p)
	}
}

// A subject that knocks again with another note is shown with it in the
// lobby's list, and watchers hear it too: a KNOCKED of the same knock with
// the new note, not the note it first knocked with, kept for good.
func TestAKnockWithAnotherNoteIsToldToWatchers(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:guest", "guest", "account:acme")
	watch := w.watch("call:acme:1")
	first, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "Gus")
	if err != nil || first.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", first, err)
	}
	nextEvent(t, watch, "KNOCKED with the first note", func(ev admission.Event) bool {
		return ev.Kind == admission.EventKnocked && ev.Note == "Gus"
	})
	again, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "Gus, the auditor")
	if err != nil || again.Outcome != admission.Lobby || again.Session != first.Session {
		t.Fatalf("Knock again = %+v, %v; want LOBBY, the same knock", again, err)
	}
	lobby, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host")
	if err != nil || len(lobby) != 1 || lobby[0].Note != "Gus, the auditor" {
		t.Fatalf("Lobby = %+v, %v; want the guest with the new note", lobby, err)
	}
	ev := nextEvent(t, watch, "KNOCKED with the new note", kindOf(admission.EventKnocked, "user:guest"))
	if ev.Note != "Gus, the auditor" || ev.Session != first.Session {
		t.Errorf("the knock again told watchers %+v; want KNOCKED of knock %s with the new note", ev, first.Session)
	}
}

// A rule rewritten with another LiveKit mapping that gives a participant
// the grant it had tells nothing of it: only the participants whose grant
// changes hear CHANGED, and a large call's streams are not cut for it.
func TestAMappingThatLeavesAGrantAsItWasTellsNothing(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	// roomAdmin now needs call.admit, which the member lacks: its grant
	// stays as it was.
	rule := policy().Admissions[0]
	rule.Scope = "call:acme:1"
	media := *rule.Media
	media.RoomAdmin = "call.admit"
	rule.Media = &media
	if _, err := w.eng.PutAdmission(w.ctx, w.by, rule); err != nil {
		t.Fatal(err)
	}
	// A watch starts once the view has acted on the rule.
	w.watch("call:acme:1")
	w.block("user:member", "call:acme:1", "send-audio")
	ev := nextEvent(t, watch, "CHANGED", kindOf(admission.EventChanged, "user:member"))
	if slices.Contains(ev.Capabilities, "send-audio") {
		t.Errorf("the mapping that leaves the member's grant as it was told CHANGED %v, %+v; want the mute's CHANGED first", ev.Capabilities, ev.Grant)
	}
}

// A stream cut after a participant's JOINED, while the participant joins
// again and its new session is ejected, resumes to find it gone: the
// session it was told of ended when the new one replaced it, and the
// resumed state says so, not only that the new one, which the stream never
// heard of, was ejected.
func TestAWatchResumedAfterARejoinAndAnEjectionFindsTheParticipantGone(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	first := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	last := watch.Initial[len(watch.Initial)-1].Revision
	// What the stream knows: the member in its first session.
	in := map[string]string{"user:member": first.Session}
	watch.Close()
	second := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	w.block("user:member", "call:acme:1")
	resumed, err := w.m.Watch("call:acme:1", last)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	for _, ev := range resumed.Initial {
		hold(in, ev)
	}
	if len(in) != 0 {
		t.Errorf("resumed from revision %d, after %s replaced %s and was ejected: the stream ends with %v in the call, told %+v",
			last, second.Session, first.Session, in, resumed.Initial)
	}
}

// A stream of a call cut before the call was deleted, and resumed once
// one of the name is registered again, cannot be told how the first one's
// participants left: the new call is another. It gets the whole state, a
// reset, so that its client drops them; resumed from after the deletion,
// it is told what changed since, as any stream is.
func TestAWatchResumedFromBeforeItsCallWasDeletedGetsTheWholeState(t *testing.T) {
	w := newWorld(t)
	w.grant("user:first", "member", "call:acme:1")
	first := w.wantJoin("user:first", "call:acme:1", admission.Admitted)
	cut := w.eng.Index().Revision() // the last revision the stream received
	deleted, err := w.eng.DeleteResource(w.ctx, w.by, "call:acme:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:acme:1", Parent: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:second", "member", "call:acme:1")
	second := w.wantJoin("user:second", "call:acme:1", admission.Admitted)
	for _, after := range []authz.Revision{cut, deleted} {
		watch, err := w.m.Watch("call:acme:1", after)
		if err != nil {
			t.Fatalf("resuming from revision %d: %v", after, err)
		}
		// What the client held at the cut, and what it holds once resumed:
		// a reset, told on the last event, drops what it held.
		held := map[string]string{"user:first": first.Session}
		if watch.Initial[len(watch.Initial)-1].Reset {
			clear(held)
		}
		for _, ev := range watch.Initial {
			hold(held, ev)
		}
		for _, ev := range watch.Initial {
			if ev.Session == first.Session {
				t.Errorf("resumed from revision %d, the stream tells of the deleted call's session: %+v", after, ev)
			}
		}
		watch.Close()
		if want := map[string]string{"user:second": second.Session}; !maps.Equal(held, want) {
			t.Errorf("a stream of call:acme:1 cut at revision %d, before its deletion at %d, resumed from %d holds %v once told its initial state %+v; want only the participant of the call registered again, %v",
				cut, deleted, after, held, watch.Initial, want)
		}
	}
}

// hold applies ev to in, the session of each subject in the call, as a
// media server that was told ev holds them.
func hold(in map[string]string, ev admission.Event) {
	switch ev.Kind {
	case admission.EventPresent, admission.EventJoined:
		in[ev.Subject] = ev.Session
	case admission.EventLeft, admission.EventLapsed, admission.EventEjected:
		if in[ev.Subject] == ev.Session {
			delete(in, ev.Subject)
		}
	}
}

// A resumed watch is sent the lobby whole, a WAITING for each knock
// waiting now, whether it changed since or not, and nothing of a knock
// denied while it was away: the client learns of that by its absence.
func TestAResumedWatchIsSentTheWholeLobby(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:g1", "guest", "account:acme")
	w.grant("user:g2", "guest", "account:acme")
	w.wantJoin("user:g1", "call:acme:1", admission.Lobby)
	w.wantJoin("user:g2", "call:acme:1", admission.Lobby)
	after := w.eng.Index().Revision()
	if err := w.m.Deny(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:g2"); err != nil {
		t.Fatalf("Deny: %v", err)
	}
	w.grant("user:member", "member", "call:acme:1") // a revision past after
	watch, err := w.m.Watch("call:acme:1", after)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	var got []string
	for _, ev := range watch.Initial {
		if ev.Kind != admission.EventSynced {
			got = append(got, fmt.Sprintf("%d %s", ev.Kind, ev.Subject))
		} else if ev.Reset {
			t.Errorf("the resume from %d was a reset: %+v", after, ev)
		}
	}
	if want := []string{fmt.Sprintf("%d user:g1", admission.EventWaiting)}; !slices.Equal(got, want) {
		t.Errorf("a watch resumed from %d was sent %v (kind, subject), want %v", after, got, want)
	}
}
