package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Session is a subject's presence in a call: a lease its media server
// renews. A subject has at most one session per call.
type Session struct {
	ID      string
	Subject string
	Call    string
	// Caller is the caller of the server's callers file that made the
	// session, whose share of the store (CallerShare) it counts against;
	// "" for the anonymous caller of a server without one, whose sessions
	// count for nobody's share.
	Caller  string
	Joined  time.Time
	Expires time.Time
	// Counted: the session counts against the call's max_participants;
	// the rule in force said so (it held none of the uncounted roles) when
	// it joined, or when the manager last marked it.
	Counted bool
	// Exclusive is what the subject held of the rule's exclusive roles and
	// permissions ("role NAME", "permission NAME") when it joined, or when
	// the manager last marked it.
	Exclusive []string
	// Capabilities are the subject's permissions in the call when it
	// joined, at Revision.
	Capabilities []string
	Revision     authz.Revision
}

// Knock is a subject waiting in a call's lobby, on a lease like a
// session's.
type Knock struct {
	ID      string
	Subject string
	Call    string
	// Caller is the caller that last knocked, whose share the knock counts
	// against, as a session's Caller.
	Caller  string
	Note    string
	Knocked time.Time
	Expires time.Time
}

// Why says how a session or a knock ended.
type Why uint8

// The ways a session or a knock ends.
const (
	// Left: the media server called Leave.
	Left Why = iota + 1
	// Lapsed: the lease ran out.
	Lapsed
	// Ejected: the subject may no longer be in the call.
	Ejected
	// Replaced: the subject joined the call again.
	Replaced
	// LetIn: a knock ended because the subject was admitted.
	LetIn
	// Denied: a knock ended because someone turned it down.
	Denied
	// Entered: a knock ended because the subject joined.
	Entered
)

// Ending is why a session ended, with the outcome that ejected it.
type Ending struct {
	Why     Why
	Outcome Outcome
	BlockID string
}

// StoreEvent is a change a Store reports, in the order it happened for any
// one call: a session or knock that began or ended, here or on another
// node sharing the store; or, with Lost set, that the store lost track of
// them until Time.
type StoreEvent struct {
	Session *Session // a session began (Ended is nil) or ended
	Knock   *Knock   // a knock began or was renewed (Ended is nil), or ended
	Ended   *Ending
	// Lost: a store shared with other nodes could not follow them for a
	// while (etcd compacted the history it would have resumed from) and
	// read them whole again at Time. It has reported what differs, but not
	// the sessions and knocks that began and ended meanwhile.
	Lost bool
	Time time.Time
}

// Store keeps live sessions and knocks: in memory on one node
// (MemoryStore), in etcd leases on a cluster. Every method is safe for
// concurrent use.
type Store interface {
	// Join makes s the subject's session in its call unless, among the
	// call's other live sessions, max (when not 0) counted ones leave no
	// room for a counted s (Full, with how many there are), or one holds
	// any of s.Exclusive (InUse, with which). The decision and the session
	// are atomic with every other Join on the call. A session the subject
	// already had in the call ends as Replaced. A session of a caller
	// (s.Caller) that would take it past its share is refused with a
	// *ShareError, unless it takes the place of the caller's own session or
	// knock of the subject in the call.
	Join(ctx context.Context, s Session, max uint32) (Outcome, string, error)
	// Mark sets a live session's Counted and Exclusive anew, as the rule
	// in force reads its subject after a grant, a revoke or a role changed,
	// for the joins that follow to see. It decides nothing: the session
	// stays even if the call is now over capacity or shares an exclusive
	// mark. The marks were read at revision at: a store that nodes share
	// keeps the marks of a session joined, or marked, at a later one, which
	// a node whose index is behind must not take back. ErrNoSession when
	// the session ended.
	Mark(ctx context.Context, id string, counted bool, exclusive []string, at authz.Revision) (Session, error)
	// Renew moves the lease of a live session to expires.
	// ErrNoSession when the session ended.
	Renew(ctx context.Context, id string, expires time.Time) (Session, error)
	// End ends a live session; ErrNoSession when it ended already.
	End(ctx context.Context, id string, why Ending) (Session, error)
	// Session returns a live session.
	Session(id string) (Session, bool)
	// Sessions returns the live sessions of call.
	Sessions(call string) []Session
	// SessionOf returns subject's live session in call, at the cost of a
	// lookup, however many the call holds.
	SessionOf(call, subject string) (Session, bool)
	// Knock puts k in its call's lobby, or renews the subject's knock
	// there, keeping its id; the knock is then k.Caller's. A renewal with
	// another note is reported, as a knock that began is. A knock that
	// would take k.Caller past its share is refused with a *ShareError.
	Knock(ctx context.Context, k Knock) (Knock, error)
	// Unknock takes subject out of call's lobby; false when it was not
	// there.
	Unknock(ctx context.Context, call, subject string, why Why) (bool, error)
	// EndKnock ends the live knock of id; ErrNoSession when it ended
	// already, though its subject may have knocked again since: that
	// knock, of another id, stays.
	EndKnock(ctx context.Context, id string, why Why) (Knock, error)
	// RenewKnock moves the lease of a knock to expires; ErrNoSession when
	// it ended.
	RenewKnock(ctx context.Context, id string, expires time.Time) (Knock, error)
	// KnockOf returns a live knock.
	KnockOf(id string) (Knock, bool)
	// Knocks returns who waits in call's lobby.
	Knocks(call string) []Knock
	// Count counts the live sessions and knocks of call, as Sessions and
	// Knocks would return them, without making either.
	Count(call string) (sessions, knocks int)
	// Len counts the live sessions and knocks the store holds (a cluster
	// store: its picture of every replica's), for metrics; one whose lease
	// has just run out may still be counted.
	Len() (sessions, knocks int)
	// Pending is signalled when events are queued for Take.
	Pending() <-chan struct{}
	// Take returns the queued events, for one consumer, in the order they
	// happened for any one call.
	Take() []StoreEvent
	// Close stops the store; a cluster store revokes its leases.
	Close() error
}

