package admission

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/livekit/protocol/auth"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
)

// Outcome is what a Join decided; the values are usher.v1.Outcome's.
type Outcome uint8

// The outcomes of DESIGN.md's Join, in the order they are decided.
const (
	Admitted Outcome = iota + 1
	Lobby
	Blocked
	NoGrant
	NotStarted
	Full
	InUse
)

var outcomeNames = [...]string{Admitted: "ADMITTED", Lobby: "LOBBY", Blocked: "BLOCKED", NoGrant: "NO_GRANT",
	NotStarted: "NOT_STARTED", Full: "FULL", InUse: "IN_USE"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Options configure a Manager.
type Options struct {
	// Store keeps the sessions; default a MemoryStore on Clock.
	Store Store
	// LiveKit signs the tokens of admitted joins where the rule maps
	// capabilities to LiveKit's grant; without it Join carries no token.
	LiveKit *livekit.APIKey
	Logger  *slog.Logger
	// MaxWatchers bounds the WatchCall streams of the node (usher serve
	// --max-call-watches); default DefaultMaxWatchers. A watch counts from
	// Watch until its Close, even once cut off for falling behind.
	MaxWatchers int
	// WatchBuffer is how many events a stream may fall behind by before it
	// is cut off, to resume from the last revision it received; default
	// DefaultWatchBuffer. Each stream holds its buffer from the start.
	WatchBuffer int
	// Remember is how many ended sessions are kept for streams that
	// resume; default DefaultRemember.
	Remember int
	// MaxInitialEvents bounds the events of initial states that streams
	// hold at once, from when a watch starts until its initial state is
	// sent (Watch.Sent); default DefaultMaxInitialEvents. A watch whose
	// initial state does not fit is refused.
	MaxInitialEvents int
	// StoreWait bounds each store write the view makes of its own accord
	// (an ejection, a session's marks), on whatever call it runs, and the
	// first to run out of it ends the view's pass: a store that does not
	// answer, an etcd cluster out of reach, holds up the Join that made the
	// view act for that long, not for good nor once for each write. It
	// bounds the store writes of Join, Knock, KeepAlive, Leave, Admit and
	// Deny alike, however long their callers would wait.
	// Default DefaultStoreWait.
	StoreWait time.Duration
}

// Defaults of Options. An Event takes 152 bytes in a stream's buffer (its
// strings and lists are shared with the view's), so the defaults bound what
// call watches hold to 1,024 × 256 × 152 bytes, 38 MiB. A stream cut for
// falling behind resumes from the last revision it received. An initial
// state's participant also carries its LiveKit grant, about 300 bytes in
// all, so initial states being sent hold at most 262,144 × 300 bytes, 75 MiB.
const (
	DefaultMaxWatchers      = 1_024
	DefaultWatchBuffer      = 256
	DefaultRemember         = 65_536
	DefaultMaxInitialEvents = 262_144
	DefaultStoreWait        = 5 * time.Second
)

// Manager answers Join and the calls around it from the engine's index and
// a Store, and tells watchers what changes in their calls.
type Manager struct {
	engine *authz.Engine
	clock  authz.Clock
	store  Store
	// join is store.Join, or for a MemoryStore (and not a Store wrapping
	// one), its variant that leaves the join's own events unsignalled for
	// Join to take (view.joined): the view's loop is not woken for each
	// join only to find nothing left to take.
	join func(ctx context.Context, s Session, max uint32) (Outcome, string, error)
	// remote: the store may wait on something out of reach (an etcd
	// cluster), so its writes are bounded by StoreWait (within).
	remote bool
	signer *livekit.Signer // nil without a LiveKit key
	logger *slog.Logger
	v      *view
}

// New returns a manager over engine. Close stops it; it does not close the
// engine.
func New(engine *authz.Engine, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Store == nil {
		opts.Store = NewMemoryStore(MemoryOptions{Clock: engine.Clock()})
	}
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = DefaultWatchBuffer
	}
	if opts.Remember <= 0 {
		opts.Remember = DefaultRemember
	}
	if opts.MaxInitialEvents <= 0 {
		opts.MaxInitialEvents = DefaultMaxInitialEvents
	}
	if opts.StoreWait <= 0 {
		opts.StoreWait = DefaultStoreWait
	}
	m := &Manager{engine: engine, clock: engine.Clock(), store: opts.Store, join: opts.Store.Join, logger: opts.Logger, remote: true}
	if ms, ok := opts.Store.(*MemoryStore); ok {
		m.join, m.remote = ms.joinTaking, false
	}
	if opts.LiveKit != nil {
		m.signer = opts.LiveKit.Signer()
	}
	m.v = newView(m, opts)
	engine.Listen(m.v.applied)
	// A change set applied before the view listened is taken as one it
	// could not sift: settle waits for no revision the index passed then.
	m.v.applied(engine.Index(), nil)
	go m.v.loop()
	go m.v.probe()
	go m.v.deny()
	return m
}

// Engine is the engine the manager reads.
func (m *Manager) Engine() *authz.Engine { return m.engine }

// Close stops the manager and its store; open watches end.
func (m *Manager) Close() error {
	m.v.close()
	return m.store.Close()
}

// MaxWatchers is the most WatchCall streams the manager serves at once
// (Options.MaxWatchers).
func (m *Manager) MaxWatchers() int { return m.v.maxWatch }

// MaxInitialEvents is the most events of initial states the manager's
// WatchCall streams hold at once (Options.MaxInitialEvents).
func (m *Manager) MaxInitialEvents() int { return m.v.maxInitial }

// Counts is what a manager holds at one moment.
type Counts struct {
	// Sessions and Knocks are the store's live sessions and lobby knocks.
	Sessions, Knocks int
	// Watches are the WatchCall streams this node serves.
	Watches int
}

