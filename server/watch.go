package server

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// WatchLimits bound the Watch streams a server holds.
type WatchLimits struct {
	// MaxStreams is the most Watch streams open at once; a Watch past it
	// is refused with RESOURCE_EXHAUSTED. 0 refuses every Watch. Each
	// caller of the callers file holds at most its share of them
	// (CallerShares.Watches).
	MaxStreams int
	// Progress is how long a stream may go without a message before the
	// server sends one with the revision the stream has reached: a
	// heartbeat that keeps proxies from closing an idle stream, and a
	// recent revision to resume from for a client whose filters leave out
	// what is committed. 0 sends none.
	Progress time.Duration
	// MaxHeldBytes bounds the change records that all Watch streams
	// together hold, read from the log and not yet sent, by their encoded
	// size: a client that does not read holds up its stream's page. A
	// stream whose page does not fit ends with RESOURCE_EXHAUSTED, to be
	// resumed after the revision it reached; a page alone may be larger,
	// when no other stream holds any. 0 takes DefaultWatchLimits'.
	MaxHeldBytes int
}

// DefaultWatchLimits are the limits of a server given no WithWatchLimits.
func DefaultWatchLimits() WatchLimits {
	return WatchLimits{MaxStreams: 1024, Progress: 30 * time.Second, MaxHeldBytes: 64 << 20}
}

// MinWatchProgress is the shortest Progress: one shorter would have every
// idle stream sent a message more often than a scheduler tick.
const MinWatchProgress = 10 * time.Millisecond

// Validate refuses negative limits, and a Progress other than 0 shorter
// than MinWatchProgress, naming the field and the value (a *LimitError).
func (l WatchLimits) Validate() error {
	const negative = "must not be negative"
	switch {
	case l.MaxStreams < 0:
		return &LimitError{Field: "MaxStreams", Value: fmt.Sprint(l.MaxStreams), Problem: negative}
	case l.Progress < 0:
		return &LimitError{Field: "Progress", Value: l.Progress.String(), Problem: negative}
	case l.Progress > 0 && l.Progress < MinWatchProgress:
		return &LimitError{Field: "Progress", Value: l.Progress.String(), Problem: "must be 0 (never) or at least " + MinWatchProgress.String()}
	case l.MaxHeldBytes < 0:
		return &LimitError{Field: "MaxHeldBytes", Value: fmt.Sprint(l.MaxHeldBytes), Problem: negative}
	}
	return nil
}

// WithWatchLimits sets the limits of Watch streams; a server given none
// has DefaultWatchLimits.
func WithWatchLimits(l WatchLimits) grpc.ServerOption { return watchOption{limits: l} }

// watchOption carries WatchLimits through New's grpc.ServerOption list;
// gRPC itself ignores it.
type watchOption struct {
	grpc.EmptyServerOption
	limits WatchLimits
}

// watchLimits finds the WatchLimits among opts, or the defaults.
func watchLimits(opts []grpc.ServerOption) WatchLimits {
	l := DefaultWatchLimits()
	for _, o := range opts {
		if w, ok := o.(watchOption); ok {
			l = w.limits
		}
	}
	return l
}

// watchPage is how many change sets a stream reads from the log at a time,
// as long as they hold at most authz.MaxPageChanges changes (or one holds
// more): with the message gRPC is sending, all that a stream holds. A
// policy's apply may write a hundred thousand changes in one change set,
// and a page of 64 of them decoded at once would be gigabytes. A client that
// reads slowly holds up its own stream, by HTTP/2 flow control, and the
// page it holds counts against WatchLimits.MaxHeldBytes.
const watchPage = 64

// maxCallerLen is the longest caller name a callers file may hold, and so
// the longest caller filter of a Watch.
const maxCallerLen = 128

