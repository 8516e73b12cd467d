package admission

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usher-authz/usher/authz"
)

// MemoryStore keeps sessions and knocks in this process: what one node
// needs. A restart forgets them; media servers join their participants
// again.
type MemoryStore struct {
	clock       authz.Clock
	maxSessions int
	maxKnocks   int
	callerShare int

	mu       sync.Mutex
	calls    map[string]*callState
	sessions map[string]*liveSession // by id
	knocks   map[string]*liveKnock   // by id
	// held counts the live sessions and knocks of each caller; the
	// anonymous caller, and a caller of none, have no entry.
	held map[string]int
	// expiries orders the leases of live sessions and knocks, one entry
	// each, kept in the session or knock itself.
	expiries dueQueue[*lease]
	pending  []StoreEvent
	signal   chan struct{} // capacity 1: pending has events

	stop   chan struct{}
	done   sync.WaitGroup
	closed bool
}

type callState struct {
	// name is the call's: the sessions and knocks stored in it share it,
	// and their subjects share the names of those they replace, rather
	// than keep the strings of each request alive.
	name     string
	sessions map[string]*liveSession // by subject
	knocks   map[string]*liveKnock   // by subject; nil until one knocks
	counted  int                     // sessions with Counted
	marks    map[string]int          // exclusive mark -> sessions holding it; nil until one does
}

func newCallState(name string) *callState {
	return &callState{name: name, sessions: map[string]*liveSession{}}
}

// liveSession is a stored session, with its entry in the lease queue.
type liveSession struct {
	Session
	lease lease
}

// liveKnock is a stored knock, with its entry in the lease queue.
type liveKnock struct {
	Knock
	lease lease
}

// lease is a session's or a knock's entry in MemoryStore.expiries.
type lease struct {
	due
	session *liveSession // or
	knock   *liveKnock
}

func (l *lease) slot() *due { return &l.due }

func newLiveSession(s Session) *liveSession {
	l := &liveSession{Session: s}
	l.lease.session = l
	return l
}

func newLiveKnock(k Knock) *liveKnock {
	l := &liveKnock{Knock: k}
	l.lease.knock = l
	return l
}

// room decides whether s fits among the call's sessions other than old,
// the subject's own, as Room does.
func (c *callState) room(s *Session, old *liveSession, max uint32) (Outcome, string) {
	if s.Counted && max > 0 {
		n := c.counted
		if old != nil && old.Counted {
			n--
		}
		if n >= int(max) {
			return Full, strconv.Itoa(n)
		}
	}
	others := func(mark string) int {
		n := c.marks[mark]
		if old != nil && slices.Contains(old.Exclusive, mark) {
			n--
		}
		return n
	}
	for _, mark := range s.Exclusive {
		if mark == authz.OccupantMark || old != nil && slices.Contains(old.Exclusive, mark) {
			continue
		}
		if others(mark) > 0 {
			return InUse, mark
		}
		if strings.HasPrefix(mark, authz.PermissionMark) && others(authz.OccupantMark) > 0 {
			return InUse, authz.OccupantMark
		}
	}
	return Admitted, ""
}

func (c *callState) add(s *liveSession) {
	c.sessions[s.Subject] = s
	if s.Counted {
		c.counted++
	}
	if len(s.Exclusive) > 0 && c.marks == nil {
		c.marks = map[string]int{}
	}
	for _, mark := range s.Exclusive {
		c.marks[mark]++
	}
}

func (c *callState) remove(s *liveSession) {
	delete(c.sessions, s.Subject)
	c.unmark(s)
}

// unmark takes what s counts for out of the call's tallies.
func (c *callState) unmark(s *liveSession) {
	if s.Counted {
		c.counted--
	}
	for _, mark := range s.Exclusive {
		if c.marks[mark]--; c.marks[mark] == 0 {
			delete(c.marks, mark)
		}
	}
}

// MemoryOptions bound a MemoryStore.
type MemoryOptions struct {
	Clock authz.Clock // default authz.SystemClock
	// MaxSessions bounds the live sessions and knocks of the node; default
	// DefaultMaxSessions.
	MaxSessions int
	// MaxKnocks bounds the knocks of one call; default DefaultMaxKnocks.
	MaxKnocks int
	// CallerShare bounds the live sessions and knocks of one caller
	// (their Caller), of MaxSessions; default a quarter of MaxSessions,
	// at least one (admission.CallerShare).
	CallerShare int
}