// Counts says how many sessions, knocks and call watches there are now,
// for metrics.
func (m *Manager) Counts() Counts {
	var c Counts
	c.Sessions, c.Knocks = m.store.Len()
	m.v.mu.Lock()
	c.Watches = m.v.nwatchers
	m.v.mu.Unlock()
	return c
}

// Result is the answer to a Join or a Knock.
type Result struct {
	Outcome Outcome
	// Reason says why, for people.
	Reason string
	// Capabilities are the subject's permissions in the call (Admitted).
	Capabilities []string
	// Session is the session (Admitted) or the knock (Lobby): its ID and
	// when it expires.
	Session string
	Expires time.Time
	Lease   time.Duration
	// Token is a LiveKit access token, and Grant the video grant it
	// carries (Admitted, where the rule maps to LiveKit).
	Token string
	Grant *auth.VideoGrant
	// Role and Scope are the grant that gives the join permission; for
	// Blocked, Scope is where the block is.
	Role, Scope string
	BlockID     string
	// OpensAt is when the call opens (NotStarted), when known.
	OpensAt time.Time
	// Backstage: admitted before the call opened, by the backstage
	// permission (Admitted only).
	Backstage bool
	// Exclusive is what another participant holds exclusively (InUse):
	// "role NAME" or "permission NAME"; or authz.OccupantMark, when the
	// subject holds an exclusive permission and another occupant is in.
	Exclusive string
	Revision  authz.Revision
}

// Join decides whether subject may enter resource now, as DESIGN.md's
// "Admission: joining a call" says, and makes it a session if so, or a
// knock, of caller: the caller of the server's callers file that asks, ""
// for the anonymous caller of a server without one. An unknown resource is
// NotFound; one no admission rule governs is FailedPrecondition; a caller
// that holds its share of the store's sessions and knocks is
// ResourceExhausted (KindCallerSessionLimit).
func (m *Manager) Join(ctx context.Context, caller, subject, resource string, min authz.Revision) (Result, error) {
	p, err := m.presence(ctx, subject, resource, min)
	if err != nil {
		return Result{}, err
	}
	now := m.clock.Now()
	r, decided := m.gate(p, subject, resource, now)
	if decided && r.Outcome == Lobby {
		// The knock, or the session, is written within what is left.
		var cancel context.CancelFunc
		ctx, cancel = m.within(ctx)
		defer cancel()
		p = m.atLatest(ctx, p, subject, resource)
		r, decided = m.gate(p, subject, resource, now)
	}
	if decided {
		if r.Outcome == Lobby {
			return m.knock(ctx, r, p, caller, subject, resource, "", now)
		}
		return r, nil
	}
	rule := p.Rule
	counted, exclusive := marksOf(p)
	lease := rule.LeaseOf()
	if noRoomJoin(&r, p, subject, resource) {
		return r, nil
	}
	// What follows waits on the store, and on the view's passes that tell
	// it what they found: all of it within StoreWait, so that a store out
	// of reach fails the join once, not once for each.
	asked := ctx
	ctx, cancel := m.within(ctx)
	defer cancel()
	s := Session{ID: newID(), Subject: subject, Call: resource, Caller: caller, Joined: now, Expires: now.Add(lease),
		Counted: counted, Exclusive: exclusive, Capabilities: p.Capabilities, Revision: p.Revision}
	// The view may have yet to act on writes this join read: a participant
	// they demoted to a counted role, or granted an exclusive one, still
	// holds its old marks in the store, and the join would be let in
	// beside it.
	m.acted(ctx, p.Revision)
	// Nor may it have looked yet at the participants whose grants or
	// blocks expired by now, as it does every tickEvery, or be looking at
	// them: one whose uncounted role ran out counts, one whose exclusive
	// role ran out holds the room no longer, one whose grant ran out is
	// no longer in.
	if m.v.due(now.UnixNano()) {
		if err := m.v.expire(ctx); err != nil {
			return Result{}, entering(storeError(err), resource)
		}
	}
	// An admitted join's events are the view's to take (m.v.joined).
	out, detail, err := m.join(ctx, s, rule.MaxParticipants)
	if err == nil && (out == Full || out == InUse) {
		// The view may have yet to act on the writes this join read: a
		// participant they took out of the call still holds its place.
		m.v.settle(ctx, p.Revision)
		out, detail, err = m.join(ctx, s, rule.MaxParticipants)
	}
	if err != nil {
		return Result{}, entering(storeError(err), resource)
	}
	r.Outcome = out
	switch out {
	case Full:
		r.Grant, r.Backstage = nil, false
		r.Reason = fmt.Sprintf("%s has %s of at most %d participants (max_participants of the rule at %q)", resource, detail, rule.MaxParticipants, rule.Scope)
		return r, nil
	case InUse:
		r.Grant, r.Backstage = nil, false
		r.Exclusive = detail
		r.Reason = fmt.Sprintf("%s is in use by another participant holding %s, which one participant at a time may hold there", resource, detail)
		if detail == authz.OccupantMark {
			r.Reason = fmt.Sprintf("%s is in use by another participant holding %q by a role of its own, and %s enters only a call no other such participant is in",
				resource, rule.Join, subject)
		}
		return r, nil
	}
	st, e, ejected := m.v.joined(s, p)
	if ejected {
		if o := m.overtaken(subject, resource, e); o.Outcome != Lobby {
			return o, nil
		}
		// Sent back to the lobby as it joined: it knocks, as a Join now
		// does.
		return m.Join(asked, caller, subject, resource, p.Revision)
	}
	// The answer and its token carry what the call's watchers were told of
	// the participant: a write that took capabilities away while the
	// session was written (a mute, a demotion) is in it, and a media
	// server hears of every later one as CHANGED.
	if !slices.Equal(st.caps, p.Capabilities) || st.media != rule.Media {
		r.Grant = nil
		if st.media != nil {
			r.Grant = livekit.Mapping(*st.media).VideoGrant(resource, st.caps)
		}
	}
	until := p.Until
	if !st.until.IsZero() && (until.IsZero() || st.until.Before(until)) {
		until = st.until
	}
	r.Capabilities, r.Session, r.Expires, r.Lease = st.caps, s.ID, s.Expires, lease
	// Built without fmt: this is the hot path, and names need no escaping.
	r.Reason = subject + " joins " + resource + ` by "` + rule.Join + `", held as "` + p.Role + `" on "` + p.Scope + `"`
	if r.Backstage {
		r.Reason += ", backstage"
	}
	if r.Grant != nil && m.signer != nil {
		// Measured from now, as the token is signed: the store may have
		// kept the join waiting (a crowd joining one call through a
		// cluster), and the lease and the standing run from before it.
		now := m.clock.Now()
		if !until.IsZero() && !until.After(now) {
			// The standing the join was decided on ran out while it
			// waited: a token signed from it would outlive it, by the
			// wait and by the second a token lasts at least, and cannot
			// be taken back. The join is decided again, as it stands now,
			// its session ended within a StoreWait of its own: the join's
			// may be spent on the wait.
			end, cancelEnd := m.within(context.WithoutCancel(asked))
			_, err := m.store.End(end, s.ID, Ending{Why: Left})
			cancelEnd()
			if err != nil && !errors.Is(err, ErrNoSession) {
				return Result{}, entering(storeError(err), resource)
			}
			return m.Join(asked, caller, subject, resource, p.Revision)
		}
		r.Token, err = m.signer.Sign(subject, r.Grant, tokenTTL(s.Expires, until, now))
		if err != nil {
			// The mapping and key were checked; the session must not stay
			// without the token that goes with it.
			m.store.End(context.WithoutCancel(ctx), s.ID, Ending{Why: Left})
			return Result{}, fmt.Errorf("signing the LiveKit token: %w", err)
		}
	}
	return r, nil
}

