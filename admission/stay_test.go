package admission_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// A participant stays only while a Join now would let it in, capacity and
// occupancy apart. An admission from the lobby that is revoked ("To send a
// subject back to the lobby, revoke the admission", says the README), or
// that runs out, sends its participant back there: the view ejects it
// (LOBBY), its KeepAlive says so and renews nothing, and joining again it
// knocks. A member, who needs no admission, stays.
func TestAnAdmissionEndedSendsTheParticipantBackToTheLobby(t *testing.T) {
	for _, tc := range []struct {
		name  string
		until time.Time
		end   func(w *world)
	}{
		{"revoked", time.Time{}, func(w *world) {
			if _, err := w.eng.Revoke(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "call:acme:1"}); err != nil {
				w.t.Fatalf("Revoke of the admission: %v", err)
			}
		}},
		{"run out", start.Add(5 * time.Second), func(w *world) { w.clock.Advance(6 * time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.grant("user:host", "host", "call:acme:1")
			w.grant("user:guest", "guest", "account:acme")
			w.grant("user:member", "member", "account:acme")
			w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			if _, err := w.m.Admit(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:guest", tc.until); err != nil {
				t.Fatalf("Admit: %v", err)
			}
			in := w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
			member := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
			watch := w.watch("call:acme:1")

			tc.end(w)
			ev := nextEvent(t, watch, "the guest's ejection", kindOf(admission.EventEjected, "user:guest"))
			if ev.Outcome != admission.Lobby || ev.Session != in.Session {
				t.Errorf("EJECTED = %+v; want session %s, LOBBY", ev, in.Session)
			}
			ren, err := w.m.KeepAlive(w.ctx, in.Session)
			if err != nil || ren.Outcome != admission.Lobby || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive of the ejected guest = %+v, %v; want LOBBY, not renewed", ren, err)
			}
			if ren, err := w.m.KeepAlive(w.ctx, member.Session); err != nil || ren.Outcome != admission.Admitted {
				t.Errorf("KeepAlive of the member = %+v, %v; want ADMITTED", ren, err)
			}
			again := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			lobby, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host")
			if err != nil || len(lobby) != 1 || lobby[0].ID != again.Session {
				t.Errorf("the lobby = %+v, %v; want the guest's new knock %s", lobby, err, again.Session)
			}
			if c := w.m.Counts(); c.Sessions != 1 {
				t.Errorf("%d sessions live; want the member's alone", c.Sessions)
			}
		})
	}
}

// A call that closes again to a participant that may not join backstage
// takes it out: taken backstage (GoLive false) under a rule that keeps
// calls backstage until they go live, or its start moved later than
// join_ahead from now. Join would answer NOT_STARTED, and so does the
// ejection; a holder of the backstage permission stays.
func TestACallClosedAgainEjectsWhoMayNotBeBackstage(t *testing.T) {
	for _, tc := range []struct {
		name, call string
		close      func(w *world, call string)
		says       string
	}{
		{"taken backstage", "call:acme:stage", func(w *world, call string) {
			if _, err := w.eng.GoLive(w.ctx, w.by, call, false); err != nil {
				w.t.Fatal(err)
			}
		}, "is backstage until it goes live"},
		{"its start moved later", "call:acme:1", func(w *world, call string) {
			if _, err := w.eng.Schedule(w.ctx, w.by, call, start.Add(time.Hour)); err != nil {
				w.t.Fatal(err)
			}
		}, "opens at "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.grant("user:host", "host", "account:acme")
			w.grant("user:member", "member", "account:acme")
			if _, err := w.eng.GoLive(w.ctx, w.by, "call:acme:stage", true); err != nil {
				t.Fatal(err)
			}
			host := w.wantJoin("user:host", tc.call, admission.Admitted)
			member := w.wantJoin("user:member", tc.call, admission.Admitted)
			watch := w.watch(tc.call)

			tc.close(w, tc.call)
			ev := nextEvent(t, watch, "the member's ejection", kindOf(admission.EventEjected, "user:member"))
			if ev.Outcome != admission.NotStarted || ev.Session != member.Session {
				t.Errorf("EJECTED = %+v; want session %s, NOT_STARTED", ev, member.Session)
			}
			ren, err := w.m.KeepAlive(w.ctx, member.Session)
			if err != nil || ren.Outcome != admission.NotStarted || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive of the ejected member = %+v, %v; want NOT_STARTED, not renewed", ren, err)
			}
			if ren, err := w.m.KeepAlive(w.ctx, host.Session); err != nil || ren.Outcome != admission.Admitted {
				t.Errorf("KeepAlive of the host, who may be backstage = %+v, %v; want ADMITTED", ren, err)
			}
			if r := w.wantJoin("user:member", tc.call, admission.NotStarted); !strings.Contains(r.Reason, tc.says) {
				t.Errorf("Join of the member again: %q; want it to say %q", r.Reason, tc.says)
			}
		})
	}
}