// callerFilter refuses a caller filter longer than any caller name, or
// with a character no caller name has: a control or format character
// (a NUL, a newline, a bidirectional override), which a callers file
// refuses, and which would otherwise match nothing, silently. A space
// is let through: the writes of usher serve --policy are recorded so.
func (v *validator) callerFilter(value string) {
	if len(value) > maxCallerLen {
		v.add(&authz.Error{Code: authz.Invalid, Field: "caller", Value: value,
			Reason: fmt.Sprintf("longer than %d bytes, the longest caller name", maxCallerLen)})
		return
	}
	if i := strings.IndexFunc(value, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
		v.add(&authz.Error{Code: authz.Invalid, Field: "caller", Value: value,
			Reason: fmt.Sprintf("has a non-printable character at byte %d; a caller name is printable", i)})
	}
}

// watches counts the Watch streams open and ends them when the server
// drains: a stream would otherwise keep GracefulStop waiting for ever.
type watches struct {
	limits  WatchLimits
	open    atomic.Int64
	shares  *streamShares // each caller's streams
	held    atomic.Int64  // bytes of change records read from the log and not yet sent
	reading chan struct{} // a slot for each stream reading a page of the log
	drained context.Context
	drain   context.CancelFunc
}

// readersAtOnce is how many Watch streams read a page of the change log at
// once, the others waiting their turn: half the server's cores, at least
// one. A stream that catches up from far back, or whose filters keep
// little of what it reads, reads the log as fast as it can; however many
// do, the other half of the cores stay with Check and the writes.
func readersAtOnce() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// newWatches bounds the Watch streams by l, and each caller's by share of
// them (CallerShares.Watches).
func newWatches(l WatchLimits, share int) *watches {
	if l.MaxHeldBytes == 0 {
		l.MaxHeldBytes = DefaultWatchLimits().MaxHeldBytes
	}
	w := &watches{limits: l, shares: newStreamShares(shareOf(share, l.MaxStreams)), reading: make(chan struct{}, readersAtOnce())}
	w.drained, w.drain = context.WithCancel(context.Background())
	return w
}

// shuttingDown refuses a call, or ends a stream, of a server that drains
// (UNAVAILABLE, SHUTTING_DOWN), saying what the client should do instead.
func shuttingDown(instead string, meta map[string]string) error {
	return refuse(codes.Unavailable, "the server is shutting down: "+instead,
		details{reason: string(authz.KindShuttingDown), meta: meta})
}

// admit counts a new stream of the caller of ctx in, against the caller's
// share and the server's streams, or refuses it; release counts it out.
func (w *watches) admit(ctx context.Context) (release func(), err error) {
	if w.drained.Err() != nil {
		return nil, shuttingDown("watch on another server", nil)
	}
	share, err := takeCallerShare(ctx, w.shares, "Watch", "", "")
	if err != nil {
		return nil, err
	}
	if n := w.open.Add(1); n > int64(w.limits.MaxStreams) {
		w.open.Add(-1)
		share()
		return nil, refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many Watch streams: this server holds at most %d at once; watch again later", w.limits.MaxStreams),
			details{reason: string(authz.KindWatchLimit), meta: map[string]string{"limit": strconv.Itoa(w.limits.MaxStreams)},
				why: fmt.Sprintf("this server holds at most %d Watch streams at once", w.limits.MaxStreams)})
	}
	return func() { w.open.Add(-1); share() }, nil
}

// hold counts n more bytes held, or refuses when they would take the
// streams past MaxHeldBytes while others hold some. A page of nothing is
// always held, even while one page alone holds more than the limit.
func (w *watches) hold(n int64) bool {
	for {
		held := w.held.Load()
		if n > 0 && held > 0 && held+n > int64(w.limits.MaxHeldBytes) {
			return false
		}
		if w.held.CompareAndSwap(held, held+n) {
			return true
		}
	}
}

