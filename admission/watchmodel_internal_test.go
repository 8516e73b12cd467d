package admission

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/storage/memory"
)

// told is what a client of a call's watch knows of one participant.
type told struct {
	session string
	caps    []string
	grant   *auth.VideoGrant
}

// follower is a client of a WatchCall stream: what the stream told, by
// subject, and every event it received.
type follower struct {
	call string
	w    *Watch
	// ended: the call was deleted, and the stream ended NotFound.
	ended  bool
	state  map[string]told
	events []Event
	// cuts are the states after each event, with the last revision
	// received by then: where a stream cut there stood.
	cuts []cut
}

type cut struct {
	state map[string]told
	after authz.Revision
}

// apply takes ev into state; it returns a complaint about an event that
// tells nothing new, or tells of a session it does not know.
func apply(state map[string]told, ev Event) string {
	switch ev.Kind {
	case EventPresent, EventJoined:
		state[ev.Subject] = told{ev.Session, slices.Sorted(slices.Values(ev.Capabilities)), ev.Grant}
	case EventChanged:
		was, ok := state[ev.Subject]
		caps := slices.Sorted(slices.Values(ev.Capabilities))
		if !ok || was.session != ev.Session {
			return fmt.Sprintf("CHANGED of %s's session %s, which the stream did not tell of", ev.Subject, ev.Session)
		}
		state[ev.Subject] = told{ev.Session, caps, ev.Grant}
		if slices.Equal(was.caps, caps) && reflect.DeepEqual(was.grant, ev.Grant) {
			return fmt.Sprintf("CHANGED of %s with the capabilities and grant it told before: %v", ev.Subject, caps)
		}
	case EventEjected, EventLeft, EventLapsed:
		if was, ok := state[ev.Subject]; ok && was.session == ev.Session {
			delete(state, ev.Subject)
		} else if ev.Kind == EventEjected {
			return fmt.Sprintf("EJECTED of %s's session %s, which the stream did not hold", ev.Subject, ev.Session)
		}
	}
	return ""
}

type watchWorld struct {
	t        *testing.T
	rng      *rand.Rand
	ctx      context.Context
	by       authz.Author
	clock    *authz.ManualClock
	eng      *authz.Engine
	m        *Manager
	store    *MemoryStore
	base     authz.Policy
	calls    []string
	scopes   []string
	subjects []string
	roles    []string
	caps     []string
	grants   []authz.Grant
	blocks   []authz.Block
	ids      []string
	// callOf is the call each session of ids joined, and gone the
	// sessions of the calls deleted since: a call registered again under
	// the name is another, which no event of its watches may name them in.
	callOf map[string]string
	gone   map[string]bool
	// deletedAt is the revision of each call's latest deletion.
	deletedAt map[string]authz.Revision
	follow    []*follower
	steps     []string
	seed      uint64
}

var watchStart = time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)

func (w *watchWorld) logf(format string, args ...any) {
	w.steps = append(w.steps, fmt.Sprintf("[%s] ", w.clock.Now().Sub(watchStart))+fmt.Sprintf(format, args...))
}

func (w *watchWorld) fail(format string, args ...any) {
	w.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d\nsteps:\n", w.seed)
	for i, s := range w.steps {
		fmt.Fprintf(&b, "  %3d %s\n", i, s)
	}
	w.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), b.String())
}

