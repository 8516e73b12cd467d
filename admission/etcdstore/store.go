// Package etcdstore keeps admission's live sessions and knocks in etcd, so
// that the replicas of a cluster share one picture of who is in each call:
// capacity and exclusive occupancy hold across replicas, a session joined
// through one replica can be renewed or left through any other, and every
// replica's admission.Manager hears of every session and knock that begins
// or ends, whoever made or ended it.
//
// # Keys
//
// Under <prefix>adm/ (the prefix is the storage backend's, "/usher/" by
// default; nothing there overlaps):
//
//	s/<call>\x00<subject>   the subject's session in the call (JSON, versioned)
//	k/<call>\x00<subject>   the subject's knock in the call's lobby
//	i/<id>                  where the session or knock of that id lives; once
//	                        a replica ends it, also why
//
// Names are printable, so \x00 ends a call's name, and the range
// s/<call>\x00 holds exactly the call's sessions.
//
// # Leases
//
// Each session and each knock has an etcd lease of its own, its key and its
// i/ key attached, with a TTL of its lease rounded up to the second. Renew is
// a KeepAliveOnce of that lease from whichever replica the media server
// reaches (none when the new expiry is no later than the one the session
// has: the lease reaches that already, and restarted it would reach past
// it); only when the new expiry is further off than the lease's TTL
// reaches is the record put again under a new, longer lease, or, when it is
// more than a second nearer (the rule's lease was shortened), under a new,
// shorter one, so that the session lapses when its Expires says. A session
// nobody renews lapses when etcd expires its lease and deletes its keys, a
// second or so after its Expires; every replica sees the delete on its watch
// and reports the session Lapsed. Liveness is therefore the key's presence,
// not the record's Expires, which is the expiry as last written: a session's
// renewal that needs no new lease does not write it, so another replica's
// Session(id).Expires may be older than the lease's. A knock's renewal (a
// KeepAlive, or a Knock again) does write it, under the same lease: the
// lobby's list gives when each knock lapses, on every replica.
//
// # Capacity
//
// Join reads the call's sessions and the subject's knock at one etcd
// revision R, runs decide on the others, and commits the session in one
// transaction whose comparisons say that no key in the call's range was
// created or modified after R (ModRevision < R+1 over the range; a key
// deleted since is not compared, and fewer sessions only make an admitted
// decision truer), and that the subject's own session and knock keys are as
// read; a join that Room admits whoever else is in the call
// (admission.Alone: it counts against no max and takes no exclusive mark)
// reads and compares only the latter, however many are in the call. If
// another replica committed in between, Join reads and decides again, at
// most Options.RetryConflicts times, then answers authz.Aborted.
// Within one process, joins of a call wait for each other, so a replica never
// conflicts with itself. The decision is always made against etcd, never the
// local picture.
//
// # Each caller's share
//
// A session's or knock's record names the caller that made it, or last
// took it over, and each replica counts, in its picture, what each caller
// holds, as it counts the sessions and knocks it bounds by MaxSessions:
// Join and Knock refuse a caller at its CallerShare, counting also its
// joins and knocks under way through this replica, until the picture holds
// them. What other replicas write in the meantime it counts only once its
// watch shows it: joins through several replicas at once may take up to a
// share through each. Liveness is the key's presence, so a session counts
// until its key goes, however stale its Expires. A record without a caller,
// written before callers were recorded, or written again by such a replica
// (a renewal under a new lease, a Mark), counts for nobody's share.
//
// # Why a session ended
//
// A delete carries no reason, so the replica that ends a session or knock
// (End, Unknock, a Join that replaces a session or ends a knock as Entered)
// rewrites its i/<id> key with the reason in the same transaction that
// deletes or overwrites its key, still under its lease, and then revokes the
// lease, which removes the i/ key. A watcher that sees the key go and, at
// the same revision, the i/ key written with a reason, reports that reason;
// a key that goes with no reason beside it was deleted by its lease running
// out: Lapsed.
//
// # The local picture and events
//
// Each store lists the prefix when it opens and then follows it with an etcd
// watch, keeping every live session and knock of the cluster in memory:
// Session, Sessions, KnockOf and Knocks answer from it without a round trip.
// Every write waits (briefly) for the watch to deliver its own revision, so
// that a read after it on the same replica sees it. Events reports, in etcd's
// order (hence in each call's order), what the watch shows beginning and
// ending, starting with what was live when the store opened; a watch that
// cannot resume (etcd compacted past it) lists the prefix again and reports
// the difference, then that it lost track (StoreEvent.Lost): what began and
// ended meanwhile is in no listing. The consumer of Events does not hold the watch up: events
// queue, and past Options.MaxPending queued events the queue is collapsed
// (a session or knock that began and ended while queued is dropped from it,
// with a warning in the log), which bounds it by twice the live sessions.
//
// # Close
//
// Sessions belong to the media servers that renew them, through any
// replica; Close does not end them, so a replica's restart does not eject
// the participants it admitted. With Options.RevokeOnClose it revokes the
// leases of what it made, and other replicas see those sessions and knocks
// end as Lapsed.
//
// Nothing else in Usher imports this package but the wiring in cmd/usher; it
// imports admission and authz, never the engine's storage.
package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// Options tune New.
type Options struct {
	// Prefix is the key prefix of Usher's data, as storage/etcd's; the
	// sessions live under Prefix+"adm/". Default "/usher/".
	Prefix string
	// Node names this replica in the records it writes; default the host
	// name and a random suffix.
	Node string
	// Clock must be the admission Manager's: Renew measures the lease it
	// needs from its Now. Default authz.SystemClock.
	Clock  authz.Clock
	Logger *slog.Logger
	// MaxSessions bounds the live sessions and knocks, of the whole
	// cluster, that this replica holds in its picture: past it, it refuses
	// new ones (a replacement still joins). Each replica counts what its
	// watch has shown it and the joins and knocks under way through it, so
	// a burst through one replica does not pass the bound; a burst through
	// several at once, before their watches show each other's writes, may
	// pass it by what each lets in meanwhile. Default
	// admission.DefaultMaxSessions.
	MaxSessions int
	// CallerShare bounds the live sessions and knocks, of the whole
	// cluster, that one caller (their Caller) may hold, of MaxSessions,
	// counted as MaxSessions is, from the picture; past it, the caller's
	// new ones are refused (one that takes the place of its own session or
	// knock of the subject still joins). This replica also counts the
	// caller's joins and knocks in flight through it, so a burst through
	// one replica does not pass the share; a burst through several at once,
	// before their watches show each other's writes, may enter up to a
	// share through each. Default admission.CallerShare(0, MaxSessions), a
	// quarter of it.
	CallerShare int
	// MaxKnocks bounds the knocks of one call, counted in etcd; default
	// admission.DefaultMaxKnocks.
	MaxKnocks int
	// MaxValueBytes bounds a session's or a knock's record; default
	// DefaultMaxValueBytes. A session's record carries its capabilities,
	// every permission of the catalog for a subject that holds "*": the
	// default lets in those of a catalog of thousands, which such a subject
	// joins on one server as well.
	MaxValueBytes int
	// MaxPending is how many events may queue for the consumer of Events
	// before the queue is collapsed; default DefaultMaxPending.
	MaxPending int
	// RetryConflicts bounds how often a write reads again after another
	// replica changed what it read; default DefaultRetryConflicts.
	RetryConflicts int
	// RevokeOnClose makes Close revoke the leases of the sessions and knocks
	// this replica last wrote, so that they lapse at once.
	RevokeOnClose bool
}