// Defaults of MemoryOptions.
const (
	DefaultMaxSessions = 1_000_000
	DefaultMaxKnocks   = 1_000
)

// sweepEvery is how often lapsed leases are looked for; a lapse is
// reported at most this late.
const sweepEvery = 50 * time.Millisecond

// NewMemoryStore returns an empty store; Close stops it.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	if opts.Clock == nil {
		opts.Clock = authz.SystemClock{}
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.MaxKnocks <= 0 {
		opts.MaxKnocks = DefaultMaxKnocks
	}
	m := &MemoryStore{
		clock: opts.Clock, maxSessions: opts.MaxSessions, maxKnocks: opts.MaxKnocks,
		callerShare: CallerShare(opts.CallerShare, opts.MaxSessions), held: map[string]int{},
		calls: map[string]*callState{}, sessions: map[string]*liveSession{}, knocks: map[string]*liveKnock{},
		signal: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	m.done.Add(1)
	go m.sweeper()
	return m
}

var _ Store = (*MemoryStore)(nil)

// Join implements Store.
func (m *MemoryStore) Join(_ context.Context, s Session, max uint32) (Outcome, string, error) {
	return m.join(s, max, true)
}

// joinTaking is Join, but leaves Pending unsignalled for the join's own
// events: its caller takes them as soon as it returns. Events queued by
// anything else are signalled as ever.
func (m *MemoryStore) joinTaking(_ context.Context, s Session, max uint32) (Outcome, string, error) {
	return m.join(s, max, false)
}

// join is Join; signal says whether Pending is signalled for the events
// of the join itself.
func (m *MemoryStore) join(s Session, max uint32, signal bool) (Outcome, string, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	c := m.calls[s.Call]
	fresh := c == nil
	if fresh {
		c = newCallState(s.Call) // kept only if s joins
	}
	old, knock := c.sessions[s.Subject], c.knocks[s.Subject]
	s.Call = c.name
	if old != nil {
		s.Subject = old.Subject
	} else if knock != nil {
		s.Subject = knock.Subject
	}
	if out, detail := c.room(&s, old, max); out != Admitted {
		return out, detail, nil
	}
	// One that replaces the caller's own session or knock of the subject
	// adds none to its share; one that replaces another caller's adds one,
	// and takes one from that caller's.
	if s.Caller != "" && !(old != nil && old.Caller == s.Caller) && !(knock != nil && knock.Caller == s.Caller) {
		if err := m.share(s.Caller); err != nil {
			return 0, "", err
		}
	}
	// A session that replaces the subject's own, or its knock, adds none.
	if old == nil && knock == nil && len(m.sessions)+len(m.knocks) >= m.maxSessions {
		return 0, "", &TooManyError{Limit: m.maxSessions}
	}
	var stored *liveSession
	if old != nil {
		// The new session takes the old one's place in the call, and its
		// place in memory: a record of the old lease left in the queue
		// holds no session that has ended.
		delete(m.sessions, old.ID)
		m.release(old.Caller)
		c.unmark(old)
		ended := old.Session
		m.queue(StoreEvent{Session: &ended, Ended: &Ending{Why: Replaced}, Time: now}, signal)
		stored = old
		stored.Session = s
	} else {
		stored = newLiveSession(s)
	}
	m.expiries.set(&stored.lease, s.Expires.UnixNano())
	if knock != nil {
		delete(c.knocks, s.Subject) // the session takes its place: the call stays
		m.endKnock(nil, knock, Entered, now)
	}
	if fresh {
		m.calls[s.Call] = c
	}
	c.add(stored)
	m.sessions[s.ID] = stored
	m.hold(s.Caller)
	// The event gets a copy: Renew changes the stored session.
	began := s
	m.queue(StoreEvent{Session: &began, Time: now}, signal)
	return Admitted, "", nil
}

// Renew implements Store.
func (m *MemoryStore) Renew(_ context.Context, id string, expires time.Time) (Session, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil || !s.Expires.After(now) {
		return Session{}, ErrNoSession
	}
	if expires.After(s.Expires) {
		s.Expires = expires
		m.expiries.set(&s.lease, expires.UnixNano())
	}
	return s.Session, nil
}

// Mark implements Store. One node marks its sessions, each at a revision
// no earlier than the last, so at is not kept.
func (m *MemoryStore) Mark(_ context.Context, id string, counted bool, exclusive []string, at authz.Revision) (Session, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil || !s.Expires.After(now) {
		return Session{}, ErrNoSession
	}
	// The call's counts follow the marks.
	c := m.calls[s.Call]
	counts := c != nil && c.sessions[s.Subject] == s
	if counts {
		c.remove(s)
	}
	s.Counted, s.Exclusive = counted, slices.Clone(exclusive)
	if counts {
		c.add(s)
	}
	return s.Session, nil
}

