package admission

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
)

// EventKind says what an Event reports; the values are
// usher.v1.CallEventKind's.
type EventKind uint8

// The kinds of events a watch receives.
const (
	// EventPresent: a participant in the call as the watch starts.
	EventPresent EventKind = iota + 1
	// EventWaiting: a subject in the lobby as the watch starts.
	EventWaiting
	// EventSynced: what follows happens live.
	EventSynced
	EventJoined
	// EventChanged: a participant's capabilities changed.
	EventChanged
	// EventEjected: a participant may no longer be in the call; its
	// session has ended.
	EventEjected
	EventLeft
	EventLapsed
	EventKnocked
	EventAdmitted
	EventDenied
)

// Event is one thing that happened in a call.
type Event struct {
	Kind     EventKind
	Revision authz.Revision
	Time     time.Time
	Subject  string
	Session  string
	// Capabilities and Grant (where the rule maps to LiveKit) are the
	// participant's, for Present, Joined and Changed.
	Capabilities []string
	Grant        *auth.VideoGrant
	// Outcome and BlockID say why a participant was ejected.
	Outcome Outcome
	BlockID string
	Note    string
	// Reset (Synced): the watch could not resume and sent the whole state.
	Reset bool
}

// view is the manager's picture of every live session, fed by the store's
// events, and kept against the index: when a change set or the passing of
// time changes a participant's standing, it tells the call's watchers, and
// ends the session of one who may no longer be there. One goroutine, loop,
// does all of it; mu guards what Watch reads.
type view struct {
	m *Manager

	mu        sync.Mutex
	sessions  map[string]*tracked            // by session id
	byCall    map[string]*tracked            // call -> the first of its sessions (tracked.call), in no order
	bySubject map[string]*tracked            // subject -> the first of its sessions (tracked.subject), in no order
	watchers  map[string]map[*Watch]struct{} // call ->
	nwatchers int
	// cut counts the watches dropped but not yet closed: a stream cut off
	// for falling behind stays open until its client has read what it was
	// sent, which HTTP/2 flow control holds for as long as the client reads
	// nothing. They count against maxWatch beside nwatchers.
	cut      int
	maxWatch int
	// initial counts the events of initial states held until sent, at
	// most maxInitial.
	initial, maxInitial int
	buffer              int
	storeWait           time.Duration // Options.StoreWait
	// ended is a ring of the last sessions to end, and endingOrder one of
	// the ids in endings: each grows as sessions end, to rememberN entries,
	// rather than hold them all from the start.
	rememberN int
	ended     []endedSession
	endedNext int
	endedSeq  uint64
	// lastEnded is the latest remembered ending of each call that has one
	// in the ring.
	lastEnded map[string]endedRef
	// forgotten is the latest revision of an ending or a change the view
	// may not know of: one the ring dropped, the revision it started at,
	// before which it heard of none, or that of an index it looked at
	// whole, not knowing what had changed before it (sift).
	forgotten authz.Revision
	// lost is when the store last lost track of the sessions and knocks
	// (StoreEvent.Lost): a watch resuming from a revision committed before
	// it may have been told of some the view never heard of.
	lost time.Time
	dues dueQueue[*tracked] // the tracked sessions with a due time, once each
	// dueAt is v.dues.first(), written under v.mu, read without it.
	dueAt  atomic.Int64
	ahead  map[*tracked]bool // sessions admitted at a revision the index has yet to apply
	closed bool

	appliedMu  sync.Mutex
	appliedQ   []*authz.ChangeSet
	appliedAll bool // a resync, or more change sets than are worth sifting
	// blind is the revision of the index at the last resync, or at the
	// change set that made the queue too long to sift: what changed up to
	// it, the view never looks at change by change.
	blind      authz.Revision
	appliedSig chan struct{}
	// queued is the revision of the last change set queued, and queuedCh
	// is closed (and replaced) when another is: settle waits on them.
	// Both are guarded by appliedMu.
	queued   authz.Revision
	queuedCh chan struct{}
	// siftMu makes one sift at a time take the queue and act on it, so
	// that once a sift returns, every change set queued before it began
	// has been acted on.
	siftMu passLock
	// sifted is the revision of the last change set a sift has acted on:
	// a Join that read the index at a later one settles first.
	sifted atomic.Uint64
	// expiring counts the passes of expire that are taking what is due,
	// looking at it and acting on it; expireMu makes one pass at a time.
	expiring atomic.Int32
	expireMu passLock

	// endings remembers how the last sessions and knocks ended, by id, for
	// a KeepAlive that comes after: a ring of ids bounds it.
	endings     map[uint64]endingOf // by idKey; no pointers to follow
	blockIDs    map[uint64]string   // by idKey, the endings with a BlockID
	endingOrder []uint64
	endingNext  int
	idSeed      maphash.Seed

	// denying are the knocks being ended because their subjects may no
	// longer join, with the outcome that says why, from before the store
	// is asked until it has answered (endKnockDenied): the store's event of
	// the ending, which a stream may be told of first, lacks it. Guarded
	// by mu.
	denying map[string]Outcome

	// remarks are the sessions whose Counted or Exclusive the store has yet
	// to be told of, with the revision the view read them at; markMu keeps
	// those who tell it in the order the view read the marks, so that an
	// older reading never lands last. unmarked counts the marks noted in
	// remarks or being told the store.
	remarks  map[string]authz.Revision
	markMu   passLock
	unmarked atomic.Int64

	// denyQ is what sift found of the lobbies it may have touched
	// (lobbiesTouched), merged until deny takes it, up to the revision
	// denyUpTo: knocks are denied apart from sift, which Joins wait for,
	// so that no Join waits on a store write a denial makes. denied is the
	// revision up to which deny has judged them. denyMu guards both.
	denyMu   sync.Mutex
	denyQ    map[string]map[string]bool
	denyUpTo authz.Revision
	denySig  chan struct{}
	denied   atomic.Uint64
	// lobbyDue is, for each watched call with knocks, the soonest a grant
	// or block of a knocker's there runs out (unix nanoseconds): the call's
	// knocks are judged again then, and a knocker whose grant ran out is
	// denied, as one whose grant was revoked is. denyAt is the soonest of
	// them, read each tick without denyMu. denyMu guards lobbyDue.
	lobbyDue map[string]int64
	denyAt   atomic.Int64

	stop     chan struct{}
	done     chan struct{}
	probed   chan struct{} // closed when probe returns
	denyDone chan struct{} // closed when deny returns
}

type tracked struct {
	s    place
	caps []string
	// joined are its capabilities when it joined (Session.Capabilities):
	// what it came in by, which a mute does not take it out of
	// (ejectsSession).
	joined []string
	rev    authz.Revision // when it joined or its caps last changed, as told
	media  *authz.MediaMapping
	due    due // when to look again, when queued in v.dues
	// ended: v.endings has its ending, and the store has yet to say so.
	ended bool
	// t's neighbours in its call's and its subject's lists: lists linked
	// through the sessions, rather than a slice for each call and subject,
	// hold nothing more for the collector to mark.
	call, subject links
}

// links are a tracked session's neighbours in a list.
type links struct{ prev, next *tracked }

func (t *tracked) slot() *due           { return &t.due }
func (t *tracked) callLinks() *links    { return &t.call }
func (t *tracked) subjectLinks() *links { return &t.subject }

// push puts t first in heads[key], the list of l.
func push(heads map[string]*tracked, key string, t *tracked, l func(*tracked) *links) {
	first := heads[key]
	*l(t) = links{next: first}
	if first != nil {
		l(first).prev = t
	}
	heads[key] = t
}

// unlink takes t out of heads[key], the list of l.
func unlink(heads map[string]*tracked, key string, t *tracked, l func(*tracked) *links) {
	tl := l(t)
	switch {
	case tl.prev != nil:
		l(tl.prev).next = tl.next
	case tl.next != nil:
		heads[key] = tl.next
	default:
		delete(heads, key)
	}
	if tl.next != nil {
		l(tl.next).prev = tl.prev
	}
	*tl = links{}
}

// place is what the view keeps of a session: whose it is, where, and its
// marks.
type place struct {
	ID, Subject, Call string
	Counted           bool
	Exclusive         []string
}

func placeOf(s Session) place {
	return place{ID: s.ID, Subject: s.Subject, Call: s.Call, Counted: s.Counted, Exclusive: s.Exclusive}
}