// Defaults of Options.
const (
	DefaultMaxValueBytes  = 1 << 20 // under etcd's default --max-request-bytes, 1.5 MiB
	DefaultMaxPending     = 65_536
	DefaultRetryConflicts = 50
)

// awaitAtMost bounds how long a write waits for the watch to deliver it; past
// it the write still succeeded, and the local picture catches up later.
const awaitAtMost = 5 * time.Second

// revokeTimeout bounds a lease revocation; one that fails leaves the lease to
// run out.
const revokeTimeout = 5 * time.Second

// Store is the etcd admission.Store.
type Store struct {
	cli    *clientv3.Client
	opts   Options
	clock  authz.Clock
	log    *slog.Logger
	prefix string // Options.Prefix + "adm/"

	locksMu sync.Mutex
	locks   map[string]*callLock

	mu       sync.Mutex
	c        cache
	applied  int64         // the etcd revision the picture reflects
	advanced chan struct{} // closed when applied moves
	pending  []admission.StoreEvent
	collapse int // len(pending) past which it is collapsed
	// renotes are the knocks of pending that tell a new note of a knock
	// begun before them, not a knock beginning (collapsePending).
	renotes map[*admission.Knock]bool
	signal  chan struct{}
	closed  bool

	// inflight counts, under mu, each caller's joins and knocks under way
	// through this replica that may add one to what it holds; adding, the
	// joins and knocks under way that may add a session or knock.
	inflight map[string]int
	adding   int

	// shortest is the TTL, in seconds, etcd gave a lease granted for
	// less (its shortest lease); 0 until one was.
	shortest atomic.Int64

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   sync.WaitGroup
}