// A mute is not a way out of a call. An actor that may block only
// send-video ("camera off") cannot block the join permission, and so could
// take no one out; when send-video is also what lets a member past the
// lobby, or a host's backstage permission is muted while the call is
// backstage, the participant stays, with its capabilities changed. Only
// a Join anew is refused by the mute.
func TestAMuteOfWhatLetAParticipantInLeavesItIn(t *testing.T) {
	for _, tc := range []struct {
		name, subject, role, call, muted string
		before                           func(w *world)
	}{
		{"the lobby's bypass permission", "user:member", "member", "call:acme:1", "send-video", func(*world) {}},
		{"the lobby's admit permission", "user:door", "door", "call:acme:1", "call.admit", func(*world) {}},
		{"the backstage permission, while the call is backstage", "user:host", "host", "call:acme:stage", "call.backstage", func(w *world) {
			if _, err := w.eng.GoLive(w.ctx, w.by, "call:acme:stage", false); err != nil {
				w.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			p := policy()
			narrowed := "usher.blocks.write." + tc.muted
			p.Permissions = append(p.Permissions, authz.Permission{Name: narrowed})
			p.Roles = append(p.Roles, authz.Role{Name: "operator", Scope: "root", Permissions: []string{"call.join", tc.muted, narrowed}},
				authz.Role{Name: "door", Scope: "root", Permissions: []string{"call.join", "call.admit"}})
			if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.eng.GoLive(w.ctx, w.by, "call:acme:stage", true); err != nil {
				t.Fatal(err)
			}
			w.grant("user:op", "operator", "account:acme")
			w.grant(tc.subject, tc.role, "account:acme")
			in := w.wantJoin(tc.subject, tc.call, admission.Admitted)
			tc.before(w)
			watch := w.watch(tc.call)
			op := authz.Author{Caller: "test", Actor: "user:op"}
			if _, _, err := w.eng.Block(w.ctx, op, authz.Block{Subject: tc.subject, Resource: tc.call, Permissions: []string{"call.join"}}); authz.CodeOf(err) != authz.PermissionDenied {
				t.Fatalf("the operator's block of call.join: %v; want PERMISSION_DENIED", err)
			}
			if _, _, err := w.eng.Block(w.ctx, op, authz.Block{Subject: tc.subject, Resource: tc.call, Permissions: []string{tc.muted}}); err != nil {
				t.Fatal(err)
			}
			ev := nextEvent(t, watch, "the mute", func(ev admission.Event) bool {
				return ev.Session == in.Session && (ev.Kind == admission.EventChanged || ev.Kind == admission.EventEjected)
			})
			if ev.Kind != admission.EventChanged || slices.Contains(ev.Capabilities, tc.muted) {
				t.Errorf("the mute of %s told %+v; want CHANGED, without it", tc.muted, ev)
			}
			if ren, err := w.m.KeepAlive(w.ctx, in.Session); err != nil || ren.Outcome != admission.Admitted {
				t.Errorf("KeepAlive after the mute = %+v, %v; want ADMITTED", ren, err)
			}
			if p := w.eng.Index().Presence(tc.subject, tc.call); p.SkipsLobby || p.Backstage {
				t.Errorf("Presence after the mute = %+v; a Join anew skips no lobby and is not backstage", p)
			}
		})
	}
}

// A block that kept a participant from what skips the lobby, or from the
// backstage, when it joined is no mute: it came in by an admission, or
// while the call was open, and goes when that ends, as the README says of
// an admission revoked.
func TestABlockInPlaceWhenTheParticipantJoinedStillHolds(t *testing.T) {
	host := authz.Author{Caller: "test", Actor: "user:host"}
	admitted := func(w *world, until time.Time) admission.Result {
		w.grant("user:host", "host", "call:acme:1")
		w.grant("user:m", "member", "account:acme")
		if _, _, err := w.eng.Block(w.ctx, host, authz.Block{Subject: "user:m", Resource: "call:acme:1", Permissions: []string{"send-video"}}); err != nil {
			w.t.Fatal(err)
		}
		w.wantJoin("user:m", "call:acme:1", admission.Lobby) // its bypass is blocked
		if _, err := w.m.Admit(w.ctx, host, "call:acme:1", "user:m", until); err != nil {
			w.t.Fatal(err)
		}
		return w.wantJoin("user:m", "call:acme:1", admission.Admitted)
	}
	for _, tc := range []struct {
		name, call string
		want       admission.Outcome
		run        func(w *world) admission.Result // joins, and ends what let it in
	}{
		{"an admission revoked", "call:acme:1", admission.Lobby, func(w *world) admission.Result {
			in := admitted(w, time.Time{})
			if _, err := w.eng.Revoke(w.ctx, host, authz.Grant{Subject: "user:m", Role: "guest", Resource: "call:acme:1"}); err != nil {
				w.t.Fatal(err)
			}
			return in
		}},
		{"an admission run out", "call:acme:1", admission.Lobby, func(w *world) admission.Result {
			in := admitted(w, start.Add(5*time.Second))
			w.clock.Advance(6 * time.Second)
			return in
		}},
		{"its bypass revoked, its admit permission blocked when it joined", "call:acme:1", admission.Lobby, func(w *world) admission.Result {
			if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "door", Scope: "root", Permissions: []string{"call.join", "call.admit"}}); err != nil {
				w.t.Fatal(err)
			}
			w.grant("user:m", "member", "account:acme") // the bypass, send-video
			w.grant("user:m", "door", "account:acme")   // the admit permission
			if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:m", Resource: "call:acme:1", Permissions: []string{"call.admit"}}); err != nil {
				w.t.Fatal(err)
			}
			in := w.wantJoin("user:m", "call:acme:1", admission.Admitted) // by the bypass
			if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:m", Role: "member", Resource: "account:acme"}); err != nil {
				w.t.Fatal(err)
			}
			return in
		}},
		{"a live call taken backstage", "call:acme:stage", admission.NotStarted, func(w *world) admission.Result {
			w.grant("user:m", "host", "account:acme")
			if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:m", Resource: "call:acme:stage", Permissions: []string{"call.backstage"}}); err != nil {
				w.t.Fatal(err)
			}
			w.wantJoin("user:m", "call:acme:stage", admission.NotStarted)
			if _, err := w.eng.GoLive(w.ctx, w.by, "call:acme:stage", true); err != nil {
				w.t.Fatal(err)
			}
			in := w.wantJoin("user:m", "call:acme:stage", admission.Admitted)
			if _, err := w.eng.GoLive(w.ctx, w.by, "call:acme:stage", false); err != nil {
				w.t.Fatal(err)
			}
			return in
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			watch := w.watch(tc.call)
			in := tc.run(w)
			if ev := nextEvent(t, watch, "the ejection", kindOf(admission.EventEjected, "user:m")); ev.Session != in.Session || ev.Outcome != tc.want {
				t.Errorf("EJECTED = %+v; want session %s, %s", ev, in.Session, tc.want)
			}
			ren, err := w.m.KeepAlive(w.ctx, in.Session)
			if err != nil || ren.Outcome != tc.want || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive = %+v, %v; want %s, the session ended", ren, err, tc.want)
			}
		})
	}
}