// within is ctx bounded by StoreWait, for the store's writes: a store out
// of reach (an etcd cluster cut off) fails the call, as every write of a
// session or knock does, however long the caller would wait. A
// MemoryStore waits on nothing but its lock, and its calls go without the
// timer.
func (m *Manager) within(ctx context.Context) (context.Context, context.CancelFunc) {
	if !m.remote {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, m.v.storeWait)
}

func noCancel() {}

// noRoomJoin reports whether the rule maps capabilities to LiveKit and p
// lacks what roomJoin requires, which makes r that NoGrant; otherwise it
// sets r.Grant to p's video grant, where the rule has a mapping.
func noRoomJoin(r *Result, p authz.Presence, subject, resource string) bool {
	media := p.Rule.Media
	if media == nil {
		return false
	}
	r.Grant = livekit.Mapping(*media).VideoGrant(resource, p.Capabilities)
	if r.Grant.RoomJoin {
		return false
	}
	r.Outcome, r.Grant, r.Backstage = NoGrant, nil, false
	r.Reason = fmt.Sprintf("%s lacks %q in %s, which LiveKit's roomJoin requires", subject, media.RoomJoin, resource)
	return true
}

// tokenTTL is how long, from now, a Join's token may be valid: until the
// session's lease runs out (expires), and no longer than the standing it
// was signed from lasts (until: the soonest a grant or block on the way
// runs out), since a media server cannot take a token back once the
// subject has it; but at least a second, the shortest a token may be
// valid.
func tokenTTL(expires, until, now time.Time) time.Duration {
	if !until.IsZero() && until.Before(expires) {
		expires = until
	}
	return max(time.Second, expires.Sub(now))
}

// overtaken answers a Join whose session the view ejected as it was made:
// a write committed after the join read the subject took its place in the
// call away. The answer is that write's refusal, with no session and no
// token.
func (m *Manager) overtaken(subject, resource string, e Ending) Result {
	p := m.engine.Index().Presence(subject, resource)
	r := Result{Outcome: e.Outcome, Revision: p.Revision, BlockID: e.BlockID,
		Reason: fmt.Sprintf("%s was ejected from %s as it joined: it may no longer be there", subject, resource)}
	if out, why := ejectsSession(p, subject, resource, p.Capabilities, m.clock.Now()); out != 0 {
		r.Outcome, r.Reason, r.BlockID = out, why, ""
		if out == Blocked {
			r.BlockID, r.Scope = p.BlockID, p.Scope
		}
	}
	return r
}

// marksOf is what a session of p counts for: against the capacity, unless
// p holds one of the rule's uncounted roles, and the exclusive roles and
// permissions p holds.
func marksOf(p authz.Presence) (counted bool, exclusive []string) {
	return !overlaps(p.Roles, p.Rule.UncountedRoles), p.Exclusive
}

// presence reads subject's standing at resource at min or later, and
// refuses a resource that is unknown or that no rule governs.
func (m *Manager) presence(ctx context.Context, subject, resource string, min authz.Revision) (authz.Presence, error) {
	if err := authz.ValidateSubject("subject", subject); err != nil {
		return authz.Presence{}, err
	}
	if err := authz.ValidateResource("resource", resource); err != nil {
		return authz.Presence{}, err
	}
	if err := m.engine.Await(ctx, min); err != nil {
		return authz.Presence{}, err
	}
	p := m.engine.Index().Presence(subject, resource)
	if !p.Known {
		return p, &authz.Error{Code: authz.NotFound, Kind: authz.KindResourceNotFound, Field: "resource", Value: resource, Reason: "resource is not registered"}
	}
	if p.Rule == nil {
		return p, &authz.Error{Code: authz.FailedPrecondition, Kind: authz.KindNoAdmissionRule, Field: "resource", Value: resource,
			Reason: fmt.Sprintf("no admission rule governs %s resources there; the policy's admissions say who may join what", authz.TypeOf(resource))}
	}
	return p, nil
}