// Watch streams the change sets committed after a revision. It reads the
// log a page at a time and, once caught up, waits for the index to apply
// a newer revision: every stream reads the backend's log rather than
// holding a watch of its own on it, whose buffer a slow client would grow.
func (s *authorizationServer) Watch(req *usherv1.WatchRequest, stream grpc.ServerStreamingServer[usherv1.WatchResponse]) error {
	filter, err := watchFilter(req)
	if err != nil {
		return toStatus(err)
	}
	after := authz.Revision(req.GetAfterRevision())
	release, err := s.watches.admit(stream.Context())
	if err != nil {
		return err
	}
	defer release()
	// The stream ends when its client goes or the server drains.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.watches.drained, cancel)
	defer stop()
	if after == 0 {
		after = s.engine.Index().Revision()
	} else if err := s.notAhead(ctx, after); err != nil {
		return err
	}
	w := &watch{engine: s.engine, watches: s.watches, stream: stream, filter: filter, after: after, progress: s.watches.limits.Progress, reach: s.reach}
	err = w.run(ctx)
	return s.watchEnded(stream.Context(), w.after, err)
}

// watchFilter checks a Watch's filters.
func watchFilter(req *usherv1.WatchRequest) (authz.ChangeFilter, error) {
	var v validator
	if req.GetSubject() != "" {
		v.subject("subject", req.GetSubject())
	}
	v.optionalResource("resource", req.GetResource())
	if req.GetActor() != "" {
		v.subject("actor", req.GetActor())
	}
	v.callerFilter(req.GetCaller())
	return authz.ChangeFilter{Subject: req.GetSubject(), Resource: req.GetResource(), Actor: req.GetActor(), Caller: req.GetCaller()}, v.err
}

// notAhead refuses a revision past the latest committed one: the client's
// copy comes from a history this server's log does not hold.
func (s *authorizationServer) notAhead(ctx context.Context, after authz.Revision) error {
	latest, err := s.engine.Latest(ctx)
	if err != nil {
		return refuse(codes.Unavailable, fmt.Sprintf("reading the latest revision: %v", err),
			details{reason: string(authz.KindUnavailableStorage)})
	}
	if after <= latest {
		return nil
	}
	return refuse(codes.OutOfRange,
		fmt.Sprintf("after_revision %q: past the latest committed revision, %d, so not from this server's history "+
			"(a data file restored from an older backup?): reload what you keep and watch after the revision you read it at", fmt.Sprint(after), latest),
		details{reason: reasonFutureRevision, field: "after_revision", value: fmt.Sprint(after),
			meta: map[string]string{"after_revision": fmt.Sprint(after), "latest_revision": fmt.Sprint(latest)}})
}

