package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/livekit/protocol/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

// WithAdmission serves usher.v1.AdmissionService from m.
func WithAdmission(m *admission.Manager) grpc.ServerOption {
	return admissionOption{m: m}
}

// admissionOption carries a Manager through New's grpc.ServerOption list;
// gRPC itself ignores it.
type admissionOption struct {
	grpc.EmptyServerOption
	m *admission.Manager
}

func admissionManager(opts []grpc.ServerOption) *admission.Manager {
	for _, o := range opts {
		if a, ok := o.(admissionOption); ok {
			return a.m
		}
	}
	return nil
}

type admissionServer struct {
	usherv1.UnimplementedAdmissionServiceServer
	m     *admission.Manager
	waits *revisionWaits
	// drained is closed when the server drains, which it does before it
	// stops: WatchCall streams end and new ones are refused, as Watch
	// streams are.
	drained  <-chan struct{}
	shares   *streamShares   // each caller's WatchCall streams
	initial  *streamShares   // each caller's events of initial states not yet sent
	paces    *paces          // each caller's events of whole initial states started a second
	pacesAll *paces          // the server's, of all callers
	joins    decisionCounter // Join's outcomes, when the server has metrics
	log      *DecisionLog    // nil: no decision log
}

// maxSessionIDLen bounds a session id in a request; ids Usher makes are 32
// hex digits.
const maxSessionIDLen = 64

func init() {
	// A Join's or KeepAlive's answer is built here, its Timestamps and
	// Duration made from times, never taken from a request: vtproto's code
	// writes it as protobuf-go would, at a third of the cost. The mark holds
	// for the whole process: nothing in it may send on one of these that it
	// decoded, whose Timestamps could hold fields vtproto's code leaves out.
	codec.Built(&usherv1.JoinResponse{}, &usherv1.KeepAliveResponse{})
}

func (s *admissionServer) Join(ctx context.Context, req *usherv1.JoinRequest) (*usherv1.JoinResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.resource("resource", req.GetResource())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	// Waited for here as Check waits, so that a revision not reached is
	// told before the caller's deadline hides it.
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	r, err := s.m.Join(ctx, sharingCaller(ctx), req.GetSubject(), req.GetResource(), authz.Revision(req.GetMinRevision()))
	if err != nil {
		return nil, toStatus(err)
	}
	s.joins.add(int(r.Outcome))
	if s.log != nil {
		s.log.join(ctx, req.GetSubject(), req.GetResource(), r)
	}
	return JoinResponse(r), nil
}

// joinAnswer holds a Join's answer and the messages it points to, made in
// one allocation rather than four.
type joinAnswer struct {
	resp    usherv1.JoinResponse
	grant   usherv1.LiveKitGrant
	expires timestamppb.Timestamp
	lease   durationpb.Duration
}

// JoinResponse is the answer Join gives for r.
func JoinResponse(r admission.Result) *usherv1.JoinResponse {
	a := &joinAnswer{}
	out := &a.resp
	out.Outcome, out.Reason, out.Capabilities = usherv1.Outcome(r.Outcome), r.Reason, r.Capabilities
	out.SessionId, out.LivekitToken = r.Session, r.Token
	out.Role, out.Scope, out.BlockId = r.Role, r.Scope, r.BlockID
	out.OpenTime, out.Backstage, out.Exclusive, out.Revision = toTimestamp(r.OpensAt), r.Backstage, r.Exclusive, uint64(r.Revision)
	if !r.Expires.IsZero() {
		a.expires.Seconds, a.expires.Nanos = r.Expires.Unix(), int32(r.Expires.Nanosecond())
		out.ExpireTime = &a.expires
	}
	if r.Lease > 0 {
		a.lease.Seconds, a.lease.Nanos = int64(r.Lease/time.Second), int32(r.Lease%time.Second)
		out.Lease = &a.lease
	}
	if r.Grant != nil {
		fillLiveKitGrant(&a.grant, r.Grant)
		out.LivekitGrant = &a.grant
	}
	return out
}