var (
	_ admission.Store  = (*Store)(nil)
	_ admission.Syncer = (*Store)(nil)
)

// errClosed is the error of a write after Close.
var errClosed = &authz.Error{Code: authz.Unavailable, Kind: authz.KindUnavailableSessionStore, Reason: "the session store is closed"}

// New lists the sessions and knocks under the prefix and starts following
// them. It does not close cli; Close stops the store.
func New(ctx context.Context, cli *clientv3.Client, opts Options) (*Store, error) {
	s := newStore(cli, opts)
	if err := s.load(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	s.done.Add(1)
	go s.follow()
	return s, nil
}

// newStore returns a store that neither lists nor follows yet.
func newStore(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "/usher/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.Node == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		opts.Node = host + "-" + hex.EncodeToString(b[:])
	}
	if opts.Clock == nil {
		opts.Clock = authz.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = admission.DefaultMaxSessions
	}
	opts.CallerShare = admission.CallerShare(opts.CallerShare, opts.MaxSessions)
	if opts.MaxKnocks <= 0 {
		opts.MaxKnocks = admission.DefaultMaxKnocks
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = DefaultMaxValueBytes
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.RetryConflicts <= 0 {
		opts.RetryConflicts = DefaultRetryConflicts
	}
	s := &Store{
		cli: cli, opts: opts, clock: opts.Clock, log: opts.Logger, prefix: opts.Prefix + "adm/",
		locks: map[string]*callLock{}, c: newCache(), inflight: map[string]int{}, advanced: make(chan struct{}),
		collapse: opts.MaxPending, signal: make(chan struct{}, 1),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *Store) sessionKey(call, subject string) string {
	return s.prefix + "s/" + call + "\x00" + subject
}
func (s *Store) sessionRange(call string) string { return s.prefix + "s/" + call + "\x00" }
func (s *Store) knockKey(call, subject string) string {
	return s.prefix + "k/" + call + "\x00" + subject
}
func (s *Store) knockRange(call string) string { return s.prefix + "k/" + call + "\x00" }
func (s *Store) idKey(id string) string        { return s.prefix + "i/" + id }

func (s *Store) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	return nil
}

// Session implements admission.Store.
func (s *Store) Session(id string) (admission.Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.c.byID[id]
	if e == nil || e.knock {
		return admission.Session{}, false
	}
	return e.s, true
}

// Sessions implements admission.Store.
func (s *Store) Sessions(call string) []admission.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c.calls[call]
	if c == nil {
		return nil
	}
	out := make([]admission.Session, 0, len(c.sessions))
	for _, e := range c.sessions {
		out = append(out, e.s)
	}
	return out
}

// SessionOf implements admission.Store.
func (s *Store) SessionOf(call, subject string) (admission.Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c.calls[call]
	if c == nil || c.sessions[subject] == nil {
		return admission.Session{}, false
	}
	return c.sessions[subject].s, true
}