// endedSession is an ending the view remembers, in the ring v.ended. seq
// counts the endings remembered, and tells whether a slot still holds the
// one it held; each links to the call's previous ending in the ring, so
// that a watch resuming reads the call's endings rather than all of them.
type endedSession struct {
	call string
	ev   Event
	seq  uint64
	prev endedRef // the call's ending before it; at -1 for none
}

// deletion reports whether e is no ending but the call's deletion, at
// e.ev.Revision, after which a stream from before starts over (a SYNCED
// with reset): the endings before it are the first call's of the name.
func (e *endedSession) deletion() bool { return e.ev.Kind == EventSynced }

// endedRef is an ending's place in the ring, and its seq there.
type endedRef struct {
	at  int32
	seq uint64
}

// maxQueuedSets is how many change sets wait to be sifted before the view
// looks at every session instead.
const maxQueuedSets = 1024

// tickEvery is how often the view looks for grants and blocks that expired.
const tickEvery = 20 * time.Millisecond

// probeEvery is how often the view, while it has watchers, reads the
// backend's latest revision to learn whether this node is cut off from it.
const probeEvery = 500 * time.Millisecond

func newView(m *Manager, opts Options) *view {
	v := &view{
		m: m, sessions: map[string]*tracked{}, byCall: map[string]*tracked{},
		bySubject: map[string]*tracked{}, ahead: map[*tracked]bool{}, watchers: map[string]map[*Watch]struct{}{},
		maxWatch: opts.MaxWatchers, maxInitial: opts.MaxInitialEvents, buffer: opts.WatchBuffer, rememberN: opts.Remember,
		storeWait: opts.StoreWait, forgotten: m.engine.Index().Revision(),
		endings: map[uint64]endingOf{}, blockIDs: map[uint64]string{}, idSeed: maphash.MakeSeed(), remarks: map[string]authz.Revision{}, lastEnded: map[string]endedRef{}, denying: map[string]Outcome{},
		appliedSig: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		denySig: make(chan struct{}, 1), denyDone: make(chan struct{}),
		probed: make(chan struct{}), queued: m.engine.Index().Revision(), queuedCh: make(chan struct{}),
		siftMu: make(passLock, 1), expireMu: make(passLock, 1), markMu: make(passLock, 1),
	}
	v.dueAt.Store(math.MaxInt64)
	v.lobbyDue = map[string]int64{}
	v.denyAt.Store(math.MaxInt64)
	return v
}

// applied is the engine's listener: it queues the change set for loop.
func (v *view) applied(x *authz.Index, cs *authz.ChangeSet) {
	v.appliedMu.Lock()
	if cs == nil || len(v.appliedQ) >= maxQueuedSets {
		v.appliedAll, v.appliedQ, v.blind = true, nil, x.Revision()
	} else if !v.appliedAll {
		v.appliedQ = append(v.appliedQ, cs)
	}
	if r := x.Revision(); r > v.queued {
		v.queued = r
		close(v.queuedCh)
		v.queuedCh = make(chan struct{})
	}
	v.appliedMu.Unlock()
	select {
	case v.appliedSig <- struct{}{}:
	default:
	}
}

func (v *view) loop() {
	defer close(v.done)
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	pending := v.m.store.Pending()
	for {
		select {
		case <-v.stop:
			return
		case <-pending:
			v.storeEvents()
		case <-v.appliedSig:
			v.sift(context.Background())
		case <-tick.C:
			v.expire(context.Background())
		}
	}
}

func (v *view) close() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	v.mu.Unlock()
	close(v.stop)
	<-v.done
	<-v.probed
	<-v.denyDone
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ws := range v.watchers {
		for w := range ws {
			v.drop(w, &authz.Error{Code: authz.Unavailable, Kind: authz.KindShuttingDown, Reason: "the server is stopping; resume the watch on another"})
		}
	}
}

// probe ends every watch, until the view stops, whenever the backend is
// out of reach: a node cut off from etcd hears nothing more of what other
// nodes commit (a block, a revoke), nor of the sessions they end, and a
// watch left open here would be silent about them for as long as the cut
// lasts. Its client resumes on another node from the last revision it
// received, as a public Watch's does.
func (v *view) probe() {
	defer close(v.probed)
	stop := v.stop
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		v.mu.Lock()
		watched := v.nwatchers > 0
		v.mu.Unlock()
		if !watched {
			continue
		}
		err := v.m.engine.Reachable(ctx)
		if err == nil || ctx.Err() != nil {
			continue
		}
		v.mu.Lock()
		for _, ws := range v.watchers {
			for w := range ws {
				v.drop(w, &authz.Error{Code: authz.Unavailable, Kind: authz.KindUnavailableStorage, Err: err,
					Reason: fmt.Sprintf("this server is cut off from its storage (%v): resume the watch on another from the last revision received", err)})
			}
		}
		v.mu.Unlock()
	}
}

func (v *view) revision() authz.Revision { return v.m.engine.Index().Revision() }

// storeEvents brings the store's events into the view and tells watchers.
func (v *view) storeEvents() {
	v.mu.Lock()
	// The index is read under v.mu: read before it, it could be older than
	// one a sift that took v.mu first has judged the view's sessions at,
	// and a session brought in from it would miss the writes in between.
	eject := v.consume(v.m.engine.Index(), nil, "", nil)
	v.mu.Unlock()
	v.followUp(context.Background(), eject)
}

// endKind is the event that tells watchers of an ending; 0 for endings
// that need none (a replaced session, a knock that became a session). A
// knock let in is told as ADMITTED by every node, whichever admitted it.
func endKind(why Why) EventKind {
	switch why {
	case Left:
		return EventLeft
	case Lapsed:
		return EventLapsed
	case Ejected:
		return EventEjected
	case Denied:
		return EventDenied
	case LetIn:
		return EventAdmitted
	}
	return 0
}

// consume takes the store's queued events into the view, in their order,
// and tells watchers. Taking them under v.mu keeps every event of a call in
// the store's order, whoever takes them. v.mu is held.
// A join this node just made is known by its id, with what it read (p).
func (v *view) consume(x *authz.Index, eject []ejection, own string, p *authz.Presence) []ejection {
	// replaced is the tracked session of the last event, when it ended
	// by the subject joining the call again: the next event, the join,
	// takes its place in the call's and the subject's lists.
	var replaced *tracked
	for _, e := range v.m.store.Take() {
		if replaced != nil && (e.Session == nil || e.Ended != nil || e.Session.Subject != replaced.s.Subject || e.Session.Call != replaced.s.Call) {
			v.unlist(replaced)
			replaced = nil
		}
		switch {
		case e.Lost:
			// A watch resuming from before then may have been told,
			// through another node, of what this one never heard of.
			if e.Time.After(v.lost) {
				v.lost = e.Time
			}
		case e.Session != nil && e.Ended == nil:
			if v.sessions[e.Session.ID] == nil {
				var read *authz.Presence
				if e.Session.ID == own {
					read = p
				}
				eject = v.join(x, *e.Session, e.Time, read, eject, replaced)
			} else if replaced != nil {
				v.unlist(replaced)
			}
			replaced = nil
		case e.Session != nil:
			s := e.Session
			t := v.sessions[s.ID]
			if t != nil && !t.ended {
				// Nothing has told the view how it ended yet.
				v.record(v.idKey(s.ID), *e.Ended)
			} else {
				v.ended1(s.ID, *e.Ended)
			}
			kind := endKind(e.Ended.Why)
			if e.Ended.Why == Replaced {
				// Live, the new session's JOINED says it all. A stream that
				// resumes from before it may not hear of that session (it
				// ended too, say), and is told that this one left.
				v.remember(s.Call, Event{Kind: EventLeft, Revision: x.Revision(), Time: e.Time, Subject: s.Subject, Session: s.ID})
			}
			if t != nil {
				delete(v.sessions, s.ID)
				delete(v.ahead, t)
				v.unschedule(t)
				if kind == 0 {
					replaced = t
					continue
				}
				v.unlist(t)
			}
			if kind == 0 {
				continue // replaced: the new session's Joined says it all
			}
			ev := Event{Kind: kind, Revision: x.Revision(), Time: e.Time, Subject: s.Subject, Session: s.ID,
				Outcome: e.Ended.Outcome, BlockID: e.Ended.BlockID}
			if x.Revision() < s.Revision || x.Under(s.Call, s.Call) {
				// Not an ending of a call deleted since it joined, heard
				// late: a watch of one registered again under the name,
				// resumed from before, would be told of it. An index
				// behind the join has yet to register the call.
				v.remember(s.Call, ev)
			}
			v.broadcast(s.Call, ev)
		case e.Knock != nil && e.Ended == nil:
			k := e.Knock
			v.broadcast(k.Call, Event{Kind: EventKnocked, Revision: x.Revision(), Time: e.Time, Subject: k.Subject, Session: k.ID, Note: k.Note})
			if len(v.watchers[k.Call]) > 0 {
				// The call's knocks are judged again when this one's
				// standing runs out; or at once, when it may no longer join
				// already (a write, or the time, passed since it knocked):
				// one pass for the call, however many such knocks.
				p := x.Presence(k.Subject, k.Call)
				if out, _ := ejects(p, k.Subject, k.Call); out != 0 {
					v.lobbyDueBy(k.Call, v.m.clock.Now().UnixNano())
				} else if !p.Until.IsZero() {
					v.lobbyDueBy(k.Call, p.Until.UnixNano())
				}
			}
		case e.Knock != nil:
			k := e.Knock
			v.ended1(k.ID, *e.Ended)
			kind := endKind(e.Ended.Why)
			if kind != 0 && kind != EventEjected {
				v.broadcast(k.Call, Event{Kind: kind, Revision: x.Revision(), Time: e.Time, Subject: k.Subject, Session: k.ID})
			}
		}
	}
	if replaced != nil {
		v.unlist(replaced)
	}
	return eject
}