// atLatest reads subject's standing at resource again at the latest
// revision, for a Join or a Knock that p would send to the lobby, when the
// store is shared with other nodes: the subject may have been admitted
// through another, and told to join (by its knock's KeepAlive, by the
// call's watch) before this node's index has applied the grant. Out of
// reach of the latest revision, p stands.
func (m *Manager) atLatest(ctx context.Context, p authz.Presence, subject, resource string) authz.Presence {
	if !m.remote || m.engine.AwaitLatest(ctx) != nil {
		return p
	}
	if q := m.engine.Index().Presence(subject, resource); q.Known && q.Rule != nil {
		return q
	}
	return p
}

// gate decides what needs no session: Blocked, NoGrant, NotStarted and
// Lobby, in that order. It reports false when the subject may go on to the
// capacity and occupancy checks.
func (m *Manager) gate(p authz.Presence, subject, resource string, now time.Time) (Result, bool) {
	rule := p.Rule
	r := Result{Revision: p.Revision, Role: p.Role, Scope: p.Scope}
	switch {
	case p.Blocked:
		r.Outcome, r.BlockID = Blocked, p.BlockID
		r.Reason = fmt.Sprintf("%s is blocked from %q on %q (block %q)", subject, rule.Join, p.Scope, p.BlockID)
		return r, true
	case !p.Joins:
		r.Outcome = NoGrant
		r.Reason = fmt.Sprintf("no grant of %s holds %q on %s or above it", subject, rule.Join, resource)
		return r, true
	}
	if closed, opens, why := notOpen(p, now); closed {
		if !p.Backstage {
			r.Outcome, r.OpensAt = NotStarted, opens
			r.Reason = resource + " " + why
			if rule.Backstage != "" {
				r.Reason += fmt.Sprintf("; until then only holders of %q may join", rule.Backstage)
			}
			return r, true
		}
		r.Backstage = true
	}
	if l := rule.Lobby; l != nil && !p.SkipsLobby {
		// Backstage tells of an admission, which one who waits has yet to
		// get.
		r.Outcome, r.Backstage = Lobby, false
		r.Reason = fmt.Sprintf("%s waits in the lobby of %s until a holder of %q admits it", subject, resource, l.Admit)
		return r, true
	}
	return r, false
}

// notOpen reports whether the call p is about has not opened by now, when
// it opens if that is known, and why. A call taken live has started,
// whatever its start time says.
func notOpen(p authz.Presence, now time.Time) (bool, time.Time, string) {
	rule := p.Rule
	if p.Live {
		return false, time.Time{}, ""
	}
	if rule.RequireLive {
		return true, time.Time{}, "is backstage until it goes live"
	}
	if !p.StartsAt.IsZero() {
		opens := p.StartsAt.Add(-rule.JoinAhead)
		if now.Before(opens) {
			return true, opens, fmt.Sprintf("opens at %s, %s before it starts", opens.UTC().Format(time.RFC3339Nano), rule.JoinAhead)
		}
	}
	return false, time.Time{}, ""
}

// knock puts subject in the lobby, or renews its knock there, for caller.
func (m *Manager) knock(ctx context.Context, r Result, p authz.Presence, caller, subject, resource, note string, now time.Time) (Result, error) {
	// A knock left from before the call was deleted and registered again
	// ends first: renewed, it would carry its id and note into this call.
	m.acted(ctx, p.Revision)
	lease := p.Rule.LeaseOf()
	ctx, cancel := m.within(ctx)
	defer cancel()
	k, err := m.store.Knock(ctx, Knock{ID: newID(), Subject: subject, Call: resource, Caller: caller, Note: note, Knocked: now, Expires: now.Add(lease)})
	if full := (*LobbyFullError)(nil); errors.As(err, &full) {
		return Result{}, &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindLimitExceeded, Field: "resource", Value: resource,
			Reason: fmt.Sprintf("the call's lobby holds as many knocks as a lobby may (at most %d knocks); admit or deny some first", full.Limit),
			Meta:   map[string]string{"limit": strconv.Itoa(full.Limit)}}
	}
	if err != nil {
		return Result{}, entering(storeError(err), resource)
	}
	// A write committed since p was read may have found no knock to act
	// on, and the knock ends now as it would have had it been made first:
	// an Admit lets it in; the call's deletion denies it, or it would wait
	// in the lobby of a call registered again under the name; a ban, or a
	// grant revoked, denies it as the view does (denyKnocks), its
	// KeepAlive saying why.
	if q := m.engine.Index().Presence(subject, resource); q.Revision != p.Revision {
		var err error = ErrNoSession // nothing ended
		switch out, _ := ejects(q, subject, resource); {
		case !q.Known:
			_, err = m.store.EndKnock(ctx, k.ID, Denied)
		case out != 0:
			_, err = m.v.endKnockDenied(ctx, k.ID, out)
		default:
			if _, decided := m.gate(q, subject, resource, m.clock.Now()); !decided && !noRoomJoin(&Result{}, q, subject, resource) {
				_, err = m.store.EndKnock(ctx, k.ID, LetIn)
			}
		}
		if err == nil {
			m.v.storeEvents()
		}
	}
	r.Session, r.Expires, r.Lease = k.ID, k.Expires, lease
	return r, nil
}

// MaxNoteLen bounds a knock's note.
const MaxNoteLen = 256