// watchEnded is the status a stream that reached after ends with.
func (s *authorizationServer) watchEnded(client context.Context, after authz.Revision, err error) error {
	switch {
	case client.Err() != nil:
		return status.FromContextError(client.Err()).Err()
	case s.watches.drained.Err() != nil:
		return shuttingDown(fmt.Sprintf("watch again after revision %d, on another server", after),
			map[string]string{"after_revision": fmt.Sprint(after)})
	case errors.Is(err, authz.ErrCompacted):
		md := map[string]string{"after_revision": fmt.Sprint(after)}
		if latest, err := s.engine.Latest(client); err == nil {
			md["latest_revision"] = fmt.Sprint(latest)
		}
		where := ""
		if start, err := s.engine.LogStart(client); err == nil && start > after {
			md["log_start"] = fmt.Sprint(start)
			where = fmt.Sprintf("; it begins after revision %d", start)
		}
		return refuse(codes.OutOfRange,
			fmt.Sprintf("after_revision %q: the change log no longer reaches back to it (compacted%s): reload what you keep and watch after the revision you read it at", fmt.Sprint(after), where),
			details{reason: reasonCompacted, field: "after_revision", value: fmt.Sprint(after), meta: md})
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return refuse(codes.Unavailable, fmt.Sprintf("reading the change log: %v: watch again after revision %d", err, after),
		details{reason: string(authz.KindUnavailableStorage), meta: map[string]string{"after_revision": fmt.Sprint(after)}})
}

// watch is one Watch stream.
type watch struct {
	engine   *authz.Engine
	watches  *watches
	stream   grpc.ServerStreamingServer[usherv1.WatchResponse]
	filter   authz.ChangeFilter
	after    authz.Revision // every change set up to it was sent or filtered out
	progress time.Duration
	lastSent time.Time
	reach    *reach
	large    authz.PartReader // set by read: the next change set comes in parts
}

// run sends a first message, then what the log holds after w.after and
// what is committed from then on, until ctx ends or something fails.
func (w *watch) run(ctx context.Context) error {
	started := false
	var held int64 // bytes of this stream's page, not yet sent
	defer func() { w.watches.held.Add(-held) }()
	for {
		batch, recs, sizes, more, err := w.read(ctx)
		if err != nil {
			return err
		}
		for _, n := range sizes {
			held += n
		}
		if held > 0 && !w.watches.hold(held) { // a page of nothing is always held
			n := held
			held = 0
			return w.tooMuchHeld(n)
		}
		// The first read has found the revision in the log.
		if !started {
			started = true
			if err := w.send(nil); err != nil {
				return err
			}
		}
		if w.large != nil {
			pr := w.large
			w.large = nil
			if err := w.sendParts(ctx, pr); err != nil {
				return err
			}
			continue
		}
		for i, rec := range recs {
			if rec == nil {
				w.after = batch[i].Revision
				continue
			}
			// A change set too large for a message goes in parts, w.after
			// below its revision until the last.
			parts := partsOf(rec, sizes[i])
			for k, part := range parts {
				if k == len(parts)-1 {
					w.after = batch[i].Revision
				}
				if err := w.send(part); err != nil {
					return err
				}
			}
			// gRPC takes a message larger than a stream's write quota
			// whole, and keeps what its client has not read of it: a send
			// after it returns only once that has gone, so the record
			// counts as held until the progress message that follows is
			// taken.
			n := sizes[i]
			if n > drainAbove {
				if err := w.send(nil); err != nil {
					return err
				}
			}
			w.watches.held.Add(-n)
			held -= n
			recs[i] = nil // sent: the page need not keep it
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if w.progress > 0 && time.Since(w.lastSent) >= w.progress {
			if err := w.send(nil); err != nil {
				return err
			}
		}
		if !more {
			if err := w.wait(ctx); err != nil {
				return err
			}
		}
	}
}

// read reads the next page of the log in its turn (watches.reading): the
// records the filter keeps, each with its size, and of each change set
// only its revision; more says whether the log held more than the page
// when it was read.
func (w *watch) read(ctx context.Context) (batch []authz.ChangeSet, recs []*usherv1.ChangeRecord, sizes []int64, more bool, err error) {
	select {
	case w.watches.reading <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, nil, false, ctx.Err()
	}
	defer func() { <-w.watches.reading }()
	// Bounded: a backend out of reach ends the stream, for its client to
	// watch again on another server.
	ctx, cancel := w.engine.LogRead(ctx)
	defer cancel()
	// Counted before they are decoded: as many as hold at most
	// MaxPageChanges changes, and at least one.
	counts, err := w.engine.Backend().ChangeCounts(ctx, w.after, watchPage)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if pr, ok := w.engine.Backend().(authz.PartReader); ok && len(counts) > 0 && counts[0] > authz.MaxPageChanges {
		// Too large for a message: run reads it a part at a time.
		w.large = pr
		return nil, nil, nil, true, nil
	}
	n, changes := 0, 0
	for _, c := range counts {
		if n > 0 && changes+c > authz.MaxPageChanges {
			break
		}
		n, changes = n+1, changes+c
	}
	// One at least: a change set committed since it was counted is read.
	limit := max(n, 1)
	batch, err = w.engine.Backend().Changes(ctx, w.after, limit)
	if err != nil {
		return nil, nil, nil, false, err
	}
	more = len(batch) == limit && (n == 0 || n < len(counts) || len(counts) == watchPage)
	recs = make([]*usherv1.ChangeRecord, len(batch))
	sizes = make([]int64, len(batch))
	for i, cs := range batch {
		if w.filter.Matches(cs) {
			recs[i] = toChangeRecord(cs)
			sizes[i] = int64(recs[i].SizeVT())
		}
		batch[i] = authz.ChangeSet{Revision: cs.Revision}
	}
	return batch, recs, sizes, more, nil
}

// readPart reads the changes of the change set after w.after from the
// from-th, as many as a message holds, in its turn among the streams
// reading the log, and says how many the change set holds.
func (w *watch) readPart(ctx context.Context, pr authz.PartReader, from int) (authz.ChangeSet, int, error) {
	select {
	case w.watches.reading <- struct{}{}:
	case <-ctx.Done():
		return authz.ChangeSet{}, 0, ctx.Err()
	}
	defer func() { <-w.watches.reading }()
	ctx, cancel := w.engine.LogRead(ctx)
	defer cancel()
	return pr.ChangePart(ctx, w.after, from, authz.MaxPageChanges)
}

// sendParts sends the change set after w.after, too large for a message,
// in parts read one at a time, if the filter keeps it: a call's deletion
// holds a million changes, some 700 MB decoded whole. A filter on a
// subject or a resource keeps it if one of its changes matches, which is
// looked for a part at a time too.
func (w *watch) sendParts(ctx context.Context, pr authz.PartReader) error {
	first, total, err := w.readPart(ctx, pr, 0)
	if err != nil || total == 0 {
		return err
	}
	who := authz.ChangeFilter{Actor: w.filter.Actor, Caller: w.filter.Caller}
	keep := who.Matches(authz.ChangeSet{Caller: first.Caller, Actor: first.Actor})
	if keep && (w.filter.Subject != "" || w.filter.Resource != "") {
		keep = w.filter.Matches(first)
		for from := len(first.Changes); !keep && from < total; {
			part, _, err := w.readPart(ctx, pr, from)
			if err != nil {
				return err
			}
			if len(part.Changes) == 0 {
				return fmt.Errorf("change set %d: no changes from the %d-th of %d", first.Revision, from, total)
			}
			keep, from = w.filter.Matches(part), from+len(part.Changes)
		}
	}
	if !keep {
		w.after = first.Revision
		return nil
	}
	part := first
	for from := 0; ; {
		if len(part.Changes) == 0 {
			return fmt.Errorf("change set %d: no changes from the %d-th of %d", first.Revision, from, total)
		}
		last := from+len(part.Changes) >= total
		rec := toChangeRecord(part)
		n := int64(rec.SizeVT())
		if !w.watches.hold(n) {
			return w.tooMuchHeld(n)
		}
		parts := partsOf(rec, n)
		parts[len(parts)-1].Continued = !last
		for k, p := range parts {
			if last && k == len(parts)-1 {
				w.after = first.Revision
			}
			if err := w.send(p); err != nil {
				w.watches.held.Add(-n)
				return err
			}
		}
		if n > drainAbove {
			if err := w.send(nil); err != nil {
				w.watches.held.Add(-n)
				return err
			}
		}
		w.watches.held.Add(-n)
		if last {
			return nil
		}
		from += len(part.Changes)
		if part, _, err = w.readPart(ctx, pr, from); err != nil {
			return err
		}
	}
}

// partsOf is rec, of size bytes, in parts of at most authz.MaxPageChanges
// changes and about authz.MaxPageBytes, as ListChanges pages it: a client
// takes gRPC's default of 4 MiB a message, and a change set may hold a
// million changes. Every part but the last is continued.
func partsOf(rec *usherv1.ChangeRecord, size int64) []*usherv1.ChangeRecord {
	if len(rec.Changes) <= authz.MaxPageChanges && size <= authz.MaxPageBytes {
		return []*usherv1.ChangeRecord{rec}
	}
	var parts []*usherv1.ChangeRecord
	for changes := rec.Changes; len(changes) > 0; {
		// A change's bytes, with its tag and length.
		n := authz.PartLen(len(changes), 0, func(i int) int { return changes[i].SizeVT() + 4 })
		parts = append(parts, &usherv1.ChangeRecord{Revision: rec.Revision, Time: rec.Time, Caller: rec.Caller, Actor: rec.Actor,
			Changes: changes[:n:n], Continued: n < len(changes)})
		changes = changes[n:]
	}
	return parts
}

// drainAbove is the size of a change record past which a stream waits for
// gRPC to have written it before counting its changes as sent: grpc-go's
// write quota of a stream, which one message may overdraw.
const drainAbove = 64 << 10

// tooMuchHeld refuses to go on with a page of n changes that the streams
// have no room to hold.
func (w *watch) tooMuchHeld(n int64) error {
	limit := w.watches.limits.MaxHeldBytes
	return refuse(codes.ResourceExhausted,
		fmt.Sprintf("the Watch streams of this server hold as many bytes of changes not yet sent as they may (%d), and the next %d would not fit: watch again after revision %d",
			limit, n, w.after),
		details{reason: string(authz.KindWatchLimit), meta: map[string]string{"limit": strconv.Itoa(limit), "after_revision": fmt.Sprint(w.after)},
			why: fmt.Sprintf("the Watch streams of this server hold at most %d bytes of changes not yet sent", limit)})
}

// wait returns once the index has applied a revision after w.after,
// sending a progress message whenever w.progress passes without one. A
// backend out of reach ends the wait, as it ends a read of the log: this
// server would hear of nothing committed through another.
func (w *watch) wait(ctx context.Context) error {
	for {
		deadline := time.Now().Add(reachEvery)
		if next := w.lastSent.Add(w.progress); w.progress > 0 && next.Before(deadline) {
			deadline = next
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err := w.engine.WaitApplied(wctx, w.after+1)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() == nil:
			return err
		}
		if err := w.reach.check(ctx); err != nil {
			return err
		}
		if w.progress > 0 && time.Since(w.lastSent) >= w.progress {
			if err := w.send(nil); err != nil {
				return err
			}
		}
	}
}

// reachEvery is how often a stream that waits for the next commit asks
// whether the backend is in reach.
const reachEvery = 500 * time.Millisecond

// reach says whether the backend is in reach, reading its revision at most
// once every reachEvery for all the streams of a server that ask.
type reach struct {
	engine *authz.Engine
	mu     sync.Mutex
	at     time.Time     // when the last read ended
	err    error         // what it said
	busy   chan struct{} // closed when the read under way ends; nil when none is
}

// check returns why the backend is out of reach, or nil; or ctx's error.
func (r *reach) check(ctx context.Context) error {
	r.mu.Lock()
	for r.busy != nil || time.Since(r.at) >= reachEvery {
		if r.busy == nil {
			busy := make(chan struct{})
			r.busy = busy
			r.mu.Unlock()
			// Bounded by the commit timeout. A read cut short by this
			// stream's end says nothing of the backend: the next stream
			// to ask reads again.
			err := r.engine.Reachable(ctx)
			r.mu.Lock()
			r.busy = nil
			close(busy)
			if ctx.Err() != nil {
				r.mu.Unlock()
				return ctx.Err()
			}
			r.at, r.err = time.Now(), err
			break
		}
		busy := r.busy
		r.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	return r.err
}

// send sends a change set, or a progress message when rec is nil, with the
// revision the stream has reached.
func (w *watch) send(rec *usherv1.ChangeRecord) error {
	w.lastSent = time.Now()
	return w.stream.Send(&usherv1.WatchResponse{Change: rec, Revision: uint64(w.after)})
}