// join brings a session that began into the view and tells the call's
// watchers. p is what the join read, when this node made it; the index may
// have moved since, and then the session is read again. in is the
// subject's session in the call that this one replaced, taken out of the
// view but for its places in the call's and the subject's lists, which the
// new one takes; or nil. v.mu is held.
func (v *view) join(x *authz.Index, s Session, at time.Time, p *authz.Presence, eject []ejection, in *tracked) []ejection {
	var t *tracked
	if in != nil {
		t = in
		// It keeps its lists and its standing in v.dues, whose records of
		// it from before tell themselves apart by its generation.
		*t = tracked{s: placeOf(s), caps: s.Capabilities, joined: s.Capabilities, rev: s.Revision, due: in.due, call: in.call, subject: in.subject}
		v.sessions[s.ID] = t
	} else {
		t = &tracked{s: placeOf(s), caps: s.Capabilities, joined: s.Capabilities, rev: s.Revision}
		v.add(t)
	}
	if x.Revision() < s.Revision {
		// An index behind the join may lack the grant it joined by: the
		// node that admitted it read the index at s.Revision, and this one
		// looks again once it has applied that (sift). Until then it is
		// told as it joined.
		v.ahead[t] = true
	} else {
		if p == nil || x.Revision() != p.Revision {
			now := x.Presence(s.Subject, s.Call)
			p = &now
		}
		if out, _ := ejectsSession(*p, s.Subject, s.Call, s.Capabilities, at); out != 0 {
			e := Ending{Why: Ejected, Outcome: out, BlockID: p.BlockID}
			eject = append(eject, ejection{s.ID, e})
			v.ended1(s.ID, e)
			t.ended = true
		} else {
			if !slices.Equal(p.Capabilities, t.caps) {
				t.caps = p.Capabilities
			}
			// Joined is told at the revision read now, which no event told
			// before it is past: a stream cut after a write that overtook the
			// join's own read resumes from that write's revision, and must
			// still find the participant.
			t.rev = p.Revision
			t.media = p.Rule.Media
			v.schedule(t, p.Until)
			v.remark(t, *p)
		}
	}
	if len(v.watchers[s.Call]) > 0 {
		v.broadcast(s.Call, v.participant(EventJoined, t, at))
	}
	return eject
}

// toldOf is what the view has told a call's watchers of a participant: its
// capabilities, under the LiveKit mapping they were read with, and until,
// when the standing they were read from runs out (zero when it does not,
// or when the view is looking at it again).
type toldOf struct {
	caps  []string
	media *authz.MediaMapping
	until time.Time
}

// joined brings a session this node just made into the view, so that a
// watch started after Join returns sees it; the store's event for it then
// finds it there. A session that has ended since is left out. It reports
// whether the view has ejected the session already, and why: a write
// that committed after Join read the subject may have taken its place in
// the call away. Otherwise it says what the view told of the participant
// (p's, when it tracks the session no longer): a write that committed
// after Join read p is in it, and the watchers hear of every later one.
func (v *view) joined(s Session, p authz.Presence) (toldOf, Ending, bool) {
	v.mu.Lock()
	x := v.m.engine.Index() // under v.mu, as storeEvents reads it
	// What the store queued before the join (the end of the subject's last
	// session, say) goes first, and likely the join itself with it.
	eject := v.consume(x, nil, s.ID, &p)
	if v.sessions[s.ID] == nil {
		if _, live := v.m.store.Session(s.ID); live {
			eject = v.join(x, s, s.Joined, &p, eject, nil)
		}
	}
	// Only a session the view no longer tracks, or one it has ended, may
	// have been ejected.
	var e Ending
	ended := false
	now := toldOf{caps: p.Capabilities, media: p.Rule.Media, until: p.Until}
	if t := v.sessions[s.ID]; t == nil || t.ended {
		e, ended = v.endingAt(v.idKey(s.ID))
	} else if !v.ahead[t] {
		now = toldOf{caps: t.caps, media: t.media}
		if t.due.queued {
			now.until = time.Unix(0, t.due.at)
		}
	}
	v.mu.Unlock()
	v.followUp(context.Background(), eject)
	return now, e, ended && e.Why == Ejected
}

// followUp does what the view decided under v.mu and leaves to the store:
// it ends the sessions of eject, then marks the sessions whose standing
// changed, within ctx. A store write that runs out of StoreWait, or of ctx,
// ends the pass: the store is out of reach, and the marks left wait for
// the next pass.
func (v *view) followUp(ctx context.Context, eject []ejection) {
	if v.eject(ctx, eject) {
		v.mark(ctx)
	}
}

// passLock is a lock held by a pass of the view, which may wait on the
// store for StoreWait: one who waits for it within a context (a Join
// bounded by StoreWait itself) stops waiting once that is done.
type passLock chan struct{}

// lock takes l, or returns ctx's error once ctx is done first.
func (l passLock) lock(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l passLock) unlock() { <-l }

