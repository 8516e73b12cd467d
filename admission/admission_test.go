package admission_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// world is an engine on a memory backend with a conferencing policy, and a
// manager over it, on a manual clock.
type world struct {
	t     *testing.T
	ctx   context.Context
	eng   *authz.Engine
	m     *admission.Manager
	clock *authz.ManualClock
	by    authz.Author
}

var start = time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)

// policy: calls below account:acme; hosts run them, members join them,
// guests are what the lobby admits; call:acme:big holds 3 counted
// participants (hosts uncounted); call:acme:stage goes live; rooms are
// used by one "unshared" sub-user at a time.
func policy() authz.Policy {
	perms := []string{"call.join", "call.admit", "call.stage", "call.backstage", "send-audio", "send-video", "usher.grants.write", "usher.blocks.write"}
	var p authz.Policy
	for _, n := range perms {
		p.Permissions = append(p.Permissions, authz.Permission{Name: n})
	}
	p.Resources = []authz.Resource{
		{Name: "account:acme"},
		{Name: "call:acme:1", Parent: "account:acme"},
		{Name: "call:acme:big", Parent: "account:acme"},
		{Name: "calltype:stage", Parent: "account:acme"},
		{Name: "call:acme:stage", Parent: "calltype:stage"},
		{Name: "room:acme:a", Parent: "account:acme"},
	}
	p.Roles = []authz.Role{
		{Name: "host", Scope: "root", Permissions: []string{"call.join", "call.admit", "call.stage", "call.backstage", "send-audio", "send-video", "usher.grants.write", "usher.blocks.write"}, AssignableRoles: []string{"*"}},
		{Name: "member", Scope: "root", Permissions: []string{"call.join", "send-audio", "send-video"}},
		{Name: "guest", Scope: "root", Permissions: []string{"call.join", "send-audio"}},
		{Name: "unshared", Scope: "root", Permissions: []string{"call.join", "send-audio", "send-video"}},
	}
	p.Admissions = []authz.Admission{
		{ResourceType: "call", Join: "call.join", Backstage: "call.backstage", Stage: "call.stage", JoinAhead: 10 * time.Minute,
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "guest", Bypass: "send-video"}, Lease: 10 * time.Second,
			Media: &authz.MediaMapping{RoomJoin: "call.join", CanPublishSources: map[string]string{"microphone": "send-audio", "camera": "send-video"}, CanSubscribe: "call.join"}},
		{Scope: "calltype:stage", ResourceType: "call", Join: "call.join", Backstage: "call.backstage", RequireLive: true, Stage: "call.stage"},
		{ResourceType: "room", Join: "call.join", ExclusiveRoles: []string{"unshared"}},
	}
	return p
}

func newWorld(t *testing.T) *world {
	t.Helper()
	clock := authz.NewManualClock(start)
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	w := &world{t: t, ctx: t.Context(), eng: eng, clock: clock, by: authz.Author{Caller: "test"}}
	if _, _, err := eng.ApplyPolicy(w.ctx, w.by, policy(), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.m = admission.New(eng, admission.Options{})
	t.Cleanup(func() { w.m.Close() })
	return w
}

func (w *world) grant(subject, role, resource string) {
	w.t.Helper()
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: subject, Role: role, Resource: resource}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) join(subject, resource string) admission.Result {
	w.t.Helper()
	r, err := w.m.Join(w.ctx, "", subject, resource, 0)
	if err != nil {
		w.t.Fatalf("Join(%s, %s): %v", subject, resource, err)
	}
	return r
}

func (w *world) wantJoin(subject, resource string, want admission.Outcome) admission.Result {
	w.t.Helper()
	r := w.join(subject, resource)
	if r.Outcome != want {
		w.t.Fatalf("Join(%s, %s) = %s (%s), want %s", subject, resource, r.Outcome, r.Reason, want)
	}
	return r
}