// A subject waiting in the lobby of a watched call that is banned, or
// loses its grant, may no longer join: the knock ends as it would at its
// next KeepAlive, and the stream is told DENIED ("a waiting subject was
// denied, or may no longer join and its knock ended", says the proto), so
// that a lobby drawn from WatchCall shows no one who may not come in. A
// write of another subject's leaves the knock waiting.
func TestAKnockOfASubjectThatMayNoLongerJoinIsDeniedOnTheStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(w *world)
	}{
		{"blocked", func(w *world) {
			if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:guest", Resource: "account:acme"}); err != nil {
				w.t.Fatal(err)
			}
		}},
		{"its grant revoked", func(w *world) {
			if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "account:acme"}); err != nil {
				w.t.Fatal(err)
			}
		}},
		{"its role redefined without the join permission", func(w *world) {
			if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "guest", Scope: "account:acme", Permissions: []string{"send-audio"}}); err != nil {
				w.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.grant("user:host", "host", "call:acme:1")
			w.grant("user:guest", "guest", "account:acme")
			w.grant("user:other", "guest", "account:acme")
			watch := w.watch("call:acme:1")
			knock := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			other := w.wantJoin("user:other", "call:acme:1", admission.Lobby)
			// A write of another's touches neither knock.
			w.grant("user:host", "member", "call:acme:1")

			tc.end(w)
			ev := nextEvent(t, watch, "the knock's denial", kindOf(admission.EventDenied, "user:guest"))
			if ev.Session != knock.Session {
				t.Errorf("DENIED = %+v; want knock %s", ev, knock.Session)
			}
			want := admission.NoGrant
			if tc.name == "blocked" {
				want = admission.Blocked
			}
			if ren, err := w.m.KeepAlive(w.ctx, knock.Session); err != nil || ren.Outcome != want || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive of the denied knock = %+v, %v; want %s, the knock ended", ren, err, want)
			}
			lobby, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host")
			if wantOther := tc.name != "its role redefined without the join permission"; err != nil ||
				(wantOther && (len(lobby) != 1 || lobby[0].ID != other.Session)) || (!wantOther && len(lobby) != 0) {
				t.Errorf("the lobby = %+v, %v", lobby, err)
			}
			// The other knock's denial, when it has one, may come a pass
			// after this one's.
			eventually(t, fmt.Sprintf("the store keeping the %d knocks the lobby lists", len(lobby)), func() bool { return w.m.Counts().Knocks == len(lobby) })
		})
	}
}