func toLiveKitGrant(g *auth.VideoGrant) *usherv1.LiveKitGrant {
	if g == nil {
		return nil
	}
	out := &usherv1.LiveKitGrant{}
	fillLiveKitGrant(out, g)
	return out
}

func fillLiveKitGrant(out *usherv1.LiveKitGrant, g *auth.VideoGrant) {
	out.Room, out.RoomJoin, out.RoomAdmin, out.RoomRecord, out.Hidden = g.Room, g.RoomJoin, g.RoomAdmin, g.RoomRecord, g.Hidden
	out.CanPublish, out.CanSubscribe, out.CanPublishData = g.GetCanPublish(), g.GetCanSubscribe(), g.GetCanPublishData()
	// The sources are shared: a grant is made for its answer or event
	// (livekit.Mapping.VideoGrant), and nothing writes it after.
	out.CanPublishSources = g.CanPublishSources
}

func (v *validator) sessionID(value string) {
	if value == "" || len(value) > maxSessionIDLen {
		v.add(&authz.Error{Code: authz.Invalid, Field: "session_id", Value: value,
			Reason: "a session id is what Join or Knock returned: 1 to 64 bytes"})
	}
}

func (s *admissionServer) KeepAlive(ctx context.Context, req *usherv1.KeepAliveRequest) (*usherv1.KeepAliveResponse, error) {
	var v validator
	v.sessionID(req.GetSessionId())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	r, err := s.m.KeepAlive(ctx, req.GetSessionId())
	if err != nil {
		return nil, toStatus(withValue(err, req.GetSessionId()))
	}
	return &usherv1.KeepAliveResponse{Outcome: usherv1.Outcome(r.Outcome), Reason: r.Reason, ExpireTime: toTimestamp(r.Expires)}, nil
}

