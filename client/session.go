package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// DefaultLease is the lease Usher gives a session whose rule sets none, and
// the one KeepSession assumes when given 0.
const DefaultLease = 30 * time.Second

// JoinResult is Join's answer: the JoinResponse, with its outcome,
// session, capabilities and LiveKit token, and what keeps the session.
type JoinResult struct {
	*usherv1.JoinResponse
	c    *Client
	sent time.Time
}

// Join decides whether subject may enter resource now. Every outcome is an
// answer, not an error: ADMITTED with a session to Keep, LOBBY with a
// knock to Keep while the subject waits, or why not (BLOCKED, NO_GRANT,
// NOT_STARTED, FULL, IN_USE).
func (c *Client) Join(ctx context.Context, subject, resource string, opts ...ReadOption) (*JoinResult, error) {
	o := readOptionsOf(opts)
	sent := time.Now()
	resp, err := c.Admission.Join(ctx, &usherv1.JoinRequest{Subject: subject, Resource: resource, MinRevision: o.minRevision})
	if err != nil {
		return nil, err
	}
	return &JoinResult{JoinResponse: resp, c: c, sent: sent}, nil
}

// Admitted says whether the subject is in the call.
func (r *JoinResult) Admitted() bool {
	return r.GetOutcome() == usherv1.Outcome_OUTCOME_ADMITTED
}

// Keep renews the session (ADMITTED) or the knock (LOBBY) until ctx ends,
// Leave is called or the server ends it; see Session. Other outcomes have
// nothing to keep, and are an error.
func (r *JoinResult) Keep(ctx context.Context) (*Session, error) {
	switch r.GetOutcome() {
	case usherv1.Outcome_OUTCOME_ADMITTED, usherv1.Outcome_OUTCOME_LOBBY:
	default:
		return nil, fmt.Errorf("usher client: the join was %s (%s): no session to keep", r.GetOutcome(), r.GetReason())
	}
	lease := r.GetLease().AsDuration()
	if r.GetLease() == nil {
		lease = r.GetExpireTime().AsTime().Sub(r.sent)
	}
	knock := r.GetOutcome() == usherv1.Outcome_OUTCOME_LOBBY
	return r.c.keep(ctx, r.GetSessionId(), lease, r.sent, knock), nil
}

// KeepSession renews a session Join admitted elsewhere, such as before a
// media server's restart, whose lease is lease (0 for DefaultLease), from
// now; see Session.
func (c *Client) KeepSession(ctx context.Context, sessionID string, lease time.Duration) *Session {
	return c.keep(ctx, sessionID, lease, time.Now(), false)
}

// Session keeps a session's lease, renewing it with KeepAlive every third
// of the lease (or of what the server's last renewal gave, should the
// call's rule have shortened it since), until ctx ends, Leave is called,
// or the server ends the session. A renewal that fails for a moment (the server restarting, the
// network) is tried again, sooner, until the lease would have run out.
// Done is closed when the session ends, and Wait says how.
type Session struct {
	// ID is the session's id (the knock's, for a subject in the lobby).
	ID string

	c      *Client
	lease  time.Duration
	knock  bool
	cancel context.CancelCauseFunc // stops the renewals
	leave  chan leaveRequest       // holds the first Leave's request
	done   chan struct{}
	end    SessionEnd // written before done is closed
}

// EndReason says why a Session ended.
type EndReason int

const (
	// Stopped: the context given to Keep ended. The session lives on the
	// server until its lease runs out, unless it is kept elsewhere.
	Stopped EndReason = iota + 1
	// Left: Leave ended it.
	Left
	// Ejected: a renewal found the subject may no longer be in the call;
	// Outcome and Reason say why: BLOCKED, NO_GRANT, NOT_STARTED (the
	// call closed to it again), or, for a session, LOBBY (its admission
	// ended: Join again to knock).
	Ejected
	// Gone: the server no longer knows the session (ErrSessionNotFound).
	// Usher ends a session itself as soon as its subject is blocked or
	// loses its grant, so this is how a ban usually shows: the
	// AdmissionService's WatchCall says why. A knock is Gone once denied
	// by Deny (one that may no longer join ends Ejected, saying why; one
	// admitted ends MayJoin).
	Gone
	// Lapsed: renewals failed until the lease ran out; Err is the last
	// failure.
	Lapsed
	// Failed: a renewal was refused for good (the caller's token, say);
	// Err says why.
	Failed
	// MayJoin: a knock's renewal says the subject may join now, without
	// waiting to be admitted (it gained the bypass permission, say): Join.
	MayJoin
)

func (r EndReason) String() string {
	switch r {
	case Stopped:
		return "stopped"
	case Left:
		return "left"
	case Ejected:
		return "ejected"
	case Gone:
		return "gone"
	case Lapsed:
		return "lapsed"
	case Failed:
		return "failed"
	case MayJoin:
		return "may join"
	}
	return fmt.Sprintf("EndReason(%d)", int(r))
}

// SessionEnd says how a Session ended.
type SessionEnd struct {
	Why EndReason
	// Outcome and Reason are the server's answer for Ejected and MayJoin.
	Outcome usherv1.Outcome
	Reason  string
	// Err is the error for Gone, Lapsed and Failed, the context's for
	// Stopped, and Leave's own for Left when that failed.
	Err error
}