// Knock puts subject in resource's lobby when Join would send it there;
// otherwise it answers what Join would, without joining: Blocked, NoGrant
// (roomJoin's permission included), NotStarted, or Admitted when it may
// join without knocking. Capacity and occupancy are Join's to decide, as a
// knock holds no place in the call. The knock is caller's, as Join's
// session is, and counts against its share.
func (m *Manager) Knock(ctx context.Context, caller, subject, resource, note string) (Result, error) {
	if len(note) > MaxNoteLen {
		cut := 32 // its beginning, cut where a character begins
		for cut > 0 && !utf8.RuneStart(note[cut]) {
			cut--
		}
		return Result{}, &authz.Error{Code: authz.Invalid, Field: "note", Value: note[:cut] + "...",
			Reason: fmt.Sprintf("a note is at most %d bytes; this one is %d", MaxNoteLen, len(note))}
	}
	p, err := m.presence(ctx, subject, resource, 0)
	if err != nil {
		return Result{}, err
	}
	now := m.clock.Now()
	r, decided := m.gate(p, subject, resource, now)
	if decided && r.Outcome == Lobby {
		// The knock is written within what is left.
		var cancel context.CancelFunc
		ctx, cancel = m.within(ctx)
		defer cancel()
		p = m.atLatest(ctx, p, subject, resource)
		r, decided = m.gate(p, subject, resource, now)
	}
	if !decided {
		if noRoomJoin(&r, p, subject, resource) {
			return r, nil
		}
		r.Outcome, r.Grant = Admitted, nil
		r.Reason = fmt.Sprintf("%s may join %s without knocking; whether the call has room for it, Join decides", subject, resource)
		return r, nil
	}
	if r.Outcome != Lobby {
		return r, nil
	}
	return m.knock(ctx, r, p, caller, subject, resource, note, now)
}

// Renewal is the answer to a KeepAlive.
type Renewal struct {
	// Outcome is Admitted for a renewed session, Lobby for a renewed knock
	// (Admitted once the subject may join), or why a session was ended.
	Outcome Outcome
	Reason  string
	Expires time.Time
}

// KeepAlive renews a session or a knock. A session whose subject is now
// blocked from the call, holds no grant of its join permission, or lacks
// what the rule's LiveKit roomJoin requires, is ended instead; so is a
// knock, but for roomJoin, which an admission may give. A knock renewed is
// Admitted once Join would let its subject past the lobby, call open and
// roomJoin held; Lobby until then. NotFound when the session has ended.
func (m *Manager) KeepAlive(ctx context.Context, id string) (Renewal, error) {
	ctx, cancel := m.within(ctx)
	defer cancel()
	s, isSession := m.store.Session(id)
	var k Knock
	isKnock := false
	if !isSession {
		if k, isKnock = m.store.KnockOf(id); !isKnock {
			if err := m.catchUp(ctx); err != nil {
				return Renewal{}, storeError(err)
			}
			if s, isSession = m.store.Session(id); !isSession {
				k, isKnock = m.store.KnockOf(id)
			}
		}
	}
	if isSession {
		// A session admitted through another node is judged by an index
		// that has applied what that node read: one behind would lack the
		// grant it joined by, and eject it.
		if m.remote && m.engine.Index().Revision() < s.Revision {
			// Cut off from the store, the index gets no further while the
			// cut lasts: the session is kept alive through another node.
			if _, err := m.engine.Latest(ctx); err != nil {
				if ctx.Err() != nil {
					return Renewal{}, ctx.Err()
				}
				return Renewal{}, &authz.Error{Code: authz.Unavailable, Kind: authz.KindUnavailableStorage, Field: "session_id", Value: id, Err: err,
					Reason: fmt.Sprintf("the session was admitted at revision %d, which this node has yet to apply, and it is cut off from its storage (%v): keep it alive through another", s.Revision, err)}
			}
		}
		if err := m.engine.Await(ctx, s.Revision); err != nil {
			var e *authz.Error
			if errors.As(err, &e) && e.Kind == authz.KindRevisionNotReached {
				// Not min_revision: the request has none.
				c := *e
				c.Field, c.Value = "session_id", id
				c.Reason = fmt.Sprintf("the session was admitted at revision %d, which this node has yet to apply (%s); keep it alive again", s.Revision, e.Reason)
				return Renewal{}, &c
			}
			return Renewal{}, err
		}
		p := m.engine.Index().Presence(s.Subject, s.Call)
		// A session of a call deleted, and registered again, has ended.
		m.acted(ctx, p.Revision)
		if out, why := ejectsSession(p, s.Subject, s.Call, s.Capabilities, m.clock.Now()); out != 0 {
			e := Ending{Why: Ejected, Outcome: out, BlockID: p.BlockID}
			if _, err := m.store.End(ctx, id, e); errors.Is(err, ErrNoSession) {
				// It ended otherwise meanwhile (a Leave), and not ejected.
				return m.endedMeanwhile(ctx, id)
			}
			m.v.note(id, e)
			return Renewal{Outcome: out, Reason: why}, nil
		}
		s, err := m.store.Renew(ctx, id, m.clock.Now().Add(p.Rule.LeaseOf()))
		if errors.Is(err, ErrNoSession) {
			return m.endedMeanwhile(ctx, id)
		}
		if err != nil {
			return Renewal{}, storeError(err)
		}
		return Renewal{Outcome: Admitted, Reason: "renewed", Expires: s.Expires}, nil
	}
	if !isKnock {
		return m.ended(id)
	}
	p := m.engine.Index().Presence(k.Subject, k.Call)
	if out, _ := ejects(p, k.Subject, k.Call); out != 0 {
		// The knock may have been made through another node, by a grant
		// or a call this one has yet to apply: it is judged at the latest
		// revision before it is denied.
		if err := m.engine.AwaitLatest(ctx); err != nil {
			return Renewal{}, err
		}
		p = m.engine.Index().Presence(k.Subject, k.Call)
	}
	// A knock of a call deleted, and registered again, has ended.
	m.acted(ctx, p.Revision)
	if out, why := ejects(p, k.Subject, k.Call); out != 0 {
		// By its id: the subject may have knocked again since it was read,
		// unblocked or granted anew, and that knock stays.
		if _, err := m.v.endKnockDenied(ctx, id, out); errors.Is(err, ErrNoSession) {
			return m.endedMeanwhile(ctx, id)
		}
		return Renewal{Outcome: out, Reason: why}, nil
	}
	k, err := m.store.RenewKnock(ctx, id, m.clock.Now().Add(p.Rule.LeaseOf()))
	if errors.Is(err, ErrNoSession) {
		return m.endedMeanwhile(ctx, id)
	}
	if err != nil {
		return Renewal{}, storeError(err)
	}
	// ADMITTED only when Join would let the subject in past the lobby: one
	// let through the lobby waits on while the call has not opened to it,
	// or a media server told to join would be answered NOT_STARTED, and
	// keep the knock alive to be told to join again.
	// Nor while it lacks what LiveKit's roomJoin requires, for which Join
	// answers NO_GRANT: it waits for an admission that may give it.
	r, decided := m.gate(p, k.Subject, k.Call, m.clock.Now())
	switch {
	case !decided && noRoomJoin(&r, p, k.Subject, k.Call):
		return Renewal{Outcome: Lobby, Reason: "still waiting: " + r.Reason, Expires: k.Expires}, nil
	case !decided:
		return Renewal{Outcome: Admitted, Reason: k.Subject + " may join now", Expires: k.Expires}, nil
	case r.Outcome == NotStarted:
		return Renewal{Outcome: Lobby, Reason: "still waiting: " + r.Reason, Expires: k.Expires}, nil
	}
	return Renewal{Outcome: Lobby, Reason: "still waiting", Expires: k.Expires}, nil
}

