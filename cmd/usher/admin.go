package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// adminCommands are the clients of the AdminService, beside backup (with
// the server's commands) and policy.
func adminCommands() []*cobra.Command {
	return []*cobra.Command{grantCommand(), revokeCommand(), changesCommand()}
}

// actorFlag defines --actor, which every write on someone's behalf takes.
func actorFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "actor", "", "the end `subject` on whose behalf the write is made, judged by the delegation rules (default: the caller itself)")
}

// admin is the AdminService client of conn.
func admin(conn *grpc.ClientConn) usherv1.AdminServiceClient {
	return usherv1.NewAdminServiceClient(conn)
}

func grantCommand() *cobra.Command {
	var req usherv1.GrantRequest
	cmd := &cobra.Command{
		Use:   "grant SUBJECT ROLE RESOURCE",
		Short: "Grant a role to a subject on a resource",
		Long: `Grant binds SUBJECT to ROLE on RESOURCE, and prints the revision it made.
The role must be visible at the resource. Granting the same triple again
updates its expiry.`,
		Example: `  usher grant user:dana host call:standup
  usher grant user:eve call-member call:standup --expires 2h
  usher grant user:eve call-member call:standup --actor user:dana --expires 2026-12-01T18:00:00Z`,
		Args: argsExactly("SUBJECT", "ROLE", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	actorFlag(cmd, &req.Actor)
	expires := expiresFlag(cmd.Flags(), "the grant")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Role, req.Resource, req.ExpireTime = a[0], a[1], a[2], expires.timestamp()
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).Grant(ctx, &req)
		}, nil)
	}
	return cmd
}

func revokeCommand() *cobra.Command {
	var req usherv1.RevokeRequest
	cmd := &cobra.Command{
		Use:     "revoke SUBJECT ROLE RESOURCE",
		Short:   "Revoke a grant",
		Long:    `Revoke removes the grant of ROLE to SUBJECT on RESOURCE, and prints the revision it made.`,
		Example: `  usher revoke user:eve call-member call:standup --actor user:dana`,
		Args:    argsExactly("SUBJECT", "ROLE", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Role, req.Resource = a[0], a[1], a[2]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).Revoke(ctx, &req)
		}, nil)
	}
	return cmd
}