func TestJoinOutcomes(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "account:acme")
	w.grant("user:member", "member", "account:acme")
	w.grant("user:guest", "guest", "account:acme")

	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	if r.Session == "" || !r.Expires.Equal(start.Add(10*time.Second)) || r.Role != "member" || r.Scope != "account:acme" {
		t.Errorf("admitted join = %+v", r)
	}
	if !slices.Equal(r.Capabilities, []string{"call.join", "send-audio", "send-video"}) {
		t.Errorf("capabilities = %v", r.Capabilities)
	}
	w.wantJoin("user:nobody", "call:acme:1", admission.NoGrant)
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:member", Resource: "call:acme:1", Permissions: []string{"call.join"}}); err != nil {
		t.Fatal(err)
	}
	b := w.wantJoin("user:member", "call:acme:1", admission.Blocked)
	if b.BlockID == "" || b.Scope != "call:acme:1" {
		t.Errorf("blocked join = %+v", b)
	}
	w.wantJoin("user:member", "call:acme:stage", admission.NotStarted)
	w.wantJoin("user:host", "call:acme:stage", admission.Admitted)
	if _, err := w.eng.GoLive(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:stage", true); err != nil {
		t.Fatal(err)
	}
	w.wantJoin("user:member", "call:acme:stage", admission.Admitted)

	_, err := w.m.Join(w.ctx, "", "user:member", "call:acme:nope", 0)
	if authz.CodeOf(err) != authz.NotFound {
		t.Errorf("Join on an unregistered call = %v, want NotFound", err)
	}
	_, err = w.m.Join(w.ctx, "", "user:member", "account:acme", 0)
	if authz.CodeOf(err) != authz.FailedPrecondition {
		t.Errorf("Join on a resource no rule governs = %v, want FailedPrecondition", err)
	}
}

func TestScheduledCallOpensJoinAheadBeforeItStarts(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "account:acme")
	w.grant("user:host", "host", "account:acme")
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r := w.wantJoin("user:member", "call:acme:1", admission.NotStarted)
	if want := start.Add(50 * time.Minute); !r.OpensAt.Equal(want) {
		t.Errorf("opens at %v, want %v", r.OpensAt, want)
	}
	if r := w.wantJoin("user:host", "call:acme:1", admission.Admitted); !r.Backstage {
		t.Errorf("a host joining before the call opens is not marked backstage: %+v", r)
	}
	w.clock.Advance(50 * time.Minute)
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
}

// A call taken live has started: it is open, whatever its start time says,
// under a rule that keeps calls backstage until they go live and under one
// that opens them join_ahead before their start; taken backstage again, it
// waits for its start once more.
func TestACallTakenLiveIsOpenBeforeItsStart(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "account:acme")
	for _, call := range []string{"call:acme:1", "call:acme:stage"} {
		if _, err := w.eng.Schedule(w.ctx, w.by, call, start.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		w.wantJoin("user:member", call, admission.NotStarted)
		if _, err := w.eng.GoLive(w.ctx, w.by, call, true); err != nil {
			t.Fatal(err)
		}
		if r := w.wantJoin("user:member", call, admission.Admitted); r.Backstage {
			t.Errorf("a member joining %s, live, is marked backstage: %+v", call, r)
		}
		if _, err := w.eng.GoLive(w.ctx, w.by, call, false); err != nil {
			t.Fatal(err)
		}
		w.wantJoin("user:member", call, admission.NotStarted)
	}
}

// A call whose start has a fraction of a second opens at that instant, not
// at the second before it, and NOT_STARTED says so: a reason that names a
// time already past tells the media server it may join when it may not.
func TestACallOpensAtTheInstantItsReasonNames(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "account:acme")
	starts := start.Add(time.Hour + 500*time.Millisecond)
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", starts); err != nil {
		t.Fatal(err)
	}
	opens := starts.Add(-10 * time.Minute)
	w.clock.Set(opens.Add(-time.Nanosecond))
	r := w.wantJoin("user:member", "call:acme:1", admission.NotStarted)
	if want := "opens at " + opens.Format(time.RFC3339Nano); !r.OpensAt.Equal(opens) || !strings.Contains(r.Reason, want) {
		t.Errorf("a nanosecond before it opens: opens at %v, reason %q; want %v and a reason saying %q", r.OpensAt, r.Reason, opens, want)
	}
	w.clock.Set(opens)
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
}