// End implements Store.
func (m *MemoryStore) End(_ context.Context, id string, why Ending) (Session, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now) // a session whose lease ran out ends as Lapsed
	s := m.sessions[id]
	if s == nil {
		return Session{}, ErrNoSession
	}
	out := s.Session
	m.endSession(m.calls[s.Call], s, why, now)
	return out, nil
}

// Session implements Store.
func (m *MemoryStore) Session(id string) (Session, bool) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil || !s.Expires.After(now) {
		return Session{}, false
	}
	return s.Session, true
}

// Sessions implements Store.
func (m *MemoryStore) Sessions(call string) []Session {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[call]
	if c == nil {
		return nil
	}
	out := make([]Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		if s.Expires.After(now) {
			out = append(out, s.Session)
		}
	}
	return out
}

// SessionOf implements Store.
func (m *MemoryStore) SessionOf(call, subject string) (Session, bool) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[call]
	if c == nil {
		return Session{}, false
	}
	s := c.sessions[subject]
	if s == nil || !s.Expires.After(now) {
		return Session{}, false
	}
	return s.Session, true
}

// Len implements Store.
func (m *MemoryStore) Len() (sessions, knocks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions), len(m.knocks)
}

// Knock implements Store.
func (m *MemoryStore) Knock(_ context.Context, k Knock) (Knock, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	c := m.calls[k.Call]
	if c == nil {
		c = newCallState(k.Call)
		m.calls[k.Call] = c
	}
	k.Call = c.name
	if old := c.knocks[k.Subject]; old != nil {
		// The knock is the caller's that renews it: another caller's
		// renewal takes it from the first's share into its own.
		if old.Caller != k.Caller {
			if err := m.share(k.Caller); err != nil {
				return Knock{}, err
			}
			m.release(old.Caller)
			old.Caller = k.Caller
			m.hold(k.Caller)
		}
		old.Expires = k.Expires
		m.expiries.set(&old.lease, k.Expires.UnixNano())
		if k.Note != "" && k.Note != old.Note {
			// Watchers were told the note it knocked with: they hear the
			// new one, as the lobby's list shows it.
			old.Note = k.Note
			renewed := old.Knock
			m.emit(StoreEvent{Knock: &renewed, Time: now})
		}
		return old.Knock, nil
	}
	if len(c.knocks) >= m.maxKnocks {
		m.dropIfEmpty(k.Call, c)
		return Knock{}, &LobbyFullError{Limit: m.maxKnocks}
	}
	if err := m.share(k.Caller); err != nil {
		m.dropIfEmpty(k.Call, c)
		return Knock{}, err
	}
	if len(m.sessions)+len(m.knocks) >= m.maxSessions {
		m.dropIfEmpty(k.Call, c)
		return Knock{}, &TooManyError{Limit: m.maxSessions}
	}
	if s := c.sessions[k.Subject]; s != nil {
		k.Subject = s.Subject
	}
	stored := newLiveKnock(k)
	if c.knocks == nil {
		c.knocks = map[string]*liveKnock{}
	}
	c.knocks[k.Subject] = stored
	m.knocks[k.ID] = stored
	m.hold(k.Caller)
	m.expiries.set(&stored.lease, k.Expires.UnixNano())
	began := k
	m.emit(StoreEvent{Knock: &began, Time: now})
	return k, nil
}

// Unknock implements Store.
func (m *MemoryStore) Unknock(_ context.Context, call, subject string, why Why) (bool, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now) // a knock whose lease ran out ends as Lapsed
	c := m.calls[call]
	if c == nil || c.knocks[subject] == nil {
		return false, nil
	}
	m.endKnock(c, c.knocks[subject], why, now)
	return true, nil
}

// EndKnock implements Store.
func (m *MemoryStore) EndKnock(_ context.Context, id string, why Why) (Knock, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now) // a knock whose lease ran out ends as Lapsed
	k := m.knocks[id]
	if k == nil {
		return Knock{}, ErrNoSession
	}
	out := k.Knock
	m.endKnock(m.calls[k.Call], k, why, now)
	return out, nil
}