func (s *admissionServer) Leave(ctx context.Context, req *usherv1.LeaveRequest) (*usherv1.LeaveResponse, error) {
	var v validator
	id := req.GetSessionId()
	switch {
	case id != "" && (req.GetSubject() != "" || req.GetResource() != ""):
		v.add(&authz.Error{Code: authz.Invalid, Field: "session_id", Value: id,
			Reason: "name the session either by its id or by subject and resource, not both"})
	case id != "":
		v.sessionID(id)
	default:
		v.subject("subject", req.GetSubject())
		v.resource("resource", req.GetResource())
	}
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	var err error
	if id != "" {
		err = withValue(s.m.Leave(ctx, id), id)
	} else {
		err = s.m.LeaveCall(ctx, req.GetSubject(), req.GetResource())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.LeaveResponse{}, nil
}

// withValue names the session id in a session error.
func withValue(err error, id string) error {
	if e, ok := err.(*authz.Error); ok && e.Field == "session_id" && e.Value == "" {
		c := *e
		c.Value = id
		return &c
	}
	return err
}

func (s *admissionServer) Knock(ctx context.Context, req *usherv1.KnockRequest) (*usherv1.KnockResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.resource("resource", req.GetResource())
	v.textUpTo("note", req.GetNote(), admission.MaxNoteLen)
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	// Waited for here as Join waits.
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	r, err := s.m.Knock(ctx, sharingCaller(ctx), req.GetSubject(), req.GetResource(), req.GetNote())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.KnockResponse{Outcome: usherv1.Outcome(r.Outcome), Reason: r.Reason, SessionId: r.Session, ExpireTime: toTimestamp(r.Expires)}, nil
}

func (s *admissionServer) ListLobby(ctx context.Context, req *usherv1.ListLobbyRequest) (*usherv1.ListLobbyResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	// Waited for here as Join waits.
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	knocks, err := s.m.Lobby(ctx, req.GetResource(), req.GetActor())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.ListLobbyResponse{}
	for _, k := range knocks {
		out.Entries = append(out.Entries, &usherv1.LobbyEntry{Subject: k.Subject, Note: k.Note,
			KnockTime: toTimestamp(k.Knocked), ExpireTime: toTimestamp(k.Expires)})
	}
	return out, nil
}

// ownAuthority refuses a write on the caller's own authority by a check
// caller: a media server's sidecar may admit, deny or take a call live only
// for an end user who may.
func ownAuthority(ctx context.Context, actor string) error {
	if c, ok := callerIn(ctx); ok && c.Kind == KindCheck && actor == "" {
		return refuse(codes.PermissionDenied,
			fmt.Sprintf("caller %q is a %s caller: it may admit, deny, schedule or take a call live only for an actor, who must hold the permission", c.Name, c.Kind),
			details{reason: reasonCallerKind, meta: map[string]string{"caller": c.Name, "kind": string(c.Kind)}})
	}
	return nil
}

func (s *admissionServer) Admit(ctx context.Context, req *usherv1.AdmitRequest) (*usherv1.AdmitResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.subject("subject", req.GetSubject())
	v.actor(req.GetActor())
	expires := v.timestamp("expire_time", req.GetExpireTime())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := ownAuthority(ctx, req.GetActor()); err != nil {
		return nil, err
	}
	rev, err := s.m.Admit(ctx, author(ctx, req.GetActor()), req.GetResource(), req.GetSubject(), expires)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.AdmitResponse{Revision: uint64(rev)}, nil
}

func (s *admissionServer) Deny(ctx context.Context, req *usherv1.DenyRequest) (*usherv1.DenyResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.subject("subject", req.GetSubject())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := ownAuthority(ctx, req.GetActor()); err != nil {
		return nil, err
	}
	if err := s.m.Deny(ctx, author(ctx, req.GetActor()), req.GetResource(), req.GetSubject()); err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.DenyResponse{}, nil
}

func (s *admissionServer) Schedule(ctx context.Context, req *usherv1.ScheduleRequest) (*usherv1.ScheduleResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.actor(req.GetActor())
	starts := v.timestamp("start_time", req.GetStartTime())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := ownAuthority(ctx, req.GetActor()); err != nil {
		return nil, err
	}
	rev, err := s.m.Engine().Schedule(ctx, author(ctx, req.GetActor()), req.GetResource(), starts)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.ScheduleResponse{Revision: uint64(rev)}, nil
}

func (s *admissionServer) GoLive(ctx context.Context, req *usherv1.GoLiveRequest) (*usherv1.GoLiveResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := ownAuthority(ctx, req.GetActor()); err != nil {
		return nil, err
	}
	rev, err := s.m.Engine().GoLive(ctx, author(ctx, req.GetActor()), req.GetResource(), req.GetLive())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.GoLiveResponse{Revision: uint64(rev)}, nil
}

func (s *admissionServer) WatchCall(req *usherv1.WatchCallRequest, stream grpc.ServerStreamingServer[usherv1.WatchCallResponse]) error {
	var v validator
	v.resource("resource", req.GetResource())
	if v.err != nil {
		return toStatus(v.err)
	}
	select {
	case <-s.drained:
		return stopping()
	default:
	}
	release, err := takeCallerShare(stream.Context(), s.shares, "WatchCall", "resource", req.GetResource())
	if err != nil {
		return err
	}
	defer release()
	after := authz.Revision(req.GetAfterRevision())
	for {
		// A watch that fell behind, as one write that changes more of the
		// call's participants than its buffer holds makes it, however fast
		// its client reads, starts again in place from the last revision
		// sent, as the client's resume would: paced and shared alike.
		last, err := s.watchCall(stream, req.GetResource(), after)
		if authz.KindOf(err) != authz.KindWatchFellBehind {
			return err
		}
		select {
		case <-s.drained:
			return stopping()
		default:
		}
		after = last
	}
}

// watchCall sends call's state after after (all of it for 0), then what
// happens, until the stream or the watch ends. A watch that fell behind
// ends with its authz error, and the revision of the last event sent.
func (s *admissionServer) watchCall(stream grpc.ServerStreamingServer[usherv1.WatchCallResponse], call string, after authz.Revision) (authz.Revision, error) {
	n := s.m.Participants(call)
	// A watch from the start sends the whole state, and so does a resume
	// that cannot resume. Asking costs a resume of a call with
	// participants a read of the log on a cluster; one of a call with none
	// does not ask. Either is paced below by what it sent.
	whole := after == 0 || n > 0 && s.m.Whole(call, after)
	if whole && n > 0 {
		// A whole initial state tells of every participant: one that the
		// caller's share cannot hold is refused before it is read, which
		// holds up the node's joins for as long as the call is large.
		fits, err := takeInitialShare(stream.Context(), s.initial, call, n+1)
		if err != nil {
			return 0, err
		}
		fits()
	}
	// Nor may the server's callers, or one of them, start streams, which
	// they may end at once, faster than their share of what the node
	// reads of them a second: a resume reads every participant of the
	// call, under the same locks, to find those changed since its
	// revision, and sends the lobby whole, as a whole state does.
	pace, err := paceInitial(stream.Context(), s.pacesAll, s.paces, call, n+1)
	if err != nil {
		return 0, err
	}
	w, err := s.m.Watch(call, after)
	if err != nil {
		pace.settle(0)
		return 0, toStatus(err)
	}
	defer w.Close()
	pace.settle(max(len(w.Initial), n+1))
	// A client that does not read holds its initial state until it does:
	// one caller's streams hold at most its share of what all hold.
	unheld, err := takeInitialShare(stream.Context(), s.initial, call, len(w.Initial))
	if err != nil {
		return 0, err
	}
	// The initial state is a call's whole; once sent, a stream that stays
	// open for hours must not keep it.
	last := after // the revision of the last event sent
	for _, ev := range w.Initial {
		if err := stream.Send(&usherv1.WatchCallResponse{Event: toCallEvent(ev)}); err != nil {
			unheld()
			return last, err
		}
		last = max(last, ev.Revision)
	}
	w.Sent()
	unheld()
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			// Cancelled or past its deadline, the stream ends as the
			// client ended it, not as if the watch had.
			return last, toStatus(ctx.Err())
		case <-s.drained:
			return last, stopping()
		case ev, ok := <-w.C:
			if !ok {
				err := w.Err()
				switch authz.KindOf(err) {
				case authz.KindUnavailableStorage:
					return last, cutOff(err, last)
				case authz.KindWatchFellBehind:
					return last, err
				}
				if err != nil {
					return last, toStatus(err)
				}
				return last, nil
			}
			if err := stream.Send(&usherv1.WatchCallResponse{Event: toCallEvent(ev)}); err != nil {
				return last, err
			}
			last = max(last, ev.Revision)
		}
	}
}