// A knock whose subject's grant runs out while it waits is denied on the
// stream as one whose grant is revoked is: DESIGN counts an expiry among
// the changes a call's stream tells. It is, whether the stream opened
// before the knock or after; the knock of a grant that lasts waits on.
func TestAKnockWhoseGrantRunsOutIsDeniedOnTheStream(t *testing.T) {
	for _, watchedFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("watched before the knock: %v", watchedFirst), func(t *testing.T) {
			w := newWorld(t)
			w.grant("user:host", "host", "call:acme:1")
			ends := w.clock.Now().Add(5 * time.Second) // within the knocks' lease of 10s
			if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "account:acme", Expires: ends}); err != nil {
				t.Fatal(err)
			}
			w.grant("user:other", "guest", "account:acme")
			var watch *admission.Watch
			if watchedFirst {
				watch = w.watch("call:acme:1")
			}
			knock := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			other := w.wantJoin("user:other", "call:acme:1", admission.Lobby)
			if !watchedFirst {
				watch = w.watch("call:acme:1")
			}
			// The view has judged the knocks, and found both may wait.
			before := w.eng.Index().Revision()
			eventually(t, "the view judged the knocks", func() bool { return w.m.DeniedUpTo() >= before })
			w.clock.Set(ends)
			ev := nextEvent(t, watch, "the knock's denial", kindOf(admission.EventDenied, "user:guest"))
			if ev.Session != knock.Session {
				t.Errorf("DENIED = %+v; want knock %s", ev, knock.Session)
			}
			if ren, err := w.m.KeepAlive(w.ctx, knock.Session); err != nil || ren.Outcome != admission.NoGrant || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive of the denied knock = %+v, %v; want NO_GRANT, the knock ended", ren, err)
			}
			lobby, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host")
			if err != nil || len(lobby) != 1 || lobby[0].ID != other.Session {
				t.Errorf("the lobby = %+v, %v; want the other knock waiting", lobby, err)
			}
		})
	}
}