// Len implements admission.Store. It counts call by call, at a metrics
// scrape rather than on every write.
func (s *Store) Len() (sessions, knocks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.c.calls {
		sessions += len(c.sessions)
		knocks += len(c.knocks)
	}
	return sessions, knocks
}

// KnockOf implements admission.Store.
func (s *Store) KnockOf(id string) (admission.Knock, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.c.byID[id]
	if e == nil || !e.knock {
		return admission.Knock{}, false
	}
	return e.k, true
}

// Knocks implements admission.Store.
func (s *Store) Knocks(call string) []admission.Knock {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c.calls[call]
	if c == nil {
		return nil
	}
	out := make([]admission.Knock, 0, len(c.knocks))
	for _, e := range c.knocks {
		out = append(out, e.k)
	}
	return out
}

// Count implements admission.Store.
func (s *Store) Count(call string) (sessions, knocks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.c.calls[call]; c != nil {
		return len(c.sessions), len(c.knocks)
	}
	return 0, 0
}

// Close implements admission.Store. It does not close the client.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var mine []clientv3.LeaseID
	if s.opts.RevokeOnClose {
		for _, e := range s.c.byID {
			if e.node == s.opts.Node {
				mine = append(mine, e.lease)
			}
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	slots := make(chan struct{}, 16)
	for _, l := range mine {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			s.revoke(l)
		})
	}
	wg.Wait()
	s.cancel()
	s.done.Wait()
	return nil
}

// callLock makes the joins and knocks of one call in this process wait for
// each other; a channel, so that waiting heeds the context.
type callLock struct {
	ch chan struct{}
	n  int // holders and waiters
}

func (s *Store) lockCall(ctx context.Context, call string) (func(), error) {
	s.locksMu.Lock()
	l := s.locks[call]
	if l == nil {
		l = &callLock{ch: make(chan struct{}, 1)}
		s.locks[call] = l
	}
	l.n++
	s.locksMu.Unlock()
	release := func() {
		s.locksMu.Lock()
		if l.n--; l.n == 0 {
			delete(s.locks, call)
		}
		s.locksMu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// Sync implements admission.Syncer: it waits until the local picture
// reflects etcd's revision at the call, as await does. That revision
// counts every write to etcd, Usher's other data among them, while the
// watch's events say only how far it has come under the prefix: so Sync
// asks etcd for the watch's progress, which says that it has come as far
// as the revision, and asks again while it waits (etcd answers only a
// watch that has caught up).
func (s *Store) Sync(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	wait, cancel := context.WithTimeout(context.WithoutCancel(ctx), awaitAtMost)
	defer cancel()
	ask := time.NewTicker(progressEvery)
	defer ask.Stop()
	// etcd's client sends a progress request on the watch stream whose
	// context carries the same metadata: the session watch's, opened
	// WithRequireLeader (watch).
	progress := clientv3.WithRequireLeader(wait)
	for asked := false; ; {
		s.mu.Lock()
		if s.applied >= rev || s.closed {
			s.mu.Unlock()
			return nil
		}
		ch := s.advanced
		s.mu.Unlock()
		if !asked {
			asked = true
			// An error leaves the wait to the watch's own events.
			_ = s.cli.RequestProgress(progress)
		}
		select {
		case <-ch:
		case <-ask.C:
			asked = false
		case <-wait.Done():
			s.log.Warn("the session watch is behind; a read on this replica may not see a write it just made", "revision", rev)
			return nil
		}
	}
}

// progressEvery is how often Sync asks again for the watch's progress.
const progressEvery = 100 * time.Millisecond

// await waits until the local picture reflects etcd revision rev, for at most
// awaitAtMost or until ctx ends.
func (s *Store) await(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), awaitAtMost)
	defer cancel()
	for {
		s.mu.Lock()
		if s.applied >= rev || s.closed {
			s.mu.Unlock()
			return
		}
		ch := s.advanced
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.log.Warn("the session watch is behind; a read on this replica may not see a write it just made", "revision", rev)
			return
		}
	}
}

// advance records that the picture reflects rev. s.mu is held.
func (s *Store) advance(rev int64) {
	if rev <= s.applied {
		return
	}
	s.applied = rev
	close(s.advanced)
	s.advanced = make(chan struct{})
}