// stopping is how a WatchCall ends, or is refused, on a server that drains
// or stops.
func stopping() error {
	return shuttingDown("resume the watch on another from the last revision received", nil)
}

// cutOff is how a WatchCall ends on a server cut off from its storage
// (err), naming the revision of the last event it sent, to resume from on
// another server.
func cutOff(err error, last authz.Revision) error {
	if e := (*authz.Error)(nil); errors.As(err, &e) && e.Err != nil {
		err = e.Err
	}
	return refuse(codes.Unavailable, fmt.Sprintf("this server is cut off from its storage (%v): resume the watch on another server from revision %d, the last it sent", err, last),
		details{reason: string(authz.KindUnavailableStorage), meta: map[string]string{"after_revision": fmt.Sprint(last)}})
}

func toCallEvent(ev admission.Event) *usherv1.CallEvent {
	return &usherv1.CallEvent{
		Kind: usherv1.CallEventKind(ev.Kind), Revision: uint64(ev.Revision), Time: toTimestamp(ev.Time),
		Subject: ev.Subject, SessionId: ev.Session, Capabilities: slices.Clone(ev.Capabilities),
		LivekitGrant: toLiveKitGrant(ev.Grant), Outcome: usherv1.Outcome(ev.Outcome), BlockId: ev.BlockID,
		Note: ev.Note, Reset_: ev.Reset,
	}
}