// Feed hands s's events to a channel, batch by batch, until ctx ends: for
// consumers that want a channel rather than Pending and Take.
func Feed(ctx context.Context, s Store) <-chan []StoreEvent {
	out := make(chan []StoreEvent)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.Pending():
			}
			if batch := s.Take(); len(batch) > 0 {
				select {
				case out <- batch:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Room decides whether s fits among others, the call's other live
// sessions: Full (with how many count) when max is not 0, s counts, and
// max others count; InUse (with which) when another holds one of
// s.Exclusive; else Admitted. old is the subject's own session in the call
// that s replaces, or nil: what old held already, s takes from no one, and
// no one who came in beside it since takes it from s. A store that reads a
// call whole decides with it; MemoryStore keeps the counts instead and
// decides alike.
func Room(others []Session, old *Session, s Session, max uint32) (Outcome, string) {
	if s.Counted && max > 0 {
		n := 0
		for _, o := range others {
			if o.Counted {
				n++
			}
		}
		if n >= int(max) {
			return Full, strconv.Itoa(n)
		}
	}
	for _, mark := range s.Exclusive {
		if mark == authz.OccupantMark || old != nil && slices.Contains(old.Exclusive, mark) {
			continue
		}
		for _, o := range others {
			if slices.Contains(o.Exclusive, mark) {
				return InUse, mark
			}
			if strings.HasPrefix(mark, authz.PermissionMark) && slices.Contains(o.Exclusive, authz.OccupantMark) {
				return InUse, authz.OccupantMark
			}
		}
	}
	return Admitted, ""
}

// Alone reports whether Room admits s whatever the call's other sessions
// are: s counts against no max, and holds no exclusive mark, but the
// occupant's and those old held, that Room looks for among them. A store
// that guards a join against the call's sessions changing meanwhile need
// not guard one that is alone.
func Alone(old *Session, s Session, max uint32) bool {
	if s.Counted && max > 0 {
		return false
	}
	for _, mark := range s.Exclusive {
		if mark != authz.OccupantMark && (old == nil || !slices.Contains(old.Exclusive, mark)) {
			return false
		}
	}
	return true
}

// ErrNoSession is the error of a session or knock that is not live.
var ErrNoSession = errors.New("no live session or knock with that id")

// ErrTooMany is the error of a Join or Knock past the store's bounds; a
// store returns it as a *TooManyError.
var ErrTooMany = errors.New("too many sessions")

// TooManyError is ErrTooMany with the store's bound, which the refusal
// states.
type TooManyError struct {
	Limit int // live sessions and knocks the store keeps (MaxSessions)
}

func (e *TooManyError) Error() string {
	return fmt.Sprintf("too many sessions: the store keeps at most %d sessions and knocks", e.Limit)
}

// Is makes a TooManyError ErrTooMany.
func (e *TooManyError) Is(target error) bool { return target == ErrTooMany }

// ShareError is the error of a Join or Knock of a caller that holds its
// share of the store's live sessions and knocks (CallerShare), which it
// would pass: one caller of many, a media server's sidecar gone wrong or
// whose token leaked, may not take the store whole and leave the others
// none.
type ShareError struct {
	Caller string
	Share  int // the most sessions and knocks the caller may hold
	Held   int // how many it holds
}

func (e *ShareError) Error() string {
	return fmt.Sprintf("caller %q holds %d live sessions and knocks, and may hold at most %d", e.Caller, e.Held, e.Share)
}

// CallerShare is the share of a store's MaxSessions that one caller may
// hold, given (when not 0) or else a quarter of maxSessions, at least one:
// enough for four callers at once however each behaves.
func CallerShare(given, maxSessions int) int {
	if given > 0 {
		return given
	}
	return max(1, maxSessions/4)
}

// ErrLobbyFull is the error of a Knock on a call whose lobby holds as many
// knocks as a lobby may; a store returns it as a *LobbyFullError.
var ErrLobbyFull = errors.New("the lobby is full")

// LobbyFullError is ErrLobbyFull with the store's bound, which the refusal
// states.
type LobbyFullError struct {
	Limit int // knocks one call's lobby may hold
}

func (e *LobbyFullError) Error() string {
	return fmt.Sprintf("the lobby is full: it holds at most %d knocks", e.Limit)
}

// Is makes a LobbyFullError ErrLobbyFull.
func (e *LobbyFullError) Is(target error) bool { return target == ErrLobbyFull }