// outOfReach reports whether a store write failed for running out of
// StoreWait.
func outOfReach(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

// remark notes that t's marks differ from what the rule in force reads of
// its subject now (p), for mark to tell the store: a host demoted to member
// counts from now on, a member granted an exclusive role holds the room.
// Nobody is evicted for it; the joins that follow see it. v.mu is held.
func (v *view) remark(t *tracked, p authz.Presence) {
	counted, exclusive := marksOf(p)
	if counted == t.s.Counted && slices.Equal(exclusive, t.s.Exclusive) {
		return
	}
	t.s.Counted, t.s.Exclusive = counted, exclusive
	v.toMark(t.s.ID, p.Revision)
}

// toMark notes that the marks of session id, read at revision at, are to
// be told the store. v.mu is held.
func (v *view) toMark(id string, at authz.Revision) {
	was, noted := v.remarks[id]
	if !noted {
		v.unmarked.Add(1)
	}
	v.remarks[id] = max(was, at)
}

// mark tells the store the marks remark noted, as they stand now, within
// ctx. It returns once the store has them, or has failed to take them,
// those that another mark is telling it included: a Join decides on the
// store's marks next.
func (v *view) mark(ctx context.Context) {
	if v.unmarked.Load() == 0 {
		return
	}
	if v.markMu.lock(ctx) != nil {
		return
	}
	defer v.markMu.unlock()
	v.mu.Lock()
	type marked struct {
		place
		at authz.Revision
	}
	var marks []marked
	for id, at := range v.remarks {
		if t := v.sessions[id]; t != nil {
			marks = append(marks, marked{t.s, at})
		}
	}
	taken := int64(len(v.remarks))
	clear(v.remarks)
	v.mu.Unlock()
	defer v.unmarked.Add(-taken)
	for i, s := range marks {
		ctx, cancel := context.WithTimeout(ctx, v.storeWait)
		_, err := v.m.store.Mark(ctx, s.ID, s.Counted, s.Exclusive, s.at)
		cancel()
		if err == nil || errors.Is(err, ErrNoSession) {
			continue
		}
		v.m.logger.Warn("a session's capacity and occupancy marks could not be updated; they are tried again at the view's next pass",
			"session", s.ID, "error", err)
		left := marks[i : i+1]
		if outOfReach(err) {
			left = marks[i:]
		}
		v.mu.Lock()
		for _, s := range left {
			v.toMark(s.ID, s.at)
		}
		v.mu.Unlock()
		if outOfReach(err) {
			return
		}
	}
}

type ejection struct {
	id  string
	why Ending
}

// eject ends the sessions of participants who may no longer be there,
// within ctx; the store's events then tell the watchers. It reports false
// when the store is out of reach, leaving the rest: those sessions end
// when their leases lapse, or at their next KeepAlive.
func (v *view) eject(ctx context.Context, list []ejection) bool {
	for i, e := range list {
		ctx, cancel := context.WithTimeout(ctx, v.storeWait)
		_, err := v.m.store.End(ctx, e.id, e.why)
		cancel()
		if err == nil || errors.Is(err, ErrNoSession) {
			continue
		}
		v.m.logger.Warn("a session could not be ended", "session", e.id, "left", len(list)-i-1, "error", err)
		if outOfReach(err) {
			return false
		}
	}
	return true
}

func (v *view) add(t *tracked) {
	if old := v.sessions[t.s.ID]; old != nil {
		v.remove(old)
	}
	v.sessions[t.s.ID] = t
	push(v.byCall, t.s.Call, t, (*tracked).callLinks)
	push(v.bySubject, t.s.Subject, t, (*tracked).subjectLinks)
}

func (v *view) remove(t *tracked) {
	delete(v.sessions, t.s.ID)
	delete(v.ahead, t)
	v.unlist(t)
	v.unschedule(t)
}

// unlist takes t out of its call's and its subject's lists.
func (v *view) unlist(t *tracked) {
	unlink(v.byCall, t.s.Call, t, (*tracked).callLinks)
	unlink(v.bySubject, t.s.Subject, t, (*tracked).subjectLinks)
}

// sift finds the sessions the queued change sets may have changed, and
// looks at them again, within ctx: it returns at once when ctx is done
// before the sift under way is.
func (v *view) sift(ctx context.Context) {
	if v.siftMu.lock(ctx) != nil {
		return
	}
	defer v.siftMu.unlock()
	v.appliedMu.Lock()
	sets, all, upTo, blind := v.appliedQ, v.appliedAll, v.queued, v.blind
	v.appliedQ, v.appliedAll = nil, false
	v.appliedMu.Unlock()
	defer v.sifted.Store(uint64(upTo))
	x := v.m.engine.Index()
	v.mu.Lock()
	dirty := map[*tracked]bool{}
	if all {
		for _, t := range v.sessions {
			dirty[t] = true
		}
		// A snapshot loaded, or more change sets than were worth sifting:
		// a participant's standing may have changed and changed back
		// meanwhile, which a watch served by another node was told of, and
		// a watch resuming from before then is sent the whole state.
		v.forgotten = max(v.forgotten, blind)
	}
	for t := range v.ahead {
		if v.sessions[t.s.ID] != t {
			delete(v.ahead, t) // ended meanwhile
		} else if t.rev <= x.Revision() {
			dirty[t] = true
		}
	}
	for _, cs := range sets {
		if len(dirty) == len(v.sessions) {
			break
		}
		for _, c := range cs.Changes {
			v.touched(x, c, dirty)
		}
	}
	gone := v.deleted(x, sets, all)
	held := v.held(gone)
	eject := v.leaveDeleted(gone, dirty)
	eject = append(eject, v.reread(x, dirty)...)
	lobbies := v.lobbiesTouched(x, sets, all, gone)
	v.mu.Unlock()
	v.followUp(ctx, eject)
	if len(gone) > 0 {
		v.endCalls(gone, held)
	}
	v.queueDenials(lobbies, upTo)
}

// maxDenySubjects is how many subjects of one call the queue of denials
// names; past that, every knock of the call is judged.
const maxDenySubjects = 1024

// queueDenials hands lobbies, found by the sift of the change sets up to
// upTo, to deny.
func (v *view) queueDenials(lobbies map[string]map[string]bool, upTo authz.Revision) {
	v.denyMu.Lock()
	if v.denyQ == nil {
		v.denyQ = map[string]map[string]bool{}
	}
	for call, subjects := range lobbies {
		have, queued := v.denyQ[call]
		switch {
		case !queued || subjects == nil:
			v.denyQ[call] = subjects
		case have != nil:
			maps.Copy(have, subjects)
			if len(have) > maxDenySubjects {
				v.denyQ[call] = nil
			}
		}
	}
	v.denyUpTo = max(v.denyUpTo, upTo)
	v.denyMu.Unlock()
	select {
	case v.denySig <- struct{}{}:
	default:
	}
}

// deny ends the knocks that sift found may no longer wait (denyKnocks),
// pass after pass, until the view stops.
func (v *view) deny() {
	defer close(v.denyDone)
	// A pass under way stops with the view, not a StoreWait later.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-v.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.denySig:
		case <-tick.C:
			if v.m.clock.Now().UnixNano() < v.denyAt.Load() {
				continue
			}
		}
		v.denyPass(ctx)
	}
}

// denyPass takes what queueDenials queued, and the lobbies whose knocks
// are due to be judged again (lobbyDue), and acts on them.
func (v *view) denyPass(ctx context.Context) {
	now := v.m.clock.Now().UnixNano()
	v.denyMu.Lock()
	lobbies, upTo := v.denyQ, v.denyUpTo
	v.denyQ = nil
	for call, at := range v.lobbyDue {
		if at <= now {
			if lobbies == nil {
				lobbies = map[string]map[string]bool{}
			}
			lobbies[call] = nil // every knock of the call
			delete(v.lobbyDue, call)
		}
	}
	v.denyAt.Store(v.soonestLobbyDue())
	v.denyMu.Unlock()
	v.denyKnocks(ctx, lobbies)
	v.denied.Store(uint64(upTo))
}

// setLobbyDue has the knocks of call judged again at at (math.MaxInt64:
// never), and denyAt follow. v.denyMu is held.
func (v *view) setLobbyDue(call string, at int64) {
	if at == math.MaxInt64 {
		delete(v.lobbyDue, call)
	} else {
		v.lobbyDue[call] = at
	}
	v.denyAt.Store(v.soonestLobbyDue())
}

// soonestLobbyDue is the soonest of lobbyDue, math.MaxInt64 when empty.
// v.denyMu is held.
func (v *view) soonestLobbyDue() int64 {
	soonest := int64(math.MaxInt64)
	for _, at := range v.lobbyDue {
		soonest = min(soonest, at)
	}
	return soonest
}

// lobbyDueBy has the knocks of call judged again no later than at. v.mu is
// held.
func (v *view) lobbyDueBy(call string, at int64) {
	v.denyMu.Lock()
	defer v.denyMu.Unlock()
	if cur, ok := v.lobbyDue[call]; !ok || at < cur {
		v.setLobbyDue(call, at)
	}
}

// judgeLobbyAt notes when the knocks of call judged by a pass of
// denyKnocks are next to be judged: at the soonest of until, the ends of
// their knockers' standing (math.MaxInt64 for none), or as before, when
// only some were judged (whole false). Only for a call watched still: the
// knocks of a call no one watches end at their next KeepAlive.
func (v *view) judgeLobbyAt(call string, whole bool, until int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.denyMu.Lock()
	defer v.denyMu.Unlock()
	if at, ok := v.lobbyDue[call]; ok && !whole {
		until = min(at, until)
	}
	if len(v.watchers[call]) == 0 {
		until = math.MaxInt64
	}
	v.setLobbyDue(call, until)
}

// maxLobbyChanges is how many changes sift matches against the watched
// calls one by one, for the knocks they may touch; past that, every knock
// of a watched call is looked at.
const maxLobbyChanges = 1024