func (e SessionEnd) String() string {
	switch {
	case e.Outcome != usherv1.Outcome_OUTCOME_UNSPECIFIED:
		return fmt.Sprintf("%s: %s (%s)", e.Why, e.Outcome, e.Reason)
	case e.Err != nil:
		return fmt.Sprintf("%s: %v", e.Why, e.Err)
	}
	return e.Why.String()
}

type leaveRequest struct {
	ctx context.Context
	err chan<- error
}

func (c *Client) keep(ctx context.Context, id string, lease time.Duration, sent time.Time, knock bool) *Session {
	if lease <= 0 {
		lease = DefaultLease
	}
	ctx, cancel := context.WithCancelCause(ctx)
	s := &Session{ID: id, c: c, lease: lease, knock: knock, cancel: cancel, leave: make(chan leaveRequest, 1), done: make(chan struct{})}
	go func() {
		defer cancel(nil)
		defer close(s.done)
		s.end = s.run(ctx, sent.Add(lease))
	}()
	return s
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wait waits for the session to end and says how.
func (s *Session) Wait() SessionEnd {
	<-s.done
	return s.end
}

// Leave ends the session: it stops renewing and tells the server, which
// tells the call's watchers the subject left. A session the server has
// already ended has nothing to leave, and Leave returns nil. A knock that
// ended MayJoin is still in the lobby: Leave takes it out.
func (s *Session) Leave(ctx context.Context) error {
	errc := make(chan error, 1)
	select {
	case s.leave <- leaveRequest{ctx: ctx, err: errc}:
		// Stop the renewals, one in flight included; the keeper then
		// leaves, unless the session ended otherwise first.
		s.cancel(errLeaving)
		<-s.done
		select {
		case err := <-errc:
			return err
		default:
		}
	case <-s.done:
	}
	switch s.end.Why {
	case Left, Ejected, Gone:
		return nil
	}
	return s.leaveNow(ctx)
}

// errLeaving is why a Session's renewals stop when Leave is called.
var errLeaving = errors.New("usher client: leaving")

// stopped is how a session whose context ended ends: left, if Leave
// ended it, else stopped.
func (s *Session) stopped(ctx context.Context) SessionEnd {
	select {
	case req := <-s.leave:
		err := s.leaveNow(req.ctx)
		req.err <- err
		return SessionEnd{Why: Left, Err: err}
	default:
		return SessionEnd{Why: Stopped, Err: context.Cause(ctx)}
	}
}

// leaveNow asks the server to end the session; one it no longer knows is
// left already.
func (s *Session) leaveNow(ctx context.Context) error {
	_, err := s.c.Admission.Leave(ctx, &usherv1.LeaveRequest{SessionId: s.ID})
	if errors.Is(err, ErrSessionNotFound) {
		return nil
	}
	return err
}

// renewRetry is the first delay before a failed renewal is tried again;
// it doubles up to a third of the lease.
const renewRetry = 100 * time.Millisecond

// run renews the session until it ends; expires is when its lease runs
// out unless renewed, by this machine's clock.
func (s *Session) run(ctx context.Context, expires time.Time) SessionEnd {
	interval := s.lease / 3
	timer := time.NewTimer(interval)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return s.stopped(ctx)
		case <-timer.C:
		}
		// A renewal that arrives before the lease runs out still counts,
		// however slow.
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, expires)
		resp, err := s.c.Admission.KeepAlive(rctx, &usherv1.KeepAliveRequest{SessionId: s.ID})
		cancel()
		out := resp.GetOutcome()
		switch {
		case err == nil && out == usherv1.Outcome_OUTCOME_ADMITTED && s.knock:
			return SessionEnd{Why: MayJoin, Outcome: out, Reason: resp.GetReason()}
		case err == nil && (out == usherv1.Outcome_OUTCOME_ADMITTED || s.knock && out == usherv1.Outcome_OUTCOME_LOBBY):
			// A knock waits (LOBBY); a session renewed is ADMITTED, and
			// any other answer ended it (LOBBY too: sent back there).
			// The server renews by the rule's lease as it is now, which an
			// operator may have shortened since: the expiry it says, by
			// this machine's clock, bounds the next renewal.
			lease := s.lease
			if t := resp.GetExpireTime(); t != nil {
				lease = min(lease, max(time.Until(t.AsTime()), 3*renewRetry))
			}
			expires, failures = sent.Add(lease), 0
			timer.Reset(lease / 3)
			continue
		case err == nil:
			return SessionEnd{Why: Ejected, Outcome: out, Reason: resp.GetReason()}
		case ctx.Err() != nil:
			return s.stopped(ctx)
		case status.Code(err) == codes.NotFound:
			return SessionEnd{Why: Gone, Err: err}
		case !transient(err):
			return SessionEnd{Why: Failed, Err: err}
		case !time.Now().Before(expires):
			return SessionEnd{Why: Lapsed, Err: err}
		}
		failures++
		timer.Reset(min(renewRetry<<min(failures-1, 16), interval, time.Until(expires)))
	}
}