func newWatchWorld(t *testing.T, seed uint64) *watchWorld {
	p, err := policy.Load("stream")
	if err != nil {
		t.Fatal(err)
	}
	base := policy.ToAuthz(p)
	base.Resources = append(base.Resources,
		authz.Resource{Name: "org:a"}, authz.Resource{Name: "org:b"},
		authz.Resource{Name: "call:default:1", Parent: "calltype:default"},
		authz.Resource{Name: "call:default:2", Parent: "calltype:default"},
		authz.Resource{Name: "call:audio_room:1", Parent: "calltype:audio_room"})
	clock := authz.NewManualClock(watchStart)
	w := &watchWorld{t: t, rng: rand.New(rand.NewPCG(seed, 0x3a7c)), ctx: t.Context(), by: authz.Author{Caller: "test"},
		clock: clock, base: base, seed: seed, callOf: map[string]string{}, gone: map[string]bool{},
		deletedAt: map[string]authz.Revision{},
		calls:     []string{"call:default:1", "call:default:2", "call:audio_room:1"},
		scopes:    []string{authz.RootName, "org:a", "org:b", "calltype:default", "calltype:audio_room", "calltype:livestream", "call:default:1", "call:default:2", "call:audio_room:1"},
		roles:     []string{"admin", "host", "moderator", "user", "call-member"},
	}
	for _, perm := range base.Permissions {
		if !strings.HasPrefix(perm.Name, "usher.") {
			w.caps = append(w.caps, perm.Name)
		}
	}
	for i := range 4 {
		w.subjects = append(w.subjects, fmt.Sprintf("user:u%d", i))
	}
	eng, err := authz.Start(w.ctx, memory.New(), authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	w.eng = eng
	if _, _, err := eng.ApplyPolicy(w.ctx, w.by, base, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.store = NewMemoryStore(MemoryOptions{Clock: clock})
	// Some managers remember few endings: streams resumed from before the
	// oldest get the whole state.
	w.m = New(eng, Options{Store: w.store, Remember: pick(w.rng, []int{0, 0, 5})})
	// The view's loop and the store's sweeper stop; the test acts for
	// them, when they would have.
	v := w.m.v
	close(v.stop)
	<-v.done
	<-v.probed
	<-v.denyDone
	v.stop = make(chan struct{})
	close(w.store.stop)
	w.store.done.Wait()
	w.store.stop = make(chan struct{})
	t.Cleanup(func() { w.m.Close() })
	for _, subject := range w.subjects {
		if w.rng.IntN(4) > 0 {
			w.grant(authz.Grant{Subject: subject, Role: pick(w.rng, w.roles), Resource: pick(w.rng, []string{authz.RootName, "calltype:default", "org:a"})})
		}
	}
	w.settle()
	for _, call := range w.calls {
		w.watch(call, 0)
	}
	return w
}

// watch follows call from after, as a client whose state is empty: one
// that starts, or one whose stream of the call, deleted, ended.
func (w *watchWorld) watch(call string, after authz.Revision) {
	watch, err := w.m.Watch(call, after)
	if err != nil {
		w.fail("watching %s from %d: %v", call, after, err)
	}
	f := &follower{call: call, w: watch, state: map[string]told{}}
	for _, ev := range watch.Initial {
		w.ofDeleted(call, "the watch from "+fmt.Sprint(after), ev)
		apply(f.state, ev)
	}
	f.cuts = append(f.cuts, cut{maps.Clone(f.state), watch.Initial[len(watch.Initial)-1].Revision})
	watch.Sent()
	w.follow = append(w.follow, f)
}

// ofDeleted fails on an event of a watch of call, registered again, that
// names a session of the call deleted before.
func (w *watchWorld) ofDeleted(call, which string, ev Event) {
	if ev.Session != "" && w.gone[ev.Session] && ev.Kind != EventWaiting {
		w.fail("%s of %s, registered again, tells of the deleted call's session: %s", which, call, describeEvent(ev))
	}
}

func (w *watchWorld) settle() {
	v := w.m.v
	w.store.Count("") // ends the sessions whose leases ran out
	v.storeEvents()
	v.settle(w.ctx, w.eng.Index().Revision())
	v.denyPass(context.Background())
	v.expire(context.Background())
	v.storeEvents()
}

// drain takes what the streams were sent.
func (w *watchWorld) drain() {
	for _, f := range w.follow {
		if f.ended {
			continue
		}
	events:
		for {
			select {
			case ev, ok := <-f.w.C:
				if !ok && !f.ended && w.deleted(f) {
					// Told of its participants' ejection, it ends NotFound.
					f.ended = true
					if authz.CodeOf(f.w.Err()) != authz.NotFound || len(f.state) > 0 {
						w.fail("the watch of %s, deleted, ended %v holding %v; want NOT_FOUND holding no one", f.call, f.w.Err(), f.state)
					}
					w.logf("  %s: ended %v", f.call, f.w.Err())
					break events
				}
				if !ok {
					w.fail("the watch of %s ended: %v", f.call, f.w.Err())
				}
				f.events = append(f.events, ev)
				w.logf("  %s: %s", f.call, describeEvent(ev))
				if msg := apply(f.state, ev); msg != "" {
					w.fail("%s: %s", f.call, msg)
				}
				after := f.cuts[len(f.cuts)-1].after
				if ev.Revision < after {
					w.fail("%s: %s follows an event at revision %d", f.call, describeEvent(ev), after)
				}
				f.cuts = append(f.cuts, cut{maps.Clone(f.state), ev.Revision})
			default:
				break events
			}
		}
	}
}

// deleted reports whether f's call was deleted since f read its state.
func (w *watchWorld) deleted(f *follower) bool {
	return w.deletedAt[f.call] >= f.cuts[0].after
}

// registered reports whether call is registered now.
func (w *watchWorld) registered(call string) bool {
	_, _, err := w.eng.Index().GetResource(call)
	return err == nil
}

func describeEvent(ev Event) string {
	kinds := map[EventKind]string{EventPresent: "PRESENT", EventJoined: "JOINED", EventChanged: "CHANGED", EventEjected: "EJECTED", EventLeft: "LEFT", EventLapsed: "LAPSED", EventSynced: "SYNCED"}
	s := fmt.Sprintf("%s@%d %s %.8s", kinds[ev.Kind], ev.Revision, ev.Subject, ev.Session)
	if ev.Kind == EventChanged || ev.Kind == EventJoined {
		s += fmt.Sprintf(" %v", ev.Capabilities)
	}
	return s
}

// truth is what a stream should hold of call now, from scratch.
func (w *watchWorld) truth(call string) map[string]told {
	x := w.eng.Index()
	out := map[string]told{}
	for _, s := range w.store.Sessions(call) {
		p := x.Presence(s.Subject, call)
		if o, why := ejectsSession(p, s.Subject, call, s.Capabilities, w.clock.Now()); o != 0 {
			w.fail("session %s of %s is live in %s, and may not be: %s", s.ID, s.Subject, call, why)
		}
		caps, _, _ := x.ListPermissions(s.Subject, call, false)
		caps = slices.Sorted(slices.Values(caps))
		var g *auth.VideoGrant
		if p.Rule != nil && p.Rule.Media != nil {
			g = livekit.Mapping(*p.Rule.Media).VideoGrant(call, caps)
		}
		out[s.Subject] = told{s.ID, caps, g}
	}
	return out
}

func sameState(a, b map[string]told) string {
	for s, t := range b {
		g, ok := a[s]
		if !ok {
			return fmt.Sprintf("%s (%.8s %v) missing", s, t.session, t.caps)
		}
		if g.session != t.session || !slices.Equal(g.caps, t.caps) || !reflect.DeepEqual(g.grant, t.grant) {
			return fmt.Sprintf("%s: told %.8s %v %+v, want %.8s %v %+v", s, g.session, g.caps, g.grant, t.session, t.caps, t.grant)
		}
	}
	for s, g := range a {
		if _, ok := b[s]; !ok {
			return fmt.Sprintf("%s (%.8s %v) told present, and is not", s, g.session, g.caps)
		}
	}
	return ""
}

func (w *watchWorld) check() {
	w.t.Helper()
	w.settle()
	w.drain()
	following := map[string]bool{}
	var last []*follower
	for _, f := range w.follow {
		if f.ended {
			last = append(last, f)
			continue
		}
		following[f.call] = true
		if d := sameState(f.state, w.truth(f.call)); d != "" {
			w.fail("the watch of %s: %s", f.call, d)
		}
	}
	// A call registered again is watched anew: from the start, or from
	// the last revision the stream of the deleted one received.
	for _, f := range last {
		if following[f.call] || !w.registered(f.call) {
			continue
		}
		following[f.call] = true
		var after authz.Revision
		if w.rng.IntN(2) == 0 {
			after = f.cuts[len(f.cuts)-1].after
		}
		w.logf("  watch %s again from %d", f.call, after)
		w.watch(f.call, after)
		g := w.follow[len(w.follow)-1]
		if d := sameState(g.state, w.truth(f.call)); d != "" {
			w.fail("the watch of %s, registered again, from %d: %s", f.call, after, d)
		}
	}
}

// resumes checks that a stream cut after any of its events, and resumed
// from the last revision it received, ends where the watch that followed
// throughout is.
func (w *watchWorld) resumes() {
	latest := w.eng.Index().Revision()
	for _, f := range w.follow {
		// A client that has every event below r resumes from r: for one
		// of a call deleted since, below its stream's end.
		upTo := latest + 1
		if f.ended {
			upTo = f.cuts[len(f.cuts)-1].after
		}
		for r := f.cuts[0].after; r <= upTo; r++ {
			state := maps.Clone(f.cuts[0].state)
			for _, ev := range f.events {
				if ev.Revision < r {
					apply(state, ev)
				}
			}
			f.cuts = append(f.cuts, cut{state, r})
		}

		// Where the stream that followed throughout is; for one of a
		// call deleted since, where a watch of the call now is.
		want := f.state
		if f.ended {
			if !w.registered(f.call) {
				if _, err := w.m.Watch(f.call, f.cuts[0].after); authz.CodeOf(err) != authz.NotFound {
					w.fail("resuming %s, deleted, = %v; want NOT_FOUND", f.call, err)
				}
				continue
			}
			want = w.truth(f.call)
		}
		for i, c := range f.cuts {
			watch, err := w.m.Watch(f.call, c.after)
			if err != nil {
				w.fail("resuming %s from %d: %v", f.call, c.after, err)
			}
			state := maps.Clone(c.state)
			if last := watch.Initial[len(watch.Initial)-1]; last.Reset {
				clear(state)
			}
			for _, ev := range watch.Initial {
				if f.ended {
					w.ofDeleted(f.call, fmt.Sprintf("the watch resumed from %d", c.after), ev)
				}
				apply(state, ev)
			}
			watch.Close()
			if d := sameState(state, want); d != "" {
				var evs []string
				for _, ev := range watch.Initial {
					evs = append(evs, describeEvent(ev))
				}
				w.fail("the watch of %s (ended: %v) cut after event %d and resumed from revision %d: %s\nresumed with %v", f.call, f.ended, i, c.after, d, evs)
			}
		}
	}
}

func (w *watchWorld) expiry() time.Time {
	if w.rng.IntN(2) == 0 {
		return time.Time{}
	}
	return w.clock.Now().Add(time.Duration(1+w.rng.IntN(20)) * time.Second)
}

func (w *watchWorld) grant(g authz.Grant) {
	_, err := w.eng.Grant(w.ctx, w.by, g)
	w.logf("Grant %s %s on %s until %v = %v", g.Subject, g.Role, g.Resource, g.Expires, err)
	if err == nil {
		w.grants = append(w.grants, g)
	}
}

func (w *watchWorld) someCaps() []string {
	var perms []string
	for _, c := range w.caps {
		if w.rng.IntN(3) == 0 {
			perms = append(perms, c)
		}
	}
	if w.rng.IntN(5) > 0 && !slices.Contains(perms, "join-call") {
		perms = append(perms, "join-call")
	}
	if len(perms) == 0 {
		perms = []string{"read-call"}
	}
	return perms
}

func (w *watchWorld) step() {
	rng := w.rng
	switch n := rng.IntN(100); {
	case n < 22:
		subject, call := pick(rng, w.subjects), pick(rng, w.calls)
		r, err := w.m.Join(w.ctx, "", subject, call, 0)
		w.logf("Join %s %s = %s %.8s %v", subject, call, r.Outcome, r.Session, err)
		if authz.CodeOf(err) == authz.NotFound && !w.registered(call) {
			break
		}
		if err != nil {
			w.fail("Join: %v", err)
		}
		if r.Outcome == Admitted {
			w.ids = append(w.ids, r.Session)
			w.callOf[r.Session] = call
			caps, _, _ := w.eng.Index().ListPermissions(subject, call, false)
			if !slices.Equal(slices.Sorted(slices.Values(r.Capabilities)), slices.Sorted(slices.Values(caps))) {
				w.fail("Join of %s gives %v, ListPermissions %v", subject, r.Capabilities, caps)
			}
		}
	case n < 27:
		if len(w.ids) > 0 {
			id := pick(rng, w.ids)
			err := w.m.Leave(w.ctx, id)
			w.logf("Leave %.8s = %v", id, err)
		}
	case n < 42:
		w.grant(authz.Grant{Subject: pick(rng, w.subjects), Role: pick(rng, w.roles), Resource: pick(rng, w.scopes), Expires: w.expiry()})
	case n < 50:
		if len(w.grants) > 0 {
			g := pick(rng, w.grants)
			_, err := w.eng.Revoke(w.ctx, w.by, g)
			w.logf("Revoke %s %s on %s = %v", g.Subject, g.Role, g.Resource, err)
		}
	case n < 60:
		b := authz.Block{Subject: pick(rng, w.subjects), Resource: pick(rng, w.scopes), Expires: w.expiry()}
		if rng.IntN(3) > 0 {
			b.Permissions = []string{pick(rng, w.caps)}
			if rng.IntN(2) == 0 {
				b.Permissions = append(b.Permissions, "send-audio")
			}
		}
		_, id, err := w.eng.Block(w.ctx, w.by, b)
		w.logf("Block %s on %s of %v until %v = %s %v", b.Subject, b.Resource, b.Permissions, b.Expires, id, err)
		b.ID = id
		if err == nil {
			w.blocks = append(w.blocks, b)
		}
	case n < 65:
		if len(w.blocks) > 0 {
			b := pick(rng, w.blocks)
			id := b.ID
			if rng.IntN(3) == 0 {
				id = ""
			}
			_, err := w.eng.Unblock(w.ctx, w.by, b.Subject, b.Resource, id)
			w.logf("Unblock %s on %s %q = %v", b.Subject, b.Resource, id, err)
		}
	case n < 75:
		r := authz.Role{Name: pick(rng, w.roles), Scope: pick(rng, w.scopes), Permissions: w.someCaps()}
		_, err := w.eng.PutRole(w.ctx, w.by, r)
		w.logf("PutRole %s at %s %v = %v", r.Name, r.Scope, r.Permissions, err)
	case n < 79:
		name, scope := pick(rng, w.roles), pick(rng, w.scopes[1:])
		_, err := w.eng.DeleteRole(w.ctx, w.by, scope, name)
		w.logf("DeleteRole %s at %s = %v", name, scope, err)
	case n < 86:
		var r authz.Resource
		if rng.IntN(2) == 0 {
			r = authz.Resource{Name: pick(rng, []string{"calltype:default", "calltype:audio_room", "calltype:livestream"}), Parent: pick(rng, []string{authz.RootName, "org:a", "org:b"})}
		} else {
			r = authz.Resource{Name: pick(rng, w.calls), Parent: pick(rng, []string{"calltype:default", "calltype:audio_room", "calltype:livestream", "org:a"})}
		}
		_, err := w.eng.PutResource(w.ctx, w.by, r)
		w.logf("Move %s under %s = %v", r.Name, r.Parent, err)
	case n < 89:
		p := w.base
		p.Roles = slices.Clone(p.Roles)
		i := rng.IntN(len(p.Roles))
		p.Roles[i].Permissions = w.someCaps()
		prune := rng.IntN(2) == 0
		_, changes, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{Prune: prune})
		w.logf("ApplyPolicy (prune %v) with %s %v = %d changes %v", prune, p.Roles[i].Name, p.Roles[i].Permissions, len(changes), err)
	case n < 92:
		a := w.base.Admissions[0]
		a.Scope = pick(rng, w.scopes[:6])
		media := *a.Media
		if rng.IntN(2) == 0 {
			media.RoomAdmin = ""
		}
		if rng.IntN(3) == 0 {
			media.CanPublishData = ""
		}
		if rng.IntN(4) == 0 {
			a.Join, media.RoomJoin = "read-call", "read-call"
		}
		a.Media = &media
		if rng.IntN(5) == 0 {
			a.Media = nil // no LiveKit grant
		}
		if rng.IntN(5) == 0 && a.Scope != authz.RootName {
			_, err := w.eng.DeleteAdmission(w.ctx, w.by, a.Scope, "call")
			w.logf("DeleteAdmission at %s = %v", a.Scope, err)
			break
		}
		_, err := w.eng.PutAdmission(w.ctx, w.by, a)
		w.logf("PutAdmission at %s join %q admin %q data %q = %v", a.Scope, a.Join, media.RoomAdmin, media.CanPublishData, err)
	case n < 95:
		// A call deleted, to be registered again by a move of it: another
		// call, of the same name.
		call := pick(rng, w.calls)
		rev, err := w.eng.DeleteResource(w.ctx, w.by, call)
		w.logf("DeleteResource %s = %d %v", call, rev, err)
		if err == nil {
			w.deletedAt[call] = rev
			for id, c := range w.callOf {
				if c == call {
					w.gone[id] = true
				}
			}
		}
	default:
		// Time passes, the view having acted on everything before; the
		// sessions are kept alive, or not.
		w.settle()
		w.drain()
		if rng.IntN(2) == 0 {
			for _, call := range w.calls {
				for _, s := range w.store.Sessions(call) {
					w.m.KeepAlive(w.ctx, s.ID)
				}
			}
		}
		d := time.Duration(1+rng.IntN(12)) * time.Second
		if rng.IntN(6) == 0 {
			d = 31 * time.Second // past the leases of those not kept alive
		}
		w.clock.Advance(d)
		w.logf("Advance %s", d)
	}
}

// TestCallWatchesTellWhatTheIndexSays runs random worlds of the Stream
// policy with calls below two call types, scopes above them, and a few
// participants, through random joins, leaves, grants, revokes, blocks and
// unblocks (some expiring), role definitions and deletions at every level,
// moves of calls and call types, calls deleted and registered again under
// their names, policies applied, LiveKit mappings set and passing time,
// past the leases of participants not kept alive; sometimes the view lags
// a write or two. Once the view has
// acted, each call's stream, replayed, must hold every live participant with
// the capabilities ListPermissions gives it now and the grant they map to,
// and no one else; no CHANGED may tell what was told before, and no
// revision go back. At the end, a stream cut after any event, or holding
// every event below any revision, and resumed from there, must end where the
// stream that followed throughout is. A stream of a deleted call ends
// NotFound holding no one, and one of the call registered again, watched
// anew or resumed from any cut of the first, holds the new call's
// participants and names none of the first's. A failure names the seed:
// -run 'TestCallWatchesTellWhatTheIndexSays/^SEED$' runs its world alone;
// -worlds N -first-world S runs N worlds from seed S.
func TestCallWatchesTellWhatTheIndexSays(t *testing.T) {
	worlds := 100
	if testing.Short() {
		worlds = 30
	}
	for _, seed := range seeds(worlds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			w := newWatchWorld(t, seed)
			for range 60 {
				w.step()
				if w.rng.IntN(3) == 0 {
					w.logf("  (the view lags)")
					continue
				}
				w.check()
			}
			w.check()
			w.resumes()
		})
	}
}