// lobbiesTouched returns the watched calls with a lobby, but those of
// gone, whose knocks sets may have left unable to join: by call, the
// subjects a grant or a block names, or nil for every knock of the call.
// Only watched calls: a stream is told DENIED of each knock denyKnocks
// ends, and the knocks of a call no one watches end at their next
// KeepAlive, as ListLobby leaves them out until then. v.mu is held.
func (v *view) lobbiesTouched(x *authz.Index, sets []*authz.ChangeSet, all bool, gone map[string]authz.Revision) map[string]map[string]bool {
	// Only the watched calls with a lobby: most have none, and a change
	// is matched against each of them.
	var lobbied []string
	for call := range v.watchers {
		if _, knocks := v.m.store.Count(call); knocks > 0 {
			lobbied = append(lobbied, call)
		}
	}
	if len(lobbied) == 0 {
		return nil
	}
	out := map[string]map[string]bool{}
	n := 0
	for _, cs := range sets {
		n += len(cs.Changes)
	}
	if all || n > maxLobbyChanges {
		for _, call := range lobbied {
			out[call] = nil
		}
	} else {
		at := func(scope, subject string) {
			if scope == "" {
				scope = authz.RootName
			}
			for _, call := range lobbied {
				subjects, seen := out[call]
				if (seen && subjects == nil) || !x.Under(call, scope) {
					continue
				}
				if subject == "" {
					out[call] = nil
					continue
				}
				if subjects == nil {
					subjects = map[string]bool{}
					out[call] = subjects
				}
				subjects[subject] = true
			}
		}
		for _, cs := range sets {
			for _, c := range cs.Changes {
				switch {
				case c.Grant != nil:
					at(c.Grant.Resource, c.Grant.Subject)
				case c.Block != nil:
					at(c.Block.Resource, c.Block.Subject)
				case c.Role != nil:
					at(c.Role.Scope, "")
				case c.Resource != nil:
					at(c.Resource.Name, "")
				case c.Admission != nil:
					at(c.Admission.Scope, "")
				case c.Permission != nil:
					at(authz.RootName, "")
				}
			}
		}
	}
	for call := range gone {
		delete(out, call) // endCalls denied its knocks
	}
	return out
}

// denyKnocks ends, denied, the knocks of lobbies (lobbiesTouched) whose
// subjects may no longer join: blocked, or left with no grant of the join
// permission, as their KeepAlive would. A knock made through another node
// may rest on a grant this one has yet to apply: the knocks are judged
// again at the latest revision before any is denied.
func (v *view) denyKnocks(ctx context.Context, lobbies map[string]map[string]bool) {
	if len(lobbies) == 0 {
		return
	}
	x := v.m.engine.Index()
	var deny []Knock
	for call, subjects := range lobbies {
		until := int64(math.MaxInt64)
		for _, k := range v.m.store.Knocks(call) {
			if subjects != nil && !subjects[k.Subject] {
				continue
			}
			p := x.Presence(k.Subject, call)
			if out, _ := ejects(p, k.Subject, call); out != 0 {
				deny = append(deny, k)
			} else if !p.Until.IsZero() {
				until = min(until, p.Until.UnixNano())
			}
		}
		v.judgeLobbyAt(call, subjects == nil, until)
	}
	if len(deny) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, v.storeWait)
	defer cancel()
	if v.m.remote {
		if err := v.m.engine.AwaitLatest(ctx); err != nil {
			return // their KeepAlives deny them
		}
		x = v.m.engine.Index()
	}
	for i, k := range deny {
		out, _ := ejects(x.Presence(k.Subject, k.Call), k.Subject, k.Call)
		if out == 0 {
			continue
		}
		// By its id: the subject may have knocked again since, and that
		// knock is judged by the pass that reads it.
		_, err := v.endKnockDenied(ctx, k.ID, out)
		switch {
		case err == nil:
		case !errors.Is(err, ErrNoSession):
			v.m.logger.Warn("the knock of a subject that may no longer join could not be ended; its KeepAlive ends it",
				"call", k.Call, "subject", k.Subject, "left", len(deny)-i-1, "error", err)
			if outOfReach(err) || ctx.Err() != nil {
				return // the rest end at their KeepAlives
			}
		}
	}
}

// endKnockDenied ends the knock id, denied because its subject may no
// longer join (out), and remembers why for its KeepAlive, which answers
// out as its own denial would. A stream told DENIED may ask at once: why
// is noted before the store is asked, for the store's event to carry; and
// after, unless the knock had ended otherwise, for a write whose answer
// was lost may have gone through.
func (v *view) endKnockDenied(ctx context.Context, id string, out Outcome) (Knock, error) {
	v.mu.Lock()
	v.denying[id] = out
	v.mu.Unlock()
	k, err := v.m.store.EndKnock(ctx, id, Denied)
	if !errors.Is(err, ErrNoSession) {
		v.note(id, Ending{Why: Denied, Outcome: out})
	}
	v.mu.Lock()
	delete(v.denying, id)
	v.mu.Unlock()
	return k, err
}

// held returns the deleted calls of gone of which a stream may hold
// participants: those with sessions, watchers or endings remembered. Other
// resources deleted, which no one joined, take no place in the ring of
// endings. v.mu is held.
func (v *view) held(gone map[string]authz.Revision) map[string]bool {
	var held map[string]bool
	for call := range gone {
		if _, ended := v.lastEnded[call]; ended || v.byCall[call] != nil || len(v.watchers[call]) > 0 {
			if held == nil {
				held = map[string]bool{}
			}
			held[call] = true
		}
	}
	return held
}

// deleted returns the resources that were deleted, with the revision of
// their deletion: a call registered again under the name is another, which
// the knocks and watches of the first are not of. A resync, with no change
// sets to read, finds the watched calls no longer registered. v.mu is held.
func (v *view) deleted(x *authz.Index, sets []*authz.ChangeSet, all bool) map[string]authz.Revision {
	var gone map[string]authz.Revision
	note := func(name string, rev authz.Revision) {
		if gone == nil {
			gone = map[string]authz.Revision{}
		}
		gone[name] = rev
	}
	if all {
		for call := range v.watchers {
			if !x.Under(call, call) {
				note(call, x.Revision())
			}
		}
		for call, r := range v.lastEnded {
			if !v.ended[r.at].deletion() && !x.Under(call, call) {
				note(call, x.Revision())
			}
		}
	}
	for _, cs := range sets {
		for _, c := range cs.Changes {
			if c.Op == authz.OpDeleteResource {
				note(c.Resource.Name, cs.Revision)
			}
		}
	}
	return gone
}

// leaveDeleted ejects the sessions of the deleted calls of gone that
// joined before their deletion, and takes them out of dirty: a call
// registered again under the name by then is another, which they are not
// in, whether or not their subjects may join it. Their join's revision is
// the store's: the view may have read them since in the call of the name.
// v.mu is held.
func (v *view) leaveDeleted(gone map[string]authz.Revision, dirty map[*tracked]bool) []ejection {
	var eject []ejection
	for call, rev := range gone {
		for t := v.byCall[call]; t != nil; t = t.call.next {
			if t.ended {
				continue
			}
			if s, ok := v.m.store.Session(t.s.ID); !ok || s.Revision > rev {
				continue
			}
			delete(dirty, t)
			delete(v.ahead, t)
			e := Ending{Why: Ejected, Outcome: NoGrant}
			eject = append(eject, ejection{t.s.ID, e})
			v.ended1(t.s.ID, e)
			t.ended = true
			v.unschedule(t)
		}
	}
	return eject
}

// endCalls ends what waited on the deleted calls of gone: their knocks,
// denied, for no one may join them any more; then their watches whose
// state was read at or before the deletion, with the refusal a watch of
// them started now would get, once they have been told of the endings the
// deletion made. The deletions of held calls are remembered.
func (v *view) endCalls(gone map[string]authz.Revision, held map[string]bool) {
	for call := range gone {
		for _, k := range v.m.store.Knocks(call) {
			ctx, cancel := context.WithTimeout(context.Background(), v.storeWait)
			_, err := v.m.store.Unknock(ctx, call, k.Subject, Denied)
			cancel()
			if err != nil {
				v.m.logger.Warn("a knock of a deleted call could not be ended", "call", call, "subject", k.Subject, "error", err)
			}
		}
	}
	v.storeEvents()
	v.mu.Lock()
	defer v.mu.Unlock()
	for call, rev := range gone {
		for w := range v.watchers[call] {
			if w.rev <= rev {
				v.drop(w, callDeleted(call))
			}
		}
		// Its endings are told: a watch of a call registered again under
		// the name, resumed from before, is told of none of them, and
		// gets the whole state, whose client drops the first call's
		// participants. Before: the revision they were told at, which a
		// view that lagged the deletion tells them at.
		if held[call] {
			v.remember(call, Event{Kind: EventSynced, Reset: true, Revision: max(rev, v.revision())})
		} else {
			delete(v.lastEnded, call)
		}
	}
}

// callDeleted is the refusal of a watch of call, which was deleted.
func callDeleted(call string) error {
	return &authz.Error{Code: authz.NotFound, Kind: authz.KindResourceNotFound, Field: "resource", Value: call,
		Reason: "the call was deleted; a call registered again under its name is another"}
}