// Backstage says that a subject was admitted before the call opened, by the
// backstage permission: an answer that admits no one does not say it, though
// its subject holds that permission and the call has not opened.
func TestOnlyAnAdmittedJoinSaysBackstage(t *testing.T) {
	w := newWorld(t)
	p := policy()
	p.Roles = append(p.Roles, authz.Role{Name: "speaker", Scope: "root", Permissions: []string{"call.join", "call.backstage"}})
	for i := range p.Admissions {
		if p.Admissions[i].ResourceType == "room" {
			p.Admissions[i].Backstage = "call.backstage"
		}
	}
	p.Admissions = append(p.Admissions, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join",
		Backstage: "call.backstage", MaxParticipants: 1})
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"call:acme:1", "call:acme:big", "room:acme:a"} {
		if _, err := w.eng.Schedule(w.ctx, w.by, call, start.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	w.grant("user:host", "host", "account:acme")
	for _, s := range []string{"user:s1", "user:s2"} {
		w.grant(s, "speaker", "account:acme")
		w.grant(s, "unshared", "room:acme:a")
	}
	for _, step := range []struct {
		name, subject, call string
		want                admission.Outcome
		backstage           bool
	}{
		{"the first speaker enters the call of one backstage", "user:s1", "call:acme:big", admission.Admitted, true},
		{"a full call lets no one in backstage", "user:s2", "call:acme:big", admission.Full, false},
		{"the first sub-user enters the room backstage", "user:s1", "room:acme:a", admission.Admitted, true},
		{"a room in use lets no one in backstage", "user:s2", "room:acme:a", admission.InUse, false},
		{"the lobby lets no one in backstage", "user:s1", "call:acme:1", admission.Lobby, false},
	} {
		if r := w.wantJoin(step.subject, step.call, step.want); r.Backstage != step.backstage {
			t.Errorf("%s: Join(%s, %s) = %s with backstage %t, want %t", step.name, step.subject, step.call, r.Outcome, r.Backstage, step.backstage)
		}
	}
	if k, err := w.m.Knock(w.ctx, "", "user:s2", "call:acme:1", ""); err != nil || k.Outcome != admission.Lobby || k.Backstage {
		t.Errorf("Knock of a speaker before the call opens = %s with backstage %t, %v; want LOBBY without backstage", k.Outcome, k.Backstage, err)
	}
	if _, err := w.m.Admit(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:s1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r := w.wantJoin("user:s1", "call:acme:1", admission.Admitted); !r.Backstage {
		t.Errorf("the speaker admitted from the lobby before the call opens joins without backstage: %+v", r)
	}
}

func TestConcurrentJoinsFillACallExactly(t *testing.T) {
	w := newWorld(t)
	// A call of capacity 50, and 500 subjects who may all join it.
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, func() authz.Policy {
		p := policy()
		p.Admissions = append(p.Admissions, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join", MaxParticipants: 50, UncountedRoles: []string{"host"}})
		return p
	}(), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		w.grant(fmt.Sprintf("user:u%03d", i), "member", "call:acme:big")
	}
	var wg sync.WaitGroup
	outcomes := make([]admission.Outcome, 500)
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := w.m.Join(w.ctx, "", fmt.Sprintf("user:u%03d", i), "call:acme:big", 0)
			if err != nil {
				t.Error(err)
			}
			outcomes[i] = r.Outcome
		}()
	}
	wg.Wait()
	count := map[admission.Outcome]int{}
	for _, o := range outcomes {
		count[o]++
	}
	if count[admission.Admitted] != 50 || count[admission.Full] != 450 {
		t.Errorf("500 concurrent joins of a call of capacity 50: %v", count)
	}
	w.grant("user:host", "host", "account:acme")
	w.wantJoin("user:host", "call:acme:big", admission.Admitted) // uncounted
}

