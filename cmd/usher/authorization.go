package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// callTimeout is the deadline of a client command's call unless --timeout
// says otherwise; commands that follow a stream have none.
const callTimeout = 10 * time.Second

// authorizationCommands are the clients of the AuthorizationService.
func authorizationCommands() []*cobra.Command {
	return []*cobra.Command{checkCommand(), checkBatchCommand(), listPermissionsCommand(),
		lookupResourcesCommand(), lookupSubjectsCommand(), revisionCommand(), watchCommand()}
}

// minRevisionFlag defines --min-revision, which every read takes.
func minRevisionFlag(cmd *cobra.Command, v *uint64) {
	cmd.Flags().Uint64Var(v, "min-revision", 0, "answer at this revision or later, e.g. the one a write answered (read your writes)")
}

func checkCommand() *cobra.Command {
	var req usherv1.CheckRequest
	cmd := &cobra.Command{
		Use:   "check SUBJECT PERMISSION RESOURCE",
		Short: "Ask whether a subject holds a permission on a resource",
		Long: `Check asks whether SUBJECT holds PERMISSION on RESOURCE, and prints the
decision: allowed or not, the reason, and the role and scope that decided.

Exit status: 0 allowed, 3 denied (the decision says why: no grant, a block,
an unknown resource), 1 an error (an undeclared permission, a malformed name,
the server out of reach), which is printed to stderr with its code and
details and nothing to stdout.`,
		Example: `  usher check user:dana join-call call:standup
  usher check user:dana join-call call:standup --output table
  if usher check user:dana join-call call:standup >/dev/null; then echo allowed; fi`,
		Args: argsExactly("SUBJECT", "PERMISSION", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Permission, req.Resource = a[0], a[1], a[2]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := usherv1.NewAuthorizationServiceClient(conn).Check(ctx, &req)
			if err != nil {
				return nil, err
			}
			if !resp.GetDecision().GetAllowed() {
				return resp, &refusal{}
			}
			return resp, nil
		}, nil)
	}
	return cmd
}

func checkBatchCommand() *cobra.Command {
	var minRevision uint64
	cmd := &cobra.Command{
		Use:   "check-batch [FILE]",
		Short: "Ask many checks at one revision, from a file or stdin",
		Long: `Check-batch reads checks from FILE, or from stdin when FILE is - or absent,
and asks them in one CheckBatch call, answered at one revision, in order.

The input is a check a line, SUBJECT PERMISSION RESOURCE separated by
spaces (blank lines and lines starting with # are skipped), or a
CheckBatchRequest in JSON: {"checks": [{"subject": ..., "permission": ...,
"resource": ...}]}.

A check that cannot be answered (an undeclared permission, a malformed name)
gets an error of its own in the answer; the others are answered.

Exit status: 0 every check allowed, 3 one or more denied, 1 one or more could
not be answered, or the call failed.`,
		Example: `  printf 'user:dana join-call call:standup\nuser:eve join-call call:standup\n' | usher check-batch
  usher check-batch checks.txt --output table`,
		Args: argsBetween(0, 1, "FILE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &minRevision)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		name := "-"
		if len(a) == 1 {
			name = a[0]
		}
		req, err := readChecks(cmd.InOrStdin(), name)
		if err != nil {
			return err
		}
		req.MinRevision = minRevision
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(ctx, req)
			if err != nil {
				return nil, err
			}
			denied := 0
			for _, d := range resp.GetDecisions() {
				if !d.GetAllowed() {
					denied++
				}
			}
			denied -= len(resp.GetErrors())
			switch {
			case len(resp.GetErrors()) > 0:
				return resp, fmt.Errorf("%d of %d checks could not be answered", len(resp.GetErrors()), len(req.GetChecks()))
			case denied > 0:
				return resp, &refusal{fmt.Sprintf("%d of %d checks denied", denied, len(req.GetChecks()))}
			}
			return resp, nil
		}, checkBatchTable(req))
	}
	return cmd
}

// readChecks reads the checks of a batch from a file, or stdin for "-".
func readChecks(stdin io.Reader, name string) (*usherv1.CheckBatchRequest, error) {
	data, name, err := readInput(stdin, name)
	if err != nil {
		return nil, err
	}
	req := &usherv1.CheckBatchRequest{}
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		if err := protojson.Unmarshal(data, req); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return req, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: want SUBJECT PERMISSION RESOURCE, got %q", name, n, line)
		}
		req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: f[0], Permission: f[1], Resource: f[2]})
	}
	if len(req.Checks) == 0 {
		return nil, fmt.Errorf("%s: no checks", name)
	}
	return req, sc.Err()
}

// checkBatchTable lays out each check beside its decision or error.
func checkBatchTable(req *usherv1.CheckBatchRequest) tableFunc {
	return func(w io.Writer, m proto.Message) {
		resp := m.(*usherv1.CheckBatchResponse)
		errs := map[uint32]*usherv1.CheckError{}
		for _, e := range resp.GetErrors() {
			errs[e.GetIndex()] = e
		}
		fmt.Fprintln(w, "SUBJECT\tPERMISSION\tRESOURCE\tALLOWED\tREASON\tROLE\tSCOPE\tERROR")
		for i, c := range req.GetChecks() {
			var d *usherv1.Decision
			if i < len(resp.GetDecisions()) {
				d = resp.GetDecisions()[i]
			}
			if e, ok := errs[uint32(i)]; ok {
				fmt.Fprintf(w, "%s\t%s\t%s\t\t%s\t\t\t%s\n", c.GetSubject(), c.GetPermission(), c.GetResource(), e.GetReason(), e.GetMessage())
				continue
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t\n", c.GetSubject(), c.GetPermission(), c.GetResource(),
				d.GetAllowed(), enumName(d.GetReason().Descriptor(), d.GetReason().Number()), d.GetRole(), d.GetScope())
		}
	}
}

