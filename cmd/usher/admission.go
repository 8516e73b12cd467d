package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// admissionCommands are the clients of the AdmissionService: what a media
// server or a call's front end asks when a participant comes and goes.
func admissionCommands() []*cobra.Command {
	return []*cobra.Command{joinCommand(), keepaliveCommand(), leaveCommand(), knockCommand(), lobbyCommand(),
		admitCommand(), denyCommand(), scheduleCommand(), goLiveCommand(), watchCallCommand()}
}

// admissionClient is the AdmissionService client of conn.
func admissionClient(conn *grpc.ClientConn) usherv1.AdmissionServiceClient {
	return usherv1.NewAdmissionServiceClient(conn)
}

// outcome is a refusal unless the answer's outcome is want.
func outcome(got, want usherv1.Outcome) error {
	if got == want {
		return nil
	}
	return &refusal{}
}

func joinCommand() *cobra.Command {
	var req usherv1.JoinRequest
	cmd := &cobra.Command{
		Use:   "join SUBJECT RESOURCE",
		Short: "Decide whether a subject may enter a call now, and admit it",
		Long: `Join decides in one step whether SUBJECT may enter the call RESOURCE now,
with one outcome: ADMITTED, with a session, its lease, the subject's
capabilities and, where the rule maps them to LiveKit, a signed access
token; or BLOCKED, NO_GRANT, NOT_STARTED, LOBBY, FULL or IN_USE.

Exit status: 0 admitted, 3 any other outcome (printed, as an admission is),
1 an error.`,
		Example: `  usher join user:dana call:standup
  usher join user:dana call:standup --output table`,
		Args: argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := admissionClient(conn).Join(ctx, &req)
			if err != nil {
				return nil, err
			}
			return resp, outcome(resp.GetOutcome(), usherv1.Outcome_OUTCOME_ADMITTED)
		}, nil)
	}
	return cmd
}

func keepaliveCommand() *cobra.Command {
	var req usherv1.KeepAliveRequest
	cmd := &cobra.Command{
		Use:   "keepalive SESSION_ID",
		Short: "Renew a session's lease",
		Long: `Keepalive renews the lease of the session or knock SESSION_ID. A session
whose subject may no longer be in the call is ended instead, and the answer
says why.

Exit status: 0 renewed (ADMITTED; a knock LOBBY, or ADMITTED once its subject
may join), 3 ended (BLOCKED, NO_GRANT, NOT_STARTED, or LOBBY for a session
sent back to the lobby), 1 an error.`,
		Example: `  usher keepalive 5b0f...`,
		Args:    argsExactly("SESSION_ID"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.SessionId = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := admissionClient(conn).KeepAlive(ctx, &req)
			if err != nil {
				return nil, err
			}
			if resp.GetOutcome() == usherv1.Outcome_OUTCOME_LOBBY && resp.GetExpireTime() != nil {
				return resp, nil // a knock renewed, its subject waiting on
			}
			return resp, outcome(resp.GetOutcome(), usherv1.Outcome_OUTCOME_ADMITTED)
		}, nil)
	}
	return cmd
}

func leaveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leave (SESSION_ID | SUBJECT RESOURCE)",
		Short: "End a session or a knock",
		Long:  `Leave ends the session or knock SESSION_ID, or the session and the knock SUBJECT has in the call RESOURCE.`,
		Example: `  usher leave 5b0f...
  usher leave user:dana call:standup`,
		Args: argsBetween(1, 2, "SESSION_ID, or SUBJECT RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req := &usherv1.LeaveRequest{}
		if len(a) == 1 {
			req.SessionId = a[0]
		} else {
			req.Subject, req.Resource = a[0], a[1]
		}
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).Leave(ctx, req)
		}, nil)
	}
	return cmd
}

func knockCommand() *cobra.Command {
	var req usherv1.KnockRequest
	cmd := &cobra.Command{
		Use:   "knock SUBJECT RESOURCE",
		Short: "Wait in a call's lobby",
		Long: `Knock puts SUBJECT in the lobby of the call RESOURCE, where join would send
it; otherwise it answers what join would, and puts nobody anywhere.

Exit status: 0 waiting in the lobby, 3 any other outcome, 1 an error.`,
		Example: `  usher knock user:frank call:standup --note "Frank from sales"`,
		Args:    argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.Note, "note", "", "shown to those who admit, e.g. a display name")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := admissionClient(conn).Knock(ctx, &req)
			if err != nil {
				return nil, err
			}
			return resp, outcome(resp.GetOutcome(), usherv1.Outcome_OUTCOME_LOBBY)
		}, nil)
	}
	return cmd
}

func lobbyCommand() *cobra.Command {
	var req usherv1.ListLobbyRequest
	cmd := &cobra.Command{
		Use:     "lobby RESOURCE",
		Short:   "List who waits in a call's lobby",
		Long:    `Lobby lists the subjects waiting in the lobby of the call RESOURCE, with their notes.`,
		Example: `  usher lobby call:standup --actor user:dana --output table`,
		Args:    argsExactly("RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.Actor, "actor", "", "the end `subject` asking, who must hold the lobby's admit permission (default: the caller itself)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).ListLobby(ctx, &req)
		}, nil)
	}
	return cmd
}