// settle acts on the change sets up to rev now, as the loop would a moment
// later: the participants they take out of a call are ejected, and the
// marks they change are told to the store, before a Join that read the
// index at rev decides against the call's other sessions. It waits, within
// ctx and the store's wait, for the feed to queue rev, which it does just
// after the index applies it.
func (v *view) settle(ctx context.Context, rev authz.Revision) {
	ctx, cancel := context.WithTimeout(ctx, v.storeWait)
	defer cancel()
	for {
		v.appliedMu.Lock()
		queued, ch := v.queued, v.queuedCh
		v.appliedMu.Unlock()
		if queued >= rev {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
	v.sift(ctx)
}

// touched marks the sessions c may change the standing of.
func (v *view) touched(x *authz.Index, c authz.Change, dirty map[*tracked]bool) {
	subjectAt := func(subject, resource string) {
		for t := v.bySubject[subject]; t != nil; t = t.subject.next {
			if !dirty[t] && x.Under(t.s.Call, resource) {
				dirty[t] = true
			}
		}
	}
	mark := func(call string) {
		for t := v.byCall[call]; t != nil; t = t.call.next {
			dirty[t] = true
		}
	}
	// The calls at or below scope: found in its subtree when that holds
	// fewer resources than there are live calls (a room, an account), else
	// among the live calls; a write on a leaf costs no look at every call.
	// A scope just deleted has only itself; root has every call.
	below := func(scope string) {
		if scope == authz.RootName {
			for _, first := range v.byCall {
				for t := first; t != nil; t = t.call.next {
					dirty[t] = true
				}
			}
			return
		}
		mark(scope)
		if len(v.byCall) == 0 || x.Below(scope, len(v.byCall), mark) {
			return
		}
		for call := range v.byCall {
			if x.Under(call, scope) {
				mark(call)
			}
		}
	}
	switch {
	case c.Grant != nil:
		subjectAt(c.Grant.Subject, c.Grant.Resource)
	case c.Block != nil:
		subjectAt(c.Block.Subject, c.Block.Resource)
	case c.Role != nil:
		below(c.Role.Scope)
	case c.Resource != nil:
		below(c.Resource.Name)
	case c.Admission != nil:
		scope := c.Admission.Scope
		if scope == "" {
			scope = authz.RootName
		}
		below(scope)
	case c.Permission != nil:
		for _, t := range v.sessions {
			dirty[t] = true
		}
	}
}

// reread looks at each session of dirty against x: a participant who may
// no longer be there is to be ejected; one whose capabilities changed is
// told. v.mu is held.
func (v *view) reread(x *authz.Index, dirty map[*tracked]bool) []ejection {
	var eject []ejection
	now := v.m.clock.Now()
	for t := range dirty {
		if t.rev > x.Revision() {
			v.ahead[t] = true // judged once the index has reached its join
			continue
		}
		delete(v.ahead, t)
		p := x.Presence(t.s.Subject, t.s.Call)
		if out, _ := ejectsSession(p, t.s.Subject, t.s.Call, t.joined, now); out != 0 {
			e := Ending{Why: Ejected, Outcome: out, BlockID: p.BlockID}
			eject = append(eject, ejection{t.s.ID, e})
			v.ended1(t.s.ID, e)
			t.ended = true
			v.unschedule(t)
			continue
		}
		v.schedule(t, p.Until)
		v.remark(t, p)
		// A rule rewritten (its capacity, say) with the mapping it had, or
		// with one that gives the participant the grant it had, changes
		// nothing it was told: told of, every participant of a large call
		// would be, and its streams cut for falling behind.
		if slices.Equal(p.Capabilities, t.caps) && sameGrant(t.s.Call, t.caps, p.Rule.Media, t.media) {
			t.media = p.Rule.Media
			continue
		}
		t.caps, t.rev, t.media = p.Capabilities, p.Revision, p.Rule.Media
		v.broadcast(t.s.Call, v.participant(EventChanged, t, now))
	}
	return eject
}

// schedule makes the view look at t again at until, when a grant or a
// block of its subject expires: t's one entry in v.dues, added or moved.
// v.mu is held.
func (v *view) schedule(t *tracked, until time.Time) {
	if until.IsZero() {
		v.unschedule(t)
		return
	}
	v.dues.set(t, until.UnixNano())
	v.dueAt.Store(v.dues.first())
}

// unschedule takes t out of v.dues. v.mu is held.
func (v *view) unschedule(t *tracked) {
	v.dues.drop(t)
	v.dueAt.Store(v.dues.first())
}

// due reports whether the view may have sessions to look at again at now,
// unix nanoseconds, without taking v.mu: a Join asks on every call. A pass
// under way counts, as do marks not yet in the store: a pass takes what is
// due before it ends the sessions of those who may no longer be there and
// tells the store the marks it finds, and until it has, they still fill
// the call for the store's Join. The order of the loads matters: a pass
// counts itself in expiring before it takes what is due, and counts itself
// out once its ejections and marks are done.
func (v *view) due(now int64) bool {
	return now >= v.dueAt.Load() || v.expiring.Load() > 0 || v.unmarked.Load() > 0
}

// expire looks again at the sessions whose grants or blocks have expired,
// within ctx. One pass runs at a time, its ejections and marks included: a
// Join that finds one under way (due) waits for it in its own, and returns
// ctx's error when ctx is done first.
func (v *view) expire(ctx context.Context) error {
	if err := v.expireMu.lock(ctx); err != nil {
		return err
	}
	defer v.expireMu.unlock()
	now := v.m.clock.Now().UnixNano()
	v.expiring.Add(1)
	v.mu.Lock()
	var dirty map[*tracked]bool // made only when one is due: Join calls expire
	for t, ok := v.dues.next(now); ok; t, ok = v.dues.next(now) {
		if dirty == nil {
			dirty = map[*tracked]bool{}
		}
		dirty[t] = true
	}
	v.dueAt.Store(v.dues.first())
	var eject []ejection
	if len(dirty) > 0 {
		eject = v.reread(v.m.engine.Index(), dirty)
	}
	v.mu.Unlock()
	v.followUp(ctx, eject)
	v.expiring.Add(-1)
	return nil
}

// participant is the event of kind about t.
func (v *view) participant(kind EventKind, t *tracked, at time.Time) Event {
	return participantEvent(kind, t.s.Subject, t.s.ID, t.s.Call, t.caps, t.rev, t.media, at)
}

// participantEvent is the event of kind of subject's session id in call,
// with its capabilities at rev and, where the rule maps them (media), its
// video grant.
func participantEvent(kind EventKind, subject, id, call string, caps []string, rev authz.Revision, media *authz.MediaMapping, at time.Time) Event {
	ev := Event{Kind: kind, Revision: rev, Time: at, Subject: subject, Session: id, Capabilities: caps}
	if media != nil {
		ev.Grant = livekit.Mapping(*media).VideoGrant(call, caps)
	}
	return ev
}

// sameGrant reports whether caps give the same video grant in call by
// mappings a and b, or neither gives one.
func sameGrant(call string, caps []string, a, b *authz.MediaMapping) bool {
	if authz.SameMedia(a, b) {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return reflect.DeepEqual(livekit.Mapping(*a).VideoGrant(call, caps), livekit.Mapping(*b).VideoGrant(call, caps))
}

// remember keeps an ended session's event for watches that resume, or
// the call's deletion.
func (v *view) remember(call string, ev Event) {
	v.endedSeq++
	e := endedSession{call: call, ev: ev, seq: v.endedSeq, prev: endedRef{at: -1}}
	if last, ok := v.lastEnded[call]; ok {
		e.prev = last
	}
	at := len(v.ended)
	if at < v.rememberN {
		v.ended = append(v.ended, e)
	} else {
		at = v.endedNext
		old := &v.ended[at]
		v.forgotten = max(v.forgotten, old.ev.Revision)
		if last := v.lastEnded[old.call]; last.seq == old.seq {
			delete(v.lastEnded, old.call) // its last ending goes
		}
		*old = e
		v.endedNext = (v.endedNext + 1) % len(v.ended)
	}
	v.lastEnded[call] = endedRef{at: int32(at), seq: e.seq}
}

// endingsOf are the remembered endings of call, oldest first, that are
// at after or later or, with since set, later than since. v.mu is held.
func (v *view) endingsOf(call string, after authz.Revision, since time.Time) []Event {
	var evs []Event
	// The ring is written over oldest first: once a link finds its slot
	// written over, the call's older endings went before it.
	for r, ok := v.lastEnded[call]; ok && r.at >= 0 && v.ended[r.at].seq == r.seq; r = v.ended[r.at].prev {
		e := &v.ended[r.at]
		if e.deletion() {
			break // the first call's of the name
		}
		if e.ev.Revision >= after || !since.IsZero() && e.ev.Time.After(since) {
			evs = append(evs, e.ev)
		}
	}
	slices.Reverse(evs)
	return evs
}

// note remembers how the session or knock id ended, for KeepAlives that
// ask again before the store's event reaches the view.
func (v *view) note(id string, why Ending) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ended1(id, why)
	if t := v.sessions[id]; t != nil {
		t.ended = true
	}
}

// ended1 remembers how the session or knock id ended; the first word on
// an id stands, but for the outcome of a knock denied (denyKnocks), which
// the store's event of it lacks. v.mu is held.
func (v *view) ended1(id string, why Ending) {
	if out, ok := v.denying[id]; ok && why.Why == Denied && why.Outcome == 0 {
		why.Outcome = out
	}
	key := v.idKey(id)
	if e, ok := v.endings[key]; ok && (e.why != why.Why || e.outcome != 0 || why.Outcome == 0) {
		return
	}
	v.record(key, why)
}

// record remembers why for the id of key, which v.endings should lack:
// should it have it after all, why replaces what it says. v.mu is held.
func (v *view) record(key uint64, why Ending) {
	n := len(v.endings)
	v.endings[key] = endingOf{why.Why, why.Outcome}
	if why.BlockID != "" {
		v.blockIDs[key] = why.BlockID
	}
	if len(v.endings) == n {
		return // it has its place in endingOrder
	}
	if len(v.endingOrder) < v.rememberN {
		v.endingOrder = append(v.endingOrder, key)
	} else {
		delete(v.endings, v.endingOrder[v.endingNext])
		delete(v.blockIDs, v.endingOrder[v.endingNext])
		v.endingOrder[v.endingNext] = key
		v.endingNext = (v.endingNext + 1) % len(v.endingOrder)
	}
}

// endingOf is an Ending without its BlockID, which few have.
type endingOf struct {
	why     Why
	outcome Outcome
}

// endingAt is the ending remembered under key. v.mu is held.
func (v *view) endingAt(key uint64) (Ending, bool) {
	e, ok := v.endings[key]
	if !ok {
		return Ending{}, false
	}
	return Ending{Why: e.why, Outcome: e.outcome, BlockID: v.blockIDs[key]}, true
}

// idKey is what endings knows id by: its hash, which the collector need
// not follow as it would a string. Ids are 128 random bits (newID), so an
// ending finds its hash taken by one of the 65,536 remembered about once
// in 2^48; it is then not remembered, and a KeepAlive of its id hears how
// the other ended.
func (v *view) idKey(id string) uint64 { return maphash.String(v.idSeed, id) }

// ending says how the session or knock id ended, if the view still
// remembers it.
func (v *view) ending(id string) (Ending, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.endingAt(v.idKey(id))
}

// broadcast sends ev to call's watchers; one that has fallen too far
// behind is cut off. v.mu is held.
func (v *view) broadcast(call string, ev Event) {
	for w := range v.watchers[call] {
		select {
		case w.c <- ev:
		default:
			v.drop(w, &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindWatchFellBehind, Field: "resource", Value: call,
				Reason: fmt.Sprintf("the watch fell %d events behind; resume it from the last revision received", v.buffer)})
		}
	}
}

// drop ends w with err. v.mu is held.
func (v *view) drop(w *Watch, err error) {
	ws := v.watchers[w.call]
	if _, ok := ws[w]; !ok {
		return
	}
	delete(ws, w)
	if len(ws) == 0 {
		delete(v.watchers, w.call)
		// Its knocks are judged apart no more (judgeLobbyAt).
		v.denyMu.Lock()
		if _, ok := v.lobbyDue[w.call]; ok {
			v.setLobbyDue(w.call, math.MaxInt64)
		}
		v.denyMu.Unlock()
	}
	v.nwatchers--
	w.err = err
	close(w.c)
	if err != nil {
		w.cut = true
		v.cut++
	}
}

// Watch follows what happens in a call: Initial holds the state to start
// from, C what happens next. It ends when Close is called, or with Err set
// when it falls behind or the manager stops.
type Watch struct {
	Initial []Event
	C       <-chan Event
	c       chan Event
	call    string
	rev     authz.Revision // the revision its state was read at
	v       *view
	err     error
	held    int  // events of Initial counted in v.initial
	cut     bool // dropped, and counted in v.cut until Close
}

// Sent says that Initial was sent and is no longer held, so that its events
// stop counting against the manager's MaxInitialEvents.
func (w *Watch) Sent() {
	w.v.mu.Lock()
	defer w.v.mu.Unlock()
	w.Initial = nil
	w.release()
}

// release stops counting w's initial state. v.mu is held.
func (w *Watch) release() {
	w.v.initial -= w.held
	w.held = 0
}

// Err says why C was closed; nil after Close.
func (w *Watch) Err() error {
	w.v.mu.Lock()
	defer w.v.mu.Unlock()
	return w.err
}

// Close ends the watch. A watch that was cut off counts against the
// manager's MaxWatchers until then: whoever serves it calls Close once it
// no longer sends.
func (w *Watch) Close() {
	w.v.mu.Lock()
	defer w.v.mu.Unlock()
	v := w.v
	w.release()
	if _, ok := v.watchers[w.call][w]; ok {
		v.drop(w, nil)
	}
	if w.cut {
		w.cut = false
		v.cut--
	}
}

// tooLarge refuses a watch of call whose initial state of n events does not
// fit beside those being sent. v.mu is held.
func (v *view) tooLarge(call string, n int) error {
	return &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindWatchLimit, Field: "resource", Value: call,
		Reason: fmt.Sprintf("the call's initial state of %d events does not fit: streams being sent theirs hold %d of the %d this server holds at once; watch again later, or on another server",
			n, v.initial, v.maxInitial),
		Meta: map[string]string{"limit": strconv.Itoa(v.maxInitial), "events": strconv.Itoa(n)}}
}

