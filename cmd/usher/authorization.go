package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// callTimeout is the deadline of a client command's call unless --timeout
// says otherwise; commands that follow a stream have none.
const callTimeout = 10 * time.Second

// authorizationCommands are the clients of the AuthorizationService.
func authorizationCommands() []*cobra.Command {
	return []*cobra.Command{checkCommand()}
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
