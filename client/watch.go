package client

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// WatchOption adjusts Watch and WatchCall.
type WatchOption func(*watchOptions)

type watchOptions struct {
	reload            func(ctx context.Context, cause error) (uint64, error)
	backoff, maxDelay time.Duration
	onRetry           func(error)
}

// The default delays between a stream's end and the next attempt: the
// first, and the most they double to.
const (
	DefaultBackoff  = 100 * time.Millisecond
	DefaultMaxDelay = 10 * time.Second
)

// Reload is what Watch does when the server's change log no longer
// reaches back to the revision it would resume from (ErrCompacted), or
// that revision is past the server's latest (ErrFutureRevision): reload
// reloads what the caller keeps (ExportPolicy, ListGrants, ...) and returns
// the lowest revision those reads answered at, and Watch goes on after it.
// A change set already reloaded may then come again; it applies again
// harmlessly, since each change puts or deletes a whole entity. Without
// Reload, Watch returns the error.
func Reload(reload func(ctx context.Context, cause error) (after uint64, err error)) WatchOption {
	return func(o *watchOptions) { o.reload = reload }
}

// Backoff sets the delay before the first attempt to resume a stream
// (DefaultBackoff) and the most it doubles to (DefaultMaxDelay). Each delay
// is drawn between half and all of that, so that clients cut off together
// do not come back together; a stream that delivered more than its first
// message, or stayed open for most after it, starts over from first. Zero
// or less is the default of each, and a most below first is first: a
// client never comes back at once, again and again.
func Backoff(first, most time.Duration) WatchOption {
	if first <= 0 {
		first = DefaultBackoff
	}
	if most <= 0 {
		most = DefaultMaxDelay
	}
	return func(o *watchOptions) { o.backoff, o.maxDelay = first, max(first, most) }
}

// OnRetry calls fn with the error that ended a stream each time Watch or
// WatchCall is about to resume it: for logs and metrics.
func OnRetry(fn func(err error)) WatchOption {
	return func(o *watchOptions) { o.onRetry = fn }
}

func watchOptionsOf(opts []WatchOption) *watchOptions {
	o := &watchOptions{backoff: DefaultBackoff, maxDelay: DefaultMaxDelay}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Watch follows the change sets committed after req.AfterRevision, with
// req's filters, calling handle with every message in order: the stream's
// first message and progress messages carry no Change, only the Revision
// the stream has reached. When the stream breaks (the server restarts or
// drains, the connection drops, the server is at its stream limit) Watch
// waits, with backoff, and watches again after the last revision
// received, so that handle sees every change set once, in order, with no
// gap; but a change set that comes in parts (ChangeRecord.Continued) and
// whose stream broke before its last comes again from its first, and
// applies again harmlessly. A compacted log is Reload's to handle.
//
// Watch returns when ctx ends (ctx's error), when handle returns an error
// (that error), or on an error it cannot get past by watching again: a
// refusal of the request or the caller, or ErrCompacted and
// ErrFutureRevision without Reload.
func (c *Client) Watch(ctx context.Context, req *usherv1.WatchRequest, handle func(*usherv1.WatchResponse) error, opts ...WatchOption) error {
	o := watchOptionsOf(opts)
	if req == nil {
		req = &usherv1.WatchRequest{}
	} else {
		req = proto.Clone(req).(*usherv1.WatchRequest)
	}
	open := func(ctx context.Context) (grpc.ServerStreamingClient[usherv1.WatchResponse], error) {
		return c.Authorization.Watch(ctx, req)
	}
	got := func(m *usherv1.WatchResponse) error {
		if err := handle(m); err != nil {
			return err
		}
		req.AfterRevision = m.GetRevision()
		return nil
	}
	reload := func(ctx context.Context, cause error) error {
		if o.reload == nil {
			return cause
		}
		after, err := o.reload(ctx, cause)
		if err != nil {
			return err
		}
		req.AfterRevision = after
		return nil
	}
	return follow(ctx, o, open, got, reload)
}

// WatchCall follows what happens in a call, calling handle with each event
// in order: the participants and knocks present, SYNCED, then every join,
// change, eject, leave, lapse and knock as it happens. When the stream
// breaks, WatchCall waits, with backoff (or as long as a refusal's
// retry_after says), and resumes from the revision of the last event from
// SYNCED on (a stream cut before its SYNCED resumes from where the one
// before it was, and one cut within a state the server started again in
// place, from its first PRESENT or WAITING to its SYNCED, from before that
// state): the server sends again the state of each participant
// that changed since (as PRESENT, or the end of its session) and SYNCED, so
// handle must take events as the current state of their participant, not
// as steps, and key them by session: a subject's new session may be
// reported before the end of its previous one. A SYNCED with Reset set
// means the server could not resume: what came before it is the whole
// state, and the caller forgets the rest. after is 0 to start with the
// whole state.
//
// WatchCall returns when ctx ends, when handle returns an error, or on an
// error it cannot get past by watching again. Reload does not apply.
func (c *Client) WatchCall(ctx context.Context, resource string, after uint64, handle func(*usherv1.CallEvent) error, opts ...WatchOption) error {
	o := watchOptionsOf(opts)
	synced := false
	open := func(ctx context.Context) (grpc.ServerStreamingClient[usherv1.WatchCallResponse], error) {
		synced = false
		return c.Admission.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: resource, AfterRevision: after})
	}
	got := func(m *usherv1.WatchCallResponse) error {
		ev := m.GetEvent()
		if err := handle(ev); err != nil {
			return err
		}
		// The state a stream starts with comes in the order participants
		// joined, each event at its own revision: only once SYNCED says it
		// is whole does an event's revision say how far the stream has
		// come. A stream cut before that is resumed from where the last
		// one was, and sends that state again.
		switch ev.GetKind() {
		case usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED:
			synced = true
		case usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, usherv1.CallEventKind_CALL_EVENT_KIND_WAITING:
			// A state the server started again in place (a stream that
			// fell behind): its events are in join order, not in
			// revision order, until its SYNCED.
			synced = false
		}
		if synced {
			after = ev.GetRevision()
		}
		return nil
	}
	return follow(ctx, o, open, got, nil)
}