// unreachableKnockStore fails every EndKnock as a store out of reach does,
// counting them.
type unreachableKnockStore struct {
	*admission.MemoryStore
	asked atomic.Int32
}

func (s *unreachableKnockStore) EndKnock(ctx context.Context, id string, why admission.Why) (admission.Knock, error) {
	s.asked.Add(1)
	return admission.Knock{}, context.DeadlineExceeded
}

// Knocks the view would deny while the store is out of reach are left to
// their KeepAlives after the first failure: the view does not wait out the
// store once for each, but once a pass. The write's pass asks once; a knock
// the view hears of only after the write has the call's knocks judged in a
// pass of their own, which asks once more.
func TestKnocksTheStoreCannotEndAreLeftToTheirKeepAlives(t *testing.T) {
	store := &unreachableKnockStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:host", "host", "call:acme:1")
	w.watch("call:acme:1")
	var knocks []admission.Result
	for _, s := range []string{"user:a", "user:b", "user:c"} {
		w.grant(s, "guest", "account:acme")
		knocks = append(knocks, w.wantJoin(s, "call:acme:1", admission.Lobby))
	}
	// The grants' passes are over: the one the write below starts is the
	// one that finds the knocks.
	before := w.eng.Index().Revision()
	eventually(t, "the view judged the grants", func() bool { return w.m.DeniedUpTo() >= before })
	rev, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "guest", Scope: "account:acme", Permissions: []string{"send-audio"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the view judged the knocks", func() bool { return w.m.DeniedUpTo() >= rev })
	time.Sleep(100 * time.Millisecond) // five of the view's ticks: a pass of the call's knocks is done
	if n := store.asked.Load(); n < 1 || n > 2 {
		t.Errorf("the store was asked to end %d knocks; want 1 or 2, once a pass, the rest left once it was out of reach", n)
	}
	for _, k := range knocks {
		if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.NoGrant {
			t.Errorf("KeepAlive of knock %s = %+v, %v; want NO_GRANT", k.Session, ren, err)
		}
	}
}

// banBeforeKnockStore commits a ban of the knocking subject, and lets the
// view act on it, just before the knock reaches the store: a write that
// lands between Join's read and its knock, which the view finds no knock
// to act on for.
type banBeforeKnockStore struct {
	*admission.MemoryStore
	w    *world
	once bool
}

func (s *banBeforeKnockStore) Knock(ctx context.Context, k admission.Knock) (admission.Knock, error) {
	if !s.once && k.Subject == "user:guest" {
		s.once = true
		if _, _, err := s.w.eng.Block(ctx, s.w.by, authz.Block{Subject: "user:guest", Resource: "account:acme"}); err != nil {
			s.w.t.Error(err)
		}
		// A read of the lobby waits for the view to have acted on it.
		if _, err := s.w.m.Lobby(ctx, "call:acme:1", ""); err != nil {
			s.w.t.Error(err)
		}
	}
	return s.MemoryStore.Knock(ctx, k)
}

// A knock whose subject is banned as it is made ends as the view would
// have ended it had it been made first: the stream is told DENIED, and its
// KeepAlive says BLOCKED.
func TestAKnockBannedAsItIsMadeIsDenied(t *testing.T) {
	store := &banBeforeKnockStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	store.w = w
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:guest", "guest", "account:acme")
	watch := w.watch("call:acme:1")
	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if ev := nextEvent(t, watch, "the knock's denial", kindOf(admission.EventDenied, "user:guest")); ev.Session != k.Session {
		t.Errorf("DENIED = %+v; want knock %s", ev, k.Session)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Blocked {
		t.Errorf("KeepAlive of the banned subject's knock = %+v, %v; want BLOCKED", ren, err)
	}
	if c := w.m.Counts(); c.Knocks != 0 {
		t.Errorf("%d knocks kept; want none", c.Knocks)
	}
}

// heldDenialStore holds every EndKnock that denies until letGo is closed
// or its context ends, as a store a slow round trip away does.
type heldDenialStore struct {
	*admission.MemoryStore
	entered  chan struct{}
	letGo    chan struct{}
	timedOut atomic.Bool
}

func (s *heldDenialStore) EndKnock(ctx context.Context, id string, why admission.Why) (admission.Knock, error) {
	if why == admission.Denied {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		select {
		case <-s.letGo:
		case <-ctx.Done():
			s.timedOut.Store(true)
			return admission.Knock{}, ctx.Err()
		}
	}
	return s.MemoryStore.EndKnock(ctx, id, why)
}

// The view ends the knocks a write leaves unable to join apart from the
// pass that Joins wait for: a Join made while the store is slow to end
// them is answered without waiting for it.
func TestAJoinDoesNotWaitForTheDenialOfKnocks(t *testing.T) {
	store := &heldDenialStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)}),
		entered: make(chan struct{}, 1), letGo: make(chan struct{})}
	w, _ := newWorldWith(t, admission.Options{Store: store, StoreWait: time.Minute}, admission.MemoryOptions{})
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:guest", "guest", "account:acme")
	w.grant("user:member", "member", "account:acme")
	watch := w.watch("call:acme:1")
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-store.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("the view never asked the store to end the knock")
	}
	joined := make(chan admission.Result, 1)
	go func() {
		r, err := w.m.Join(w.ctx, "", "user:member", "call:acme:1", 0)
		if err != nil {
			t.Error(err)
		}
		joined <- r
	}()
	select {
	case r := <-joined:
		if r.Outcome != admission.Admitted || store.timedOut.Load() {
			t.Errorf("Join while the store held the denial = %s (the denial waited out the store: %v); want ADMITTED, the denial held", r.Outcome, store.timedOut.Load())
		}
	case <-time.After(10 * time.Second):
		t.Error("the Join waits for the denial of a knock the store holds")
	}
	close(store.letGo)
	nextEvent(t, watch, "the knock's denial", kindOf(admission.EventDenied, "user:guest"))
}

// lostDenialStore ends every knock it is asked to deny, and then answers
// as if the store had not been reached: a write whose answer was lost.
type lostDenialStore struct{ *admission.MemoryStore }

func (s lostDenialStore) EndKnock(ctx context.Context, id string, why admission.Why) (admission.Knock, error) {
	k, err := s.MemoryStore.EndKnock(ctx, id, why)
	if err == nil && why == admission.Denied {
		return admission.Knock{}, context.DeadlineExceeded
	}
	return k, err
}

// A KeepAlive that denies a knock whose subject may no longer join, and
// loses the store's answer, is told why; so is the KeepAlive after it,
// the denial having gone through.
func TestAKnockDeniedByAKeepAliveWhoseAnswerIsLostSaysWhy(t *testing.T) {
	store := lostDenialStore{admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:guest", "guest", "account:acme")
	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	for _, which := range []string{"the KeepAlive that denies it", "the KeepAlive after"} {
		if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.NoGrant {
			t.Errorf("%s = %+v, %v; want NO_GRANT", which, ren, err)
		}
	}
}