func TestUnsharedRoomIsUsedByOneSubUserAtATime(t *testing.T) {
	w := newWorld(t)
	w.grant("user:sub1", "unshared", "account:acme")
	w.grant("user:sub2", "unshared", "account:acme")
	w.grant("user:member", "member", "account:acme")
	first := w.wantJoin("user:sub1", "room:acme:a", admission.Admitted)
	r := w.wantJoin("user:sub2", "room:acme:a", admission.InUse)
	if r.Exclusive != "role unshared" {
		t.Errorf("in use by %q, want unshared", r.Exclusive)
	}
	w.wantJoin("user:member", "room:acme:a", admission.Admitted) // not an unshared sub-user
	if err := w.m.Leave(w.ctx, first.Session); err != nil {
		t.Fatal(err)
	}
	second := w.wantJoin("user:sub2", "room:acme:a", admission.Admitted)
	w.wantJoin("user:sub1", "room:acme:a", admission.InUse)
	// The second one's media server dies: its lease lapses.
	w.clock.Advance(authz.DefaultLease + time.Second)
	if _, err := w.m.KeepAlive(w.ctx, second.Session); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("KeepAlive of a lapsed session = %v, want NotFound", err)
	}
	w.wantJoin("user:sub1", "room:acme:a", admission.Admitted)
}

func TestLobbyAdmitAndDeny(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "call:acme:1")
	host := authz.Author{Caller: "test", Actor: "user:host"}
	r := w.wantJoin("user:visitor", "call:acme:1", admission.NoGrant)
	_ = r
	// A visitor with no grant cannot even knock; one with a grant below the
	// lobby's bypass waits.
	w.grant("user:guest", "guest", "account:acme")
	k, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "Gus from Globex")
	if err != nil || k.Outcome != admission.Lobby || k.Session == "" {
		t.Fatalf("Knock = %+v, %v", k, err)
	}
	list, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host")
	if err != nil || len(list) != 1 || list[0].Subject != "user:guest" || list[0].Note != "Gus from Globex" {
		t.Fatalf("Lobby = %+v, %v", list, err)
	}
	if _, err := w.m.Lobby(w.ctx, "call:acme:1", "user:guest"); authz.CodeOf(err) != authz.PermissionDenied {
		t.Errorf("a guest listing the lobby = %v, want PermissionDenied", err)
	}
	if _, err := w.m.Admit(w.ctx, authz.Author{Caller: "test", Actor: "user:guest"}, "call:acme:1", "user:guest", time.Time{}); authz.CodeOf(err) != authz.PermissionDenied {
		t.Errorf("admitting oneself = %v, want PermissionDenied", err)
	}
	if _, err := w.m.Admit(w.ctx, host, "call:acme:1", "user:guest", time.Time{}); err != nil {
		t.Fatal(err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 0 {
		t.Errorf("the admitted guest is still in the lobby: %+v", list)
	}

	w.grant("user:guest2", "guest", "account:acme")
	w.wantJoin("user:guest2", "call:acme:1", admission.Lobby)
	if err := w.m.Deny(w.ctx, host, "call:acme:1", "user:guest2"); err != nil {
		t.Fatal(err)
	}
	if err := w.m.Deny(w.ctx, host, "call:acme:1", "user:guest2"); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("denying one not waiting = %v, want NotFound", err)
	}
	w.wantJoin("user:guest2", "call:acme:1", admission.Lobby)
}