// endedMeanwhile answers a KeepAlive of a session or knock that the store
// found gone when renewing it, though it was in the picture: it ended a
// moment ago, through this node or another (an Admit, a Leave), and the
// picture is brought up to date to say how.
func (m *Manager) endedMeanwhile(ctx context.Context, id string) (Renewal, error) {
	if err := m.catchUp(ctx); err != nil {
		return Renewal{}, storeError(err)
	}
	return m.ended(id)
}

// ended answers a KeepAlive of a session or knock that is gone: an eject
// says why, an admitted knock says to join; otherwise NotFound, saying how
// it ended when that is remembered. The store's endings not yet taken into
// the view are taken first: an Admit, a Deny or a Leave a moment ago is
// known to the store before the view's loop hears of it.
func (m *Manager) ended(id string) (Renewal, error) {
	m.v.storeEvents()
	e, ok := m.v.ending(id)
	switch {
	case !ok:
		return Renewal{}, storeError(ErrNoSession)
	case e.Why == Ejected:
		return Renewal{Outcome: e.Outcome, Reason: "the session was ended: the participant may no longer be in the call"}, nil
	case e.Why == Denied && e.Outcome != 0:
		return Renewal{Outcome: e.Outcome, Reason: "the knock was ended: the subject may no longer join the call"}, nil
	case e.Why == LetIn:
		return Renewal{Outcome: Admitted, Reason: "admitted from the lobby: join now"}, nil
	}
	err := storeError(ErrNoSession).(*authz.Error)
	err.Reason = "the session or knock has ended: " + map[Why]string{Left: "it left", Lapsed: "its lease ran out",
		Replaced: "the subject joined again, as another session", Denied: "it was denied entry",
		Entered: "the knock became a session"}[e.Why]
	return Renewal{}, err
}

// ejects says whether p's subject may no longer be in the call, nor wait
// in its lobby: the outcome that would refuse it, or 0.
func ejects(p authz.Presence, subject, call string) (Outcome, string) {
	switch {
	case !p.Known:
		return NoGrant, call + " is no longer registered"
	case p.Rule == nil:
		return NoGrant, "no admission rule governs " + call + " any more"
	case p.Blocked:
		return Blocked, fmt.Sprintf("%s is blocked from %q on %q (block %q)", subject, p.Rule.Join, p.Scope, p.BlockID)
	case !p.Joins:
		return NoGrant, fmt.Sprintf("no grant of %s holds %q on %s any more", subject, p.Rule.Join, call)
	}
	return 0, ""
}

// ejectsSession is ejects for a participant in the call, which stays only
// while a Join now would let it in, capacity and occupancy apart: nor may
// one stay whom the call has closed to again (taken backstage, or its start
// moved later, and the subject may not join backstage: Join answers
// NotStarted), whose admission from the lobby was revoked or ran out (Join
// answers Lobby, and knocks), or who no longer holds what LiveKit's
// roomJoin requires (Join answers NoGrant; a LiveKit participant's
// permissions have no roomJoin to take away). It judges in Join's order.
// A mute is not a way out: a block of the backstage, bypass or admit
// permission that the participant held when it joined (joinedWith, its
// capabilities then) leaves it in while a grant gives it the permission
// (Presence.GrantedBackstage, GrantedAdmit, GrantedBypass), with its
// capabilities changed. One that kept it from the permission when it
// joined still does: a participant that came in by an admission, or while
// the call was open, goes when that ends. (A rule names none of Usher's
// reserved permissions there, which are none of a session's capabilities.)
func ejectsSession(p authz.Presence, subject, call string, joinedWith []string, now time.Time) (Outcome, string) {
	if out, why := ejects(p, subject, call); out != 0 {
		return out, why
	}
	rule := p.Rule
	cameBy := func(perm string, granted bool) bool {
		return granted && perm != "" && slices.Contains(joinedWith, perm)
	}
	backstage := p.Backstage || cameBy(rule.Backstage, p.GrantedBackstage)
	if closed, _, why := notOpen(p, now); closed && !backstage {
		if rule.Backstage != "" {
			return NotStarted, fmt.Sprintf("%s %s, and only holders of %q may be in it until then", call, why, rule.Backstage)
		}
		return NotStarted, call + " " + why
	}
	if l := rule.Lobby; l != nil && !p.SkipsLobby && !cameBy(l.Admit, p.GrantedAdmit) && !cameBy(l.Bypass, p.GrantedBypass) {
		return Lobby, fmt.Sprintf("%s is no longer admitted to %s: joining again, it waits in the lobby until a holder of %q admits it", subject, call, l.Admit)
	}
	if m := rule.Media; m != nil && !slices.Contains(p.Capabilities, m.RoomJoin) {
		return NoGrant, fmt.Sprintf("%s lacks %q in %s any more, which LiveKit's roomJoin requires", subject, m.RoomJoin, call)
	}
	return 0, ""
}