func admitCommand() *cobra.Command {
	var req usherv1.AdmitRequest
	cmd := &cobra.Command{
		Use:   "admit SUBJECT RESOURCE",
		Short: "Let a subject waiting in the lobby into a call",
		Long: `Admit lets SUBJECT into the call RESOURCE: it grants the lobby's admit role
on the call, judged as any grant is, and takes the subject out of the lobby.`,
		Example: `  usher admit user:frank call:standup --actor user:dana
  usher admit user:frank call:standup --actor user:dana --expires 2h`,
		Args: argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	actorFlag(cmd, &req.Actor)
	expires := expiresFlag(cmd.Flags(), "the admission (the grant of the admit role)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource, req.ExpireTime = a[0], a[1], expires.timestamp()
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).Admit(ctx, &req)
		}, nil)
	}
	return cmd
}

func denyCommand() *cobra.Command {
	var req usherv1.DenyRequest
	cmd := &cobra.Command{
		Use:     "deny SUBJECT RESOURCE",
		Short:   "Turn a subject away from a call's lobby",
		Long:    `Deny takes SUBJECT out of the lobby of the call RESOURCE without letting it in.`,
		Example: `  usher deny user:frank call:standup --actor user:dana`,
		Args:    argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).Deny(ctx, &req)
		}, nil)
	}
	return cmd
}

func scheduleCommand() *cobra.Command {
	var req usherv1.ScheduleRequest
	clearStart := false
	cmd := &cobra.Command{
		Use:   "schedule RESOURCE [TIME]",
		Short: "Set or clear when a call starts",
		Long: `Schedule sets when the call RESOURCE starts, TIME being RFC 3339 or a
duration from now; --clear unsets it.`,
		Example: `  usher schedule call:standup 2026-12-01T09:00:00Z
  usher schedule call:standup 15m --actor user:dana
  usher schedule call:standup --clear`,
		Args: argsBetween(1, 2, "RESOURCE [TIME]"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().BoolVar(&clearStart, "clear", false, "unset the start time")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		switch {
		case len(a) == 2 && clearStart:
			return usagef("give TIME or --clear, not both")
		case len(a) == 1 && !clearStart:
			return usagef("give TIME, or --clear to unset the start time")
		case len(a) == 2:
			var start timeFlag
			if err := start.Set(a[1]); err != nil {
				return usagef("TIME %q: %v", a[1], err)
			}
			req.StartTime = start.timestamp()
		}
		req.Resource = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).Schedule(ctx, &req)
		}, nil)
	}
	return cmd
}

func goLiveCommand() *cobra.Command {
	var req usherv1.GoLiveRequest
	backstage := false
	cmd := &cobra.Command{
		Use:   "go-live RESOURCE",
		Short: "Take a call live, or back to backstage",
		Long: `Go-live takes the call RESOURCE live: it is open from then on, whatever
its start time; where its admission rule keeps calls backstage, subjects
without the backstage permission may join only once it is live.
--backstage takes it back, to wait for its start time or to go live again.`,
		Example: `  usher go-live call:standup --actor user:dana
  usher go-live call:standup --backstage`,
		Args: argsExactly("RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().BoolVar(&backstage, "backstage", false, "take the call back to backstage instead")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource, req.Live = a[0], !backstage
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admissionClient(conn).GoLive(ctx, &req)
		}, nil)
	}
	return cmd
}

func watchCallCommand() *cobra.Command {
	var req usherv1.WatchCallRequest
	cmd := &cobra.Command{
		Use:   "watch-call RESOURCE",
		Short: "Follow who is in a call, and every change, as it happens",
		Long: `Watch-call follows what happens in the call RESOURCE, until interrupted:
first who is there with which capabilities and who waits in the lobby, then
SYNCED, then every join, change of capabilities, eject, leave, lapse and
knock. --after resumes from the revision of the last event seen.

With --output json (the default) each event is a line of JSON; with
--output table, a line of text. --timeout stops it after that long, and
that is a success.`,
		Example: `  usher watch-call call:standup
  usher watch-call call:standup --after 1200 --output table`,
		Args: argsExactly("RESOURCE"),
	}
	c := addClientFlags(cmd, 0)
	cmd.Flags().Uint64Var(&req.AfterRevision, "after", 0, "resume after this `revision` (0: start with the call's whole state)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource = a[0]
		return c.stream(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
			stream, err := admissionClient(conn).WatchCall(ctx, &req)
			if err != nil {
				return err
			}
			return follow(stream.Recv, func(m *usherv1.WatchCallResponse) uint64 { return m.GetEvent().GetRevision() }, p, callEventLine)
		})
	}
	return cmd
}

// callEventLine is a call event as text: revision, time, kind, subject,
// session, and what the kind carries.
func callEventLine(m proto.Message) string {
	e := m.(*usherv1.WatchCallResponse).GetEvent()
	kind := enumName(e.GetKind().Descriptor(), e.GetKind().Number())
	parts := []string{fmt.Sprint(e.GetRevision()), e.GetTime().AsTime().Format(time.RFC3339), kind, e.GetSubject(), e.GetSessionId()}
	var more []string
	if len(e.GetCapabilities()) > 0 {
		more = append(more, "capabilities="+strings.Join(e.GetCapabilities(), ","))
	}
	if e.GetOutcome() != usherv1.Outcome_OUTCOME_UNSPECIFIED {
		more = append(more, "outcome="+enumName(e.GetOutcome().Descriptor(), e.GetOutcome().Number()))
	}
	if e.GetBlockId() != "" {
		more = append(more, "block_id="+e.GetBlockId())
	}
	if e.GetNote() != "" {
		more = append(more, fmt.Sprintf("note=%q", e.GetNote()))
	}
	if e.GetReset_() {
		more = append(more, "reset")
	}
	return strings.Join(append(parts, strings.Join(more, " ")), "\t")
}