// handlerError is an error a handler returned, which ends the watch.
type handlerError struct{ err error }

func (h handlerError) Error() string { return h.err.Error() }

// follow opens a stream and hands its messages to got until something
// ends it, then opens it again unless what ended it says not to. got
// remembers where to resume from. reload, when not nil, handles a
// revision the log does not hold.
func follow[T any](ctx context.Context, o *watchOptions, open func(context.Context) (grpc.ServerStreamingClient[T], error),
	got func(*T) error, reload func(context.Context, error) error) error {
	delay := retryDelay{first: o.backoff, max: o.maxDelay}
	reloaded := false
	for {
		progressed, err := receive(ctx, open, got, o.maxDelay)
		var h handlerError
		switch {
		case errors.As(err, &h):
			return h.err
		case ctx.Err() != nil:
			return ctx.Err()
		case progressed:
			delay.reset()
			reloaded = false
		}
		if reload != nil && (errors.Is(err, ErrCompacted) || errors.Is(err, ErrFutureRevision)) {
			// A reload that led straight to another one waits first,
			// rather than hammer a server whose log moves faster than
			// the reload.
			if reloaded {
				if err := delay.wait(ctx, 0); err != nil {
					return err
				}
			}
			if err := reload(ctx, err); err != nil {
				return err
			}
			reloaded = true
			continue
		}
		if !errors.Is(err, io.EOF) && !transient(err) {
			return err
		}
		if o.onRetry != nil {
			o.onRetry(err)
		}
		// A refusal that says when to try again (a WatchCall's
		// INITIAL_RATE) is not tried before.
		if err := delay.wait(ctx, retryAfter(err)); err != nil {
			return err
		}
	}
}

// receive runs one stream until it ends, and says whether it made
// progress: got past its first message, or stayed open after it for
// healthy (a quiet call's stream sends SYNCED and then nothing, and is cut
// hours later by a proxy's connection age). A server whose every stream
// sends that one message (Watch's revision to start after, a SYNCED) and
// then fails is not progress, and is backed off from.
func receive[T any](ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[T], error), got func(*T) error,
	healthy time.Duration) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return false, err
	}
	n := 0
	var first time.Time
	progressed := func() bool { return n > 1 || n == 1 && time.Since(first) >= healthy }
	for {
		m, err := stream.Recv()
		if err != nil {
			return progressed(), err
		}
		if n++; n == 1 {
			first = time.Now()
		}
		if err := got(m); err != nil {
			return progressed(), handlerError{err}
		}
	}
}

// retryDelay is exponential backoff with jitter.
type retryDelay struct {
	first, max time.Duration
	n          int
}

func (d *retryDelay) reset() { d.n = 0 }

// wait waits the next delay, and at least atLeast.
func (d *retryDelay) wait(ctx context.Context, atLeast time.Duration) error {
	next := d.first
	for i := 0; i < d.n && next < d.max; i++ {
		next *= 2
	}
	next = min(next, d.max)
	d.n++
	next = max(next/2+rand.N(next/2+1), atLeast)
	t := time.NewTimer(next)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