// RenewKnock implements Store.
func (m *MemoryStore) RenewKnock(_ context.Context, id string, expires time.Time) (Knock, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.knocks[id]
	if k == nil || !k.Expires.After(now) {
		return Knock{}, ErrNoSession
	}
	if expires.After(k.Expires) {
		k.Expires = expires
		m.expiries.set(&k.lease, expires.UnixNano())
	}
	return k.Knock, nil
}

// KnockOf implements Store.
func (m *MemoryStore) KnockOf(id string) (Knock, bool) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.knocks[id]
	if k == nil || !k.Expires.After(now) {
		return Knock{}, false
	}
	return k.Knock, true
}

// Knocks implements Store.
func (m *MemoryStore) Knocks(call string) []Knock {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[call]
	if c == nil {
		return nil
	}
	out := make([]Knock, 0, len(c.knocks))
	for _, k := range c.knocks {
		if k.Expires.After(now) {
			out = append(out, k.Knock)
		}
	}
	return out
}

// Count implements Store.
func (m *MemoryStore) Count(call string) (sessions, knocks int) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	if c := m.calls[call]; c != nil {
		return len(c.sessions), len(c.knocks)
	}
	return 0, 0
}

// Pending implements Store.
func (m *MemoryStore) Pending() <-chan struct{} { return m.signal }

// Take implements Store.
func (m *MemoryStore) Take() []StoreEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	batch := m.pending
	m.pending = nil
	return batch
}

// Close implements Store.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	close(m.stop)
	m.done.Wait()
	return nil
}

func (m *MemoryStore) endSession(c *callState, s *liveSession, why Ending, now time.Time) {
	delete(m.sessions, s.ID)
	m.release(s.Caller)
	m.expiries.drop(&s.lease)
	if c != nil && c.sessions[s.Subject] == s {
		c.remove(s)
		m.dropIfEmpty(s.Call, c)
	}
	m.emit(StoreEvent{Session: &s.Session, Ended: &why, Time: now})
}

func (m *MemoryStore) endKnock(c *callState, k *liveKnock, why Why, now time.Time) {
	delete(m.knocks, k.ID)
	m.release(k.Caller)
	m.expiries.drop(&k.lease)
	if c != nil && c.knocks[k.Subject] == k {
		delete(c.knocks, k.Subject)
		m.dropIfEmpty(k.Call, c)
	}
	m.emit(StoreEvent{Knock: &k.Knock, Ended: &Ending{Why: why}, Time: now})
}

// share refuses one more session or knock of caller when it holds its
// share already; the anonymous caller's share is the whole store. m.mu is
// held, and lapsed leases were swept: what a caller holds is live.
func (m *MemoryStore) share(caller string) error {
	if caller == "" {
		return nil
	}
	if n := m.held[caller]; n >= m.callerShare {
		return &ShareError{Caller: caller, Share: m.callerShare, Held: n}
	}
	return nil
}

// hold counts a session or knock of caller in; release counts it out. m.mu
// is held.
func (m *MemoryStore) hold(caller string) {
	if caller != "" {
		m.held[caller]++
	}
}

func (m *MemoryStore) release(caller string) {
	if caller == "" {
		return
	}
	if m.held[caller]--; m.held[caller] <= 0 {
		delete(m.held, caller)
	}
}

func (m *MemoryStore) dropIfEmpty(call string, c *callState) {
	if len(c.sessions) == 0 && len(c.knocks) == 0 {
		delete(m.calls, call)
	}
}

// sweep ends every session and knock whose lease ran out by now.
func (m *MemoryStore) sweep(now time.Time) {
	for l, ok := m.expiries.next(now.UnixNano()); ok; l, ok = m.expiries.next(now.UnixNano()) {
		if k := l.knock; k != nil {
			m.endKnock(m.calls[k.Call], k, Lapsed, now)
		} else {
			m.endSession(m.calls[l.session.Call], l.session, Ending{Why: Lapsed}, now)
		}
	}
}

func (m *MemoryStore) sweeper() {
	defer m.done.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			now := m.clock.Now()
			m.mu.Lock()
			m.sweep(now)
			m.mu.Unlock()
		}
	}
}

// emit queues an event; m.mu is held, so events of one call keep their
// order.
func (m *MemoryStore) emit(e StoreEvent) { m.queue(e, true) }

// queue queues an event, and signals Pending if signal; m.mu is held.
func (m *MemoryStore) queue(e StoreEvent, signal bool) {
	m.pending = append(m.pending, e)
	if !signal {
		return
	}
	select {
	case m.signal <- struct{}{}:
	default:
	}
}