func listPermissionsCommand() *cobra.Command {
	var req usherv1.ListPermissionsRequest
	cmd := &cobra.Command{
		Use:   "list-permissions SUBJECT RESOURCE",
		Short: "List every permission a subject holds on a resource",
		Long: `List-permissions prints the effective permission set of SUBJECT on
RESOURCE: every permission check would allow there, in catalog order.
Usher's own reserved permissions (usher.*) are left out unless
--include-reserved is given.`,
		Example: `  usher list-permissions user:dana call:standup
  usher list-permissions user:dana call:standup --output table`,
		Args: argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().BoolVar(&req.IncludeReserved, "include-reserved", false, "also list Usher's reserved permissions (usher.*)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return usherv1.NewAuthorizationServiceClient(conn).ListPermissions(ctx, &req)
		}, nil)
	}
	return cmd
}

func lookupResourcesCommand() *cobra.Command {
	var req usherv1.LookupResourcesRequest
	cmd := &cobra.Command{
		Use:   "lookup-resources SUBJECT PERMISSION TYPE",
		Short: "List the resources of a type where a subject holds a permission",
		Long: `Lookup-resources lists every resource of TYPE (below --under, or anywhere)
on which SUBJECT holds PERMISSION, with the role and scope that decide it:
what check would allow. It follows every page, all answered at the first
page's revision.`,
		Example: `  usher lookup-resources user:dana join-call call
  usher lookup-resources user:dana join-call call --under account:acme --output table`,
		Args: argsExactly("SUBJECT", "PERMISSION", "TYPE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.Under, "under", "", "only resources at or below this `resource` (default root)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Permission, req.ResourceType = a[0], a[1], a[2]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return allPages(ctx, &req, usherv1.NewAuthorizationServiceClient(conn).LookupResources)
		}, nil)
	}
	return cmd
}

func lookupSubjectsCommand() *cobra.Command {
	var req usherv1.LookupSubjectsRequest
	cmd := &cobra.Command{
		Use:   "lookup-subjects RESOURCE PERMISSION",
		Short: "List the subjects that hold a permission on a resource",
		Long: `Lookup-subjects lists every subject that holds PERMISSION on RESOURCE, with
the role and scope that decide it. It follows every page, all answered at
the first page's revision.`,
		Example: `  usher lookup-subjects call:standup join-call
  usher lookup-subjects call:standup join-call --kind user --output table`,
		Args: argsExactly("RESOURCE", "PERMISSION"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.SubjectKind, "kind", "", "only subjects of this `kind`, e.g. user (default all)")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource, req.Permission = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return allPages(ctx, &req, usherv1.NewAuthorizationServiceClient(conn).LookupSubjects)
		}, nil)
	}
	return cmd
}

func revisionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revision",
		Short: "Print the revision the server answers at, and how far behind it is",
		Long: `Revision asks the server which revision it answers at, the latest one
committed to its storage (a replica's lag is the difference), and whether
it is serving.`,
		Example: `  usher revision
  usher revision --output table`,
		Args: argsExactly(),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return usherv1.NewAuthorizationServiceClient(conn).GetRevision(ctx, &usherv1.GetRevisionRequest{})
		}, nil)
	}
	return cmd
}

func watchCommand() *cobra.Command {
	var req usherv1.WatchRequest
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Follow the change sets as they are committed",
		Long: `Watch follows the change sets committed after --after (by default, from
now on), a message each, as they are committed, until interrupted. The
first message carries only the revision the stream starts after; messages
with a revision and no change are progress. Each message's revision is how
far the stream has come: after a disconnect, watch again with --after the
last one, and nothing is missed or sent twice.

With --output json (the default) each message is a line of JSON; with
--output table, a line of text. --timeout stops it after that long, and
that is a success.`,
		Example: `  usher watch
  usher watch --after 1200 --resource call:standup
  usher watch --subject user:dana --output table`,
		Args: argsExactly(),
	}
	c := addClientFlags(cmd, 0)
	fs := cmd.Flags()
	fs.Uint64Var(&req.AfterRevision, "after", 0, "stream the change sets committed after this `revision` (0: from now on)")
	changeFilters(cmd, &req.Subject, &req.Resource, &req.Actor, &req.Caller)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.stream(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
			stream, err := usherv1.NewAuthorizationServiceClient(conn).Watch(ctx, &req)
			if err != nil {
				return err
			}
			return follow(stream.Recv, (*usherv1.WatchResponse).GetRevision, p, watchLine)
		})
	}
	return cmd
}

// watchLine is a Watch message as text: a change set as `usher changes`
// prints it, or the revision the stream has reached.
func watchLine(m proto.Message) string {
	msg := m.(*usherv1.WatchResponse)
	if msg.GetChange() == nil {
		return fmt.Sprintf("%d\t(progress)", msg.GetRevision())
	}
	return formatRecord(msg.GetChange())
}