func TestWatchCallSeesChangesAndEjections(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "account:acme")
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch, err := w.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if len(watch.Initial) != 2 || watch.Initial[0].Kind != admission.EventPresent || watch.Initial[0].Session != r.Session ||
		watch.Initial[1].Kind != admission.EventSynced {
		t.Fatalf("initial = %+v", watch.Initial)
	}
	next := func(want admission.EventKind) admission.Event {
		t.Helper()
		select {
		case ev, ok := <-watch.C:
			if !ok {
				t.Fatalf("watch ended: %v", watch.Err())
			}
			if ev.Kind != want {
				t.Fatalf("event %+v, want kind %d", ev, want)
			}
			return ev
		case <-time.After(2 * time.Second):
			t.Fatalf("no event of kind %d", want)
		}
		return admission.Event{}
	}
	host := authz.Author{Caller: "test", Actor: "user:host"}
	// Muted: a block of send-audio.
	if _, _, err := w.eng.Block(w.ctx, host, authz.Block{Subject: "user:member", Resource: "call:acme:1", Permissions: []string{"send-audio"}}); err != nil {
		t.Fatal(err)
	}
	ev := next(admission.EventChanged)
	if slices.Contains(ev.Capabilities, "send-audio") || ev.Grant == nil || slices.ContainsFunc(ev.Grant.CanPublishSources, func(s string) bool { return strings.EqualFold(s, "microphone") }) {
		t.Errorf("muted: %+v grant %+v", ev, ev.Grant)
	}
	// Banned: a block of everything.
	if _, _, err := w.eng.Block(w.ctx, host, authz.Block{Subject: "user:member", Resource: "call:acme:1", Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	ev = next(admission.EventEjected)
	if ev.Outcome != admission.Blocked || ev.Session != r.Session {
		t.Errorf("ejected: %+v", ev)
	}
	// A KeepAlive after the eject says why the session ended.
	if got, err := w.m.KeepAlive(w.ctx, r.Session); err != nil || got.Outcome != admission.Blocked {
		t.Errorf("KeepAlive of an ejected session = %+v, %v; want BLOCKED", got, err)
	}
}

// A rule rewritten with the LiveKit mapping it had (its capacity raised)
// changes no participant's capabilities nor grant, and is told of by no
// CHANGED: the next event is the mute that follows it.
func TestARuleRewrittenWithItsMappingTellsNoChange(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "account:acme")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	p := policy()
	p.Admissions[0].MaxParticipants = 50
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.block("user:member", "call:acme:1", "send-audio")
	ev := nextEvent(t, watch, "the mute", func(ev admission.Event) bool { return ev.Session == r.Session })
	if ev.Kind != admission.EventChanged || slices.Contains(ev.Capabilities, "send-audio") {
		t.Errorf("first event after the rule was rewritten: %+v, want CHANGED without send-audio (the mute's)", ev)
	}
	// Another mapping is told: the camera is no longer published.
	p.Admissions[0].Media = &authz.MediaMapping{RoomJoin: "call.join", CanSubscribe: "call.join"}
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	ev = nextEvent(t, watch, "the new mapping", func(ev admission.Event) bool { return ev.Session == r.Session })
	if ev.Kind != admission.EventChanged || ev.Grant == nil || len(ev.Grant.CanPublishSources) != 0 {
		t.Errorf("after the mapping changed: %+v, want CHANGED to a grant publishing nothing", ev)
	}
}

// A watcher removing participants by subject must see a session end before
// the subject's next one begins: Leave then Join, and a lapse then a rejoin,
// reach it in that order.
func TestWatchCallKeepsEachSubjectsEventsInOrder(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	watch, err := w.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	next := func() admission.Event {
		t.Helper()
		select {
		case ev := <-watch.C:
			return ev
		case <-time.After(2 * time.Second):
			t.Fatal("no event")
		}
		return admission.Event{}
	}
	for range 50 {
		r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
		if err := w.m.Leave(w.ctx, r.Session); err != nil {
			t.Fatal(err)
		}
	}
	last := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	w.clock.Advance(11 * time.Second) // the lease is 10s
	again := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	var got []string
	for range 50*2 + 3 {
		ev := next()
		got = append(got, fmt.Sprintf("%d %s", ev.Kind, ev.Session))
	}
	live := ""
	for i, line := range got {
		var kind admission.EventKind
		var id string
		fmt.Sscan(line, &kind, &id)
		switch kind {
		case admission.EventJoined:
			if live != "" {
				t.Fatalf("event %d: %s joined while %s was still in: %v", i, id, live, got)
			}
			live = id
		case admission.EventLeft, admission.EventLapsed:
			if id != live {
				t.Fatalf("event %d: %s ended, but %s is the live one: %v", i, id, live, got)
			}
			live = ""
		}
	}
	if live != again.Session || got[len(got)-2] != fmt.Sprintf("%d %s", admission.EventLapsed, last.Session) {
		t.Errorf("the watch ends with %v; want %s lapsed, then %s", got[len(got)-3:], last.Session, again.Session)
	}
}