// Watch starts following call. With after 0, Initial says who is in the
// call and who waits in its lobby; otherwise it says what changed at
// after or later: the participants whose capabilities changed (Present),
// the sessions that ended, and the lobby. A resume from further back than
// the manager remembers, or from a revision past the latest committed
// (not its history: an older backup restored, a bad client), sends the
// whole state, with Reset on its Synced event. A resume from a revision
// committed through another node that this one has yet to apply waits for
// it, within StoreWait, and sends the whole state only if it did not come.
func (m *Manager) Watch(call string, after authz.Revision) (*Watch, error) {
	m.reach(after)
	p, err := m.presence(context.Background(), "usher:nobody", call, 0)
	if code := authz.CodeOf(err); m.remote && (code == authz.NotFound || code == authz.FailedPrecondition) {
		// Registered, or given its rule, through another node a moment
		// ago, perhaps: a watch from the start names no revision to wait
		// for, so it waits for the latest before it refuses.
		ctx, cancel := context.WithTimeout(context.Background(), m.v.storeWait)
		if m.engine.AwaitLatest(ctx) == nil {
			p, err = m.presence(ctx, "usher:nobody", call, 0)
		}
		cancel()
	}
	if err != nil {
		return nil, err
	}
	// Not the knocks of a call of the name that was deleted.
	m.acted(context.Background(), p.Revision)
	v := m.v
	// The store's events so far first: a session ended before the watch
	// began (by a KeepAlive that has answered, say) is no longer among the
	// store's, and its ending must be among those the view remembers.
	v.storeEvents()
	// A node that shares its store tells a resumed watch what followed
	// after's commit in time (followed): when that can no longer be read
	// (the change log was compacted past it), what it heard of below after
	// may be what the watch never heard of, and only the whole state is
	// sure to tell it.
	since, known := m.followed(after)
	lost := m.remote && after > 0 && !known
	w, st, err := v.start(call, after, since, lost, p.Rule.Media)
	if err != nil {
		return nil, err
	}
	// The initial state is read under v.mu, in one pass over the call, and
	// made outside it: a call of 100,000 participants keeps no Join of the
	// node waiting while its events are sorted and made.
	slices.SortFunc(st.present, func(a, b presentAt) int { return a.joined.Compare(b.joined) })
	w.Initial = make([]Event, 0, len(st.present)+len(st.ended)+len(st.knocks)+1)
	for _, pa := range st.present {
		w.Initial = append(w.Initial, participantEvent(EventPresent, pa.subject, pa.id, call, pa.caps, pa.rev, pa.media, st.now))
	}
	w.Initial = append(w.Initial, st.ended...)
	knocks := st.knocks
	if m.remote {
		knocks = slices.Clone(knocks)
	}
	knocks = m.admissible(call, knocks)
	if m.remote && len(knocks) < len(st.knocks) {
		// A knock made through another node, by a grant this one has yet
		// to apply, is judged at the latest revision before it is left
		// out: no event tells of it once the grant is applied here.
		ctx, cancel := context.WithTimeout(context.Background(), m.v.storeWait)
		if m.engine.AwaitLatest(ctx) == nil {
			knocks = m.admissible(call, st.knocks)
		}
		cancel()
	}
	for _, k := range knocks {
		w.Initial = append(w.Initial, Event{Kind: EventWaiting, Revision: st.rev, Time: k.Knocked, Subject: k.Subject, Session: k.ID, Note: k.Note})
	}
	w.Initial = append(w.Initial, Event{Kind: EventSynced, Revision: st.rev, Time: st.now, Reset: st.reset})
	v.mu.Lock()
	defer v.mu.Unlock()
	// Fewer events than were counted for it, when knocks were left out.
	v.initial -= w.held - len(w.Initial)
	w.held = len(w.Initial)
	return w, nil
}