// Leave ends a session or a knock; NotFound when there is none.
func (m *Manager) Leave(ctx context.Context, id string) error {
	ctx, cancel := m.within(ctx)
	defer cancel()
	_, err := m.store.End(ctx, id, Ending{Why: Left})
	if errors.Is(err, ErrNoSession) {
		// A knock is ended by its id too, not by its subject: a knock that
		// was denied, or lapsed, is gone even if its subject has knocked
		// again since. Like End, EndKnock asks the store itself, so a knock
		// made a moment ago through another node is found.
		_, err = m.store.EndKnock(ctx, id, Left)
	}
	return storeError(err)
}

// Syncer is a Store whose picture of live sessions and knocks follows
// writes made through other nodes, and so may lag them: Sync returns once
// the picture holds every write committed before it was called.
type Syncer interface {
	Sync(ctx context.Context) error
}

// catchUp brings a store that follows other nodes up to date, so that a
// session or knock made a moment ago through another node is found before
// one that is not in the picture is taken for ended.
func (m *Manager) catchUp(ctx context.Context) error {
	if s, ok := m.store.(Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// LeaveCall ends subject's session in resource and its knock there,
// whichever it has; NotFound when it has neither. It looks the session up
// rather than through the call's: a call of many is left as cheaply as one
// of few.
func (m *Manager) LeaveCall(ctx context.Context, subject, resource string) error {
	ctx, cancel := m.within(ctx)
	defer cancel()
	for synced := false; ; synced = true {
		if s, ok := m.store.SessionOf(resource, subject); ok {
			_, err := m.store.End(ctx, s.ID, Ending{Why: Left})
			if err == nil {
				// A participant who lost what let it past the lobby may
				// wait there too, joined again through a node whose view
				// had yet to eject it: it has left both. The lobby is
				// asked only when the call has one waiting.
				if _, knocks := m.store.Count(resource); knocks > 0 {
					_, err = m.store.Unknock(ctx, resource, subject, Left)
				}
				return storeError(err)
			}
			if !errors.Is(err, ErrNoSession) {
				return storeError(err)
			}
			// It ended since it was found: as if it had not been.
		}
		found, err := m.store.Unknock(ctx, resource, subject, Left)
		if err != nil {
			return storeError(err)
		}
		if found {
			return nil
		}
		if synced {
			return &authz.Error{Code: authz.NotFound, Kind: authz.KindSessionNotFound, Field: "subject", Value: subject, Reason: "has no session in " + resource + ", nor a knock"}
		}
		// A session made a moment ago through another node may not be in
		// the picture yet: look again once it holds what was committed.
		if err := m.catchUp(ctx); err != nil {
			return storeError(err)
		}
	}
}

// Lobby lists who waits to enter resource. An actor must hold the lobby's
// admit permission there.
func (m *Manager) Lobby(ctx context.Context, resource, actor string) ([]Knock, error) {
	if _, err := m.lobbyRule(resource, actor, "list the lobby of"); err != nil {
		return nil, err
	}
	// Not the knocks of a call of the name that was deleted.
	m.acted(ctx, m.engine.Index().Revision())
	return m.waiting(resource), nil
}

// acted returns once the view has acted on the change sets up to rev, as
// it would a moment later (settle), when it has yet to: a call deleted by
// then has had its knocks ended.
func (m *Manager) acted(ctx context.Context, rev authz.Revision) {
	if authz.Revision(m.v.sifted.Load()) < rev {
		m.v.settle(ctx, rev)
	}
}

// waiting is who waits in call's lobby, longest first. A subject blocked,
// or left with no grant, since it knocked may not join: its knock ends as
// the view reads the write where a stream watches the call (denyKnocks),
// else at its next KeepAlive, and no one waits for it.
func (m *Manager) waiting(call string) []Knock {
	return m.admissible(call, m.store.Knocks(call))
}

// admissible is knocks, of call, without those whose subjects may no
// longer be there, in the order they knocked.
func (m *Manager) admissible(call string, knocks []Knock) []Knock {
	x := m.engine.Index()
	knocks = slices.DeleteFunc(knocks, func(k Knock) bool {
		out, _ := ejects(x.Presence(k.Subject, call), k.Subject, call)
		return out != 0
	})
	slices.SortFunc(knocks, func(a, b Knock) int { return a.Knocked.Compare(b.Knocked) })
	return knocks
}

// lobbyRule returns the lobby of resource's rule, refusing an actor
// without its admit permission.
func (m *Manager) lobbyRule(resource, actor, what string) (*authz.Lobby, error) {
	p, err := m.presence(context.Background(), actorOrNobody(actor), resource, 0)
	if err != nil {
		return nil, err
	}
	l := p.Rule.Lobby
	if l == nil {
		return nil, &authz.Error{Code: authz.FailedPrecondition, Kind: authz.KindNoLobby, Field: "resource", Value: resource,
			Reason: fmt.Sprintf("%s has no lobby: the admission rule at %q has none", resource, p.Rule.Scope)}
	}
	if actor == "" {
		return l, nil
	}
	if err := authz.ValidateSubject("actor", actor); err != nil {
		return nil, err
	}
	d, _, err := m.engine.Check(authz.Query{Subject: actor, Permission: l.Admit, Resource: resource})
	if err != nil {
		return nil, err
	}
	if !d.Allowed {
		return nil, &authz.Error{Code: authz.PermissionDenied, Field: "actor", Value: actor, Rule: authz.RuleMissingPermission,
			Reason: fmt.Sprintf("may not %s %q: the actor lacks %q there", what, resource, l.Admit),
			Meta:   map[string]string{"permission": l.Admit, "resource": resource}}
	}
	return l, nil
}

func actorOrNobody(actor string) string {
	if actor == "" {
		return "usher:nobody"
	}
	return actor
}

// Admit lets subject into resource: a grant of the lobby's admit role on
// resource, judged as the engine's Admit says (which refuses a subject a
// block keeps out), after which the subject's knock ends, if Join would
// let it in now, and watchers hear of it. Watchers hear of no other
// admission: ADMITTED is a knock let in, which every node tells; a subject
// admitted before it knocked, or one the admission leaves without the join
// permission, has no knock let in to tell of. One admitted to a call yet
// to open to it, or without what roomJoin requires, waits on: its knock's
// KeepAlive answers ADMITTED once it may join, as it does for a knock
// given a role that skips the lobby.
func (m *Manager) Admit(ctx context.Context, by authz.Author, resource, subject string, expires time.Time) (authz.Revision, error) {
	if err := authz.ValidateSubject("subject", subject); err != nil {
		return 0, err
	}
	rev, err := m.engine.Admit(ctx, by, resource, subject, expires)
	if err != nil {
		return 0, err
	}
	// A subject who still may not join (the admit role lacks the join
	// permission, or a block came after the grant) is let in by no grant:
	// ended as let in, its knock would tell it to join. It waits in no
	// list, and its next KeepAlive ends it, saying why.
	p := m.engine.Index().Presence(subject, resource)
	if out, _ := ejects(p, subject, resource); out != 0 {
		return rev, nil
	}
	// Ended as let in, the knock would tell the subject to join, and Join
	// would answer NOT_STARTED or NO_GRANT, the knock gone.
	if r, decided := m.gate(p, subject, resource, m.clock.Now()); decided || noRoomJoin(&r, p, subject, resource) {
		return rev, nil
	}
	// Not a knock left from before the call was deleted.
	m.acted(ctx, p.Revision)
	uctx, cancel := m.within(ctx)
	defer cancel()
	found, err := m.store.Unknock(uctx, resource, subject, LetIn)
	if err != nil {
		m.logger.Warn("admitted, but the knock could not be ended", "resource", resource, "subject", subject, "error", err)
	}
	if found {
		// The knock's ending tells every node's watchers, this one's among
		// them, as soon as the view takes it: now.
		m.v.storeEvents()
	}
	return rev, nil
}

// Deny takes subject out of resource's lobby, judged at the latest
// revision. An actor must hold the lobby's admit permission there, and may
// not deny itself; NotFound when the subject is not waiting.
func (m *Manager) Deny(ctx context.Context, by authz.Author, resource, subject string) error {
	if err := authz.ValidateSubject("subject", subject); err != nil {
		return err
	}
	if by.Actor != "" && by.Actor == subject {
		// Judged as an Admit of itself is: a call that is not registered,
		// or has no lobby, is refused as such first.
		if _, err := m.lobbyRule(resource, "", "deny entry to"); err != nil {
			return err
		}
		return &authz.Error{Code: authz.PermissionDenied, Field: "actor", Value: by.Actor, Rule: authz.RuleNoSelfService,
			Reason: fmt.Sprintf("may not deny itself entry to %s: %s", resource, authz.RuleNoSelfService), Meta: map[string]string{"subject": by.Actor, "resource": resource}}
	}
	// No revision guards an Unknock: the actor's power, and the call and
	// its lobby, are judged at the latest revision, not at what this node
	// has applied (a call registered through another a moment ago).
	if err := m.engine.AwaitLatest(ctx); err != nil {
		return err
	}
	if _, err := m.lobbyRule(resource, by.Actor, "deny entry to"); err != nil {
		return err
	}
	// Not the knock of a call of the name that was deleted.
	m.acted(ctx, m.engine.Index().Revision())
	uctx, cancel := m.within(ctx)
	defer cancel()
	found, err := m.store.Unknock(uctx, resource, subject, Denied)
	if err != nil {
		return storeError(err)
	}
	if !found {
		return &authz.Error{Code: authz.NotFound, Kind: authz.KindKnockNotFound, Field: "subject", Value: subject, Reason: "is not waiting in the lobby of " + resource}
	}
	return nil
}

// storeError maps a store's errors to the engine's codes.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoSession):
		return &authz.Error{Code: authz.NotFound, Kind: authz.KindSessionNotFound, Field: "session_id", Reason: "no live session or knock has this id: it ended, lapsed or never was"}
	}
	if many := (*TooManyError)(nil); errors.As(err, &many) {
		return &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindSessionLimit,
			Reason: fmt.Sprintf("this server holds as many sessions as it may (at most %d sessions and lobby knocks); try another", many.Limit),
			Meta:   map[string]string{"limit": strconv.Itoa(many.Limit)}}
	}
	var share *ShareError
	if errors.As(err, &share) {
		return &authz.Error{Code: authz.ResourceExhausted, Kind: authz.KindCallerSessionLimit,
			Reason: fmt.Sprintf("caller %q holds %d live sessions and lobby knocks, as many as one caller may hold at once (%d); "+
				"leave some first, or let their leases run out", share.Caller, share.Held, share.Share),
			Meta: map[string]string{"caller": share.Caller, "limit": strconv.Itoa(share.Share), "held": strconv.Itoa(share.Held)}}
	}
	var e *authz.Error
	if errors.As(err, &e) {
		return err
	}
	return &authz.Error{Code: authz.Unavailable, Kind: authz.KindUnavailableSessionStore, Reason: "the session store failed", Err: err}
}

// entering names resource in err, a refusal of a Join or a Knock there for
// want of room on the node, or in its caller's share, as the field the
// request asked for.
func entering(err error, resource string) error {
	if e, ok := err.(*authz.Error); ok && (e.Kind == authz.KindSessionLimit || e.Kind == authz.KindCallerSessionLimit) {
		e.Field, e.Value = "resource", resource
	}
	return err
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