// takeRoom counts a join or knock under way that would add a session or
// knock, or refuses it with admission.ErrTooMany when the picture and
// those under way through this replica hold MaxSessions. release, called
// once the write failed or the picture holds it, counts it out.
func (s *Store) takeRoom() (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.c.byID)+s.adding >= s.opts.MaxSessions {
		return nil, &admission.TooManyError{Limit: s.opts.MaxSessions}
	}
	s.adding++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.adding--
	}, nil
}

// takeShare counts a join or knock of caller in flight that would add one
// to what it holds, or refuses it with an *admission.ShareError when the
// caller holds its share, in the picture and in flight through this
// replica. release, called once the write failed or the picture holds it,
// counts it out. The anonymous caller ("") is not counted.
func (s *Store) takeShare(caller string) (release func(), err error) {
	if caller == "" {
		return func() {}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.c.held[caller] + s.inflight[caller]; n >= s.opts.CallerShare {
		return nil, &admission.ShareError{Caller: caller, Share: s.opts.CallerShare, Held: n}
	}
	s.inflight[caller]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight[caller]--; s.inflight[caller] <= 0 {
			delete(s.inflight, caller)
		}
	}, nil
}

// grant returns a new lease that lasts at least d.
func (s *Store) grant(ctx context.Context, d time.Duration) (clientv3.LeaseID, error) {
	ttl := ttlOf(d)
	resp, err := s.cli.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	if resp.TTL > ttl {
		s.shortest.Store(resp.TTL)
	}
	return resp.ID, nil
}

// ttlOf is the TTL, in seconds, of a lease that lasts at least d.
func ttlOf(d time.Duration) int64 {
	return max(int64((d+time.Second-1)/time.Second), 1)
}

// fits reports whether a lease of ttl seconds, kept alive at now, lapses
// when expires says: it reaches that far, and no more than a second
// further than a lease granted for it would (or etcd's shortest lease).
// One granted for a longer term, before a rule's lease was shortened,
// would keep a session or knock its media server stopped renewing for
// that term.
func (s *Store) fits(ttl int64, now, expires time.Time) bool {
	need := ttlOf(expires.Sub(now))
	return ttl >= need && ttl <= max(need, s.shortest.Load())+1
}

// landed reports whether a write whose answer was lost put key under
// lease, and the revision it did so at: lease is the write's own, new, so
// the key is under it only if that write committed. It asks etcd within
// revokeTimeout of its own, the caller's deadline being perhaps what cut
// the answer short; an etcd that does not answer leaves it unknown, which
// reports false.
func (s *Store) landed(key string, lease clientv3.LeaseID) (int64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		return 0, false
	}
	return resp.Kvs[0].ModRevision, true
}

// revoke revokes a lease whose keys have ended; one that fails runs out.
func (s *Store) revoke(l clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, l); err != nil && !isLeaseGone(err) {
		s.log.Warn("a lease could not be revoked; it will run out", "lease", int64(l), "error", err)
	}
}

// contended is the error of a write that kept conflicting.
func (s *Store) contended(call string) error {
	return &authz.Error{Code: authz.Aborted, Field: "resource", Value: call,
		Reason: "other replicas kept changing the call's sessions while this one tried; try again"}
}

// tooBig refuses a record of subject's session or knock (what) in call
// past MaxValueBytes. It names the call, which a Join or a Knock asks
// about, not the id the record would have had, which its caller never
// sees.
func (s *Store) tooBig(what, call, subject string, n int) error {
	return &authz.Error{Code: authz.ResourceExhausted, Field: "resource", Value: call,
		Reason: fmt.Sprintf("the %s of %s would be a record of %d bytes, more than the session store's %d", what, subject, n, s.opts.MaxValueBytes),
		Meta:   map[string]string{"subject": subject, "limit": strconv.Itoa(s.opts.MaxValueBytes), "used": strconv.Itoa(n)}}
}

func isNoSession(err error) bool { return errors.Is(err, admission.ErrNoSession) }