// A role redefined, or a resource deleted, reaches the participants of the
// calls at and below it, whether the scope is a call itself, holds fewer
// resources than there are live calls, or more: and no others.
func TestARoleRedefinedOrACallDeletedReachesTheCallsBelowIt(t *testing.T) {
	w := newWorld(t)
	w.grant("user:m1", "member", "account:acme")
	w.grant("user:m2", "member", "account:acme")
	a := w.wantJoin("user:m1", "call:acme:1", admission.Admitted)
	b := w.wantJoin("user:m2", "room:acme:a", admission.Admitted)
	inCall, inRoom := w.watch("call:acme:1"), w.watch("room:acme:a")
	changed := func(session string) func(admission.Event) bool {
		return func(ev admission.Event) bool { return ev.Kind == admission.EventChanged && ev.Session == session }
	}
	role := func(scope string, perms ...string) {
		t.Helper()
		if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "member", Scope: scope, Permissions: perms}); err != nil {
			t.Fatal(err)
		}
	}
	// The room itself: a resource with nothing below it.
	role("room:acme:a", "call.join")
	if ev := nextEvent(t, inRoom, "the room's member muted", changed(b.Session)); !slices.Equal(ev.Capabilities, []string{"call.join"}) {
		t.Errorf("in the room: %v, want [call.join]", ev.Capabilities)
	}
	// The account: more resources below it than there are live calls.
	role("account:acme", "call.join", "send-video")
	if ev := nextEvent(t, inCall, "the call's member without audio", changed(a.Session)); !slices.Equal(ev.Capabilities, []string{"call.join", "send-video"}) {
		t.Errorf("in the call: %v, want [call.join send-video]", ev.Capabilities)
	}
	// The call deleted under its participant.
	if _, err := w.eng.DeleteResource(w.ctx, w.by, "call:acme:1"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, inCall, "the call's member ejected", kindOf(admission.EventEjected, "user:m1")); ev.Outcome != admission.NoGrant {
		t.Errorf("ejected from the deleted call: %+v, want NO_GRANT", ev)
	}
	// The room's participant heard of none of it after its own change.
	select {
	case ev := <-inRoom.C:
		t.Errorf("the room's participant heard %+v of writes that do not reach it", ev)
	default:
	}
}

// A note over MaxNoteLen is INVALID_ARGUMENT naming the note, quoted in
// valid UTF-8 however its characters fall, and knocks nobody in.
func TestAKnockWithTooLongANoteIsRefusedInValidUTF8(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "call:acme:1")
	// "é" is two bytes: the 32nd byte is the first half of one.
	note := strings.Repeat("a", 31) + strings.Repeat("é", admission.MaxNoteLen)
	_, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", note)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.Invalid || e.Field != "note" {
		t.Fatalf("Knock with a note of %d bytes: %v, want INVALID_ARGUMENT naming note", len(note), err)
	}
	if !utf8.ValidString(e.Value) || !utf8.ValidString(err.Error()) || !strings.HasPrefix(e.Value, strings.Repeat("a", 31)) {
		t.Errorf("the refusal quotes the note as %q (%q): want a valid UTF-8 beginning of it", e.Value, err.Error())
	}
	if knocks := w.m.Counts().Knocks; knocks != 0 {
		t.Errorf("a refused knock left %d knocks", knocks)
	}
}

// An occupant whose grant is revoked, or who is blocked, no longer uses the
// room: a Join that reads the world after that write finds it available,
// however soon it comes, rather than counting a session the write has
// already taken out of the room.
func TestUnsharedRoomIsAvailableOnceItsOccupantMayNoLongerBeThere(t *testing.T) {
	w := newWorld(t)
	w.grant("user:sub2", "unshared", "account:acme")
	for i := range 40 {
		sub1 := fmt.Sprintf("user:sub1-%d", i)
		w.grant(sub1, "unshared", "account:acme")
		w.wantJoin(sub1, "room:acme:a", admission.Admitted)
		var rev authz.Revision
		var err error
		if i%2 == 0 {
			rev, err = w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: sub1, Role: "unshared", Resource: "account:acme"})
		} else {
			rev, _, err = w.eng.Block(w.ctx, w.by, authz.Block{Subject: sub1, Resource: "room:acme:a"})
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := w.m.Join(w.ctx, "", "user:sub2", "room:acme:a", rev)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != admission.Admitted {
			t.Fatalf("round %d: Join of user:sub2 at revision %d, right after %s may no longer be in the room = %s (%s), want Admitted",
				i, rev, sub1, r.Outcome, r.Reason)
		}
		if err := w.m.Leave(w.ctx, r.Session); err != nil {
			t.Fatal(err)
		}
	}
}