// reach waits, within StoreWait, until the index has applied after, a
// revision a watch resumes from, when it was committed: the stream was
// told what happened at after, through another node, and a state read
// before it would tell the participants as they were before that.
func (m *Manager) reach(after authz.Revision) {
	if after == 0 || m.engine.Index().Revision() >= after {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.v.storeWait)
	defer cancel()
	if latest, err := m.engine.Latest(ctx); err == nil && after <= latest {
		// One that does not come in time is a reset, as before.
		_ = m.engine.Await(ctx, after)
	}
}

// Whole says whether a watch of call from after starts with the call's
// whole state: from the start, or a resume from further back than the
// manager remembers, from before a call of the name was deleted, past the
// latest revision (once the index has reached after, as Watch waits for
// it), or, on a shared store, from a revision whose commit time can no
// longer be read or that the store lost track after.
func (m *Manager) Whole(call string, after authz.Revision) bool {
	if after == 0 {
		return true
	}
	m.reach(after)
	since, known := time.Time{}, true
	if m.remote {
		since, known = m.followed(after) // see Watch
	}
	m.v.mu.Lock()
	defer m.v.mu.Unlock()
	return !known || m.v.resets(call, after) || since.Before(m.v.lost)
}

// resets says whether a watch of call resuming from after sends the whole
// state instead. v.mu is held.
func (v *view) resets(call string, after authz.Revision) bool {
	// A revision past the latest is no point in this history: the
	// participants since it would all be left out.
	return after > 0 && (after <= v.forgotten || after > v.revision() || v.deletedSince(call, after))
}

// deletedSince says whether a call of the name was deleted at after or
// later: a stream resuming from there was of that call, whose participants
// its client holds, and the call now is another. A deletion the ring no
// longer holds is at v.forgotten or before. v.mu is held.
func (v *view) deletedSince(call string, after authz.Revision) bool {
	for r, ok := v.lastEnded[call]; ok && r.at >= 0 && v.ended[r.at].seq == r.seq; r = v.ended[r.at].prev {
		if e := &v.ended[r.at]; e.deletion() {
			return e.ev.Revision >= after
		}
	}
	return false
}

// Participants counts the live sessions of call: a watch of it from the
// start tells of each.
func (m *Manager) Participants(call string) int {
	sessions, _ := m.store.Count(call)
	return sessions
}

// followed is when revision after was committed, by the clock of the node
// that committed it: the joins and endings later than that followed it.
// Zero, and false, when after is 0, or its commit can no longer be read.
//
// An event is told at the revision of the node's index when its view hears
// of it, and one node's index may lag the commits that another node's
// view, and a watch it served, had seen: a join or an ending told below
// after on this node may be one that a watch resuming here from after,
// served elsewhere until then, never heard of. So a resumed watch is told
// of what followed the commit in time too, though it came below it here.
// The nodes' clocks are taken to agree, as NTP keeps them, to within far
// less than the time between a commit and what follows it on a call.
func (m *Manager) followed(after authz.Revision) (time.Time, bool) {
	if after == 0 {
		return time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.v.storeWait)
	defer cancel()
	// Any client may resume from any revision: one whose change set is a
	// large policy's would have the watch read and decode all of it, for
	// its time alone.
	t, ok, err := m.engine.Backend().CommitTime(ctx, after)
	if err != nil || !ok {
		return time.Time{}, false
	}
	return t, true
}

// initialState is what a watch's initial state is made of, read under
// v.mu: the participants, the endings remembered since the revision it
// resumes from, the knocks, and when and at which revision it was read.
type initialState struct {
	present []presentAt
	ended   []Event
	knocks  []Knock
	now     time.Time
	rev     authz.Revision
	reset   bool
}

// presentAt is what an initial state tells of a participant.
type presentAt struct {
	joined      time.Time
	subject, id string
	caps        []string
	rev         authz.Revision
	media       *authz.MediaMapping
}

// start begins a watch of call from after: it reads the call's state,
// counts the events it makes against MaxInitialEvents (in w.held), and
// makes w a watcher of the call, which hears of everything after what it
// read. Joins and endings later than since (when set), whatever their
// revision, are told too (see followed); lost says a resume cannot tell
// what followed after, and sends the whole state. media is the call's
// rule's, for sessions the view has yet to hear of.
func (v *view) start(call string, after authz.Revision, since time.Time, lost bool, media *authz.MediaMapping) (*Watch, initialState, error) {
	m := v.m
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, initialState{}, &authz.Error{Code: authz.Unavailable, Kind: authz.KindShuttingDown, Reason: "the server is stopping"}
	}
	if v.nwatchers+v.cut >= v.maxWatch {
		return nil, initialState{}, &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindWatchLimit, Field: "resource", Value: call,
			Reason: fmt.Sprintf("this server serves at most %d WatchCall streams at once; watch again later, or on another server", v.maxWatch),
			Meta:   map[string]string{"limit": strconv.Itoa(v.maxWatch)}}
	}
	st := initialState{now: m.clock.Now(), rev: v.revision()}
	if !m.engine.Index().Under(call, call) {
		// Deleted since Watch found it, and perhaps past the sift that
		// ends its watches (endCalls).
		return nil, initialState{}, callDeleted(call)
	}
	st.reset = v.resets(call, after) || after > 0 && (lost || since.Before(v.lost))
	whole := after == 0 || st.reset
	// What bounds the memory of the initial states sent at once is their
	// count. The whole state's is known before it is read, and one that
	// does not fit is refused without reading it.
	if whole {
		sessions, knocks := m.store.Count(call)
		if n := sessions + knocks + 1; v.initial+n > v.maxInitial {
			return nil, initialState{}, v.tooLarge(call, n)
		}
	}
	// The store is the truth about who is there; the view may not have
	// heard of the latest joins yet, and then their Joined follows.
	sessions, knocks := m.store.Sessions(call), m.store.Knocks(call)
	st.present = make([]presentAt, 0, len(sessions))
	for _, s := range sessions {
		pa := presentAt{joined: s.Joined, subject: s.Subject, id: s.ID, caps: s.Capabilities, rev: s.Revision, media: media}
		if t := v.sessions[s.ID]; t != nil {
			pa.caps, pa.rev, pa.media = t.caps, t.rev, t.media
		}
		if whole || pa.rev >= after || !since.IsZero() && pa.joined.After(since) {
			st.present = append(st.present, pa)
		}
	}
	if !whole {
		st.ended = v.endingsOf(call, after, since)
	}
	st.knocks = knocks
	n := len(st.present) + len(st.ended) + len(st.knocks) + 1
	if v.initial+n > v.maxInitial {
		return nil, initialState{}, v.tooLarge(call, n)
	}
	w := &Watch{c: make(chan Event, v.buffer), call: call, rev: st.rev, v: v, held: n}
	w.C = w.c
	v.initial += n
	if v.watchers[call] == nil {
		v.watchers[call] = map[*Watch]struct{}{}
	}
	v.watchers[call][w] = struct{}{}
	v.nwatchers++
	if len(knocks) > 0 {
		// Its knocks are judged at the next tick, and again whenever a
		// knocker's standing runs out (lobbyDue).
		v.lobbyDueBy(call, v.m.clock.Now().UnixNano())
	}
	return w, st, nil
}
