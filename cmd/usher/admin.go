package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/yamldoc"
)

// adminCommands are the clients of the AdminService, beside backup (with
// the server's commands) and policy.
func adminCommands() []*cobra.Command {
	return []*cobra.Command{grantCommand(), revokeCommand(), listGrantsCommand(), rolesCommand(), resourcesCommand(),
		blockCommand(), unblockCommand(), quotasCommand(), admissionsCommand(), changesCommand()}
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

func listGrantsCommand() *cobra.Command {
	var req usherv1.ListGrantsRequest
	cmd := &cobra.Command{
		Use:   "list-grants",
		Short: "List the unexpired grants of a subject, on a resource, or both",
		Long: `List-grants lists the unexpired grants of --subject, on --resource (those
made on that very resource, not inherited from above), or both; at least one
of them. It follows every page.`,
		Example: `  usher list-grants --subject user:dana
  usher list-grants --resource call:standup --output table`,
		Args: argsExactly(),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.Subject, "subject", "", "the grants of this subject")
	cmd.Flags().StringVar(&req.Resource, "resource", "", "the grants made on this resource")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" && req.Resource == "" {
			return usagef("give --subject, --resource or both")
		}
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return allPages(ctx, &req, admin(conn).ListGrants)
		}, nil)
	}
	return cmd
}

func rolesCommand() *cobra.Command {
	return group("roles", "List, define and delete roles",
		`Roles lists the roles visible at a resource, defines a role at a scope, and
deletes a role's definition from a scope.`,
		`  usher roles list account:acme --output table
  usher roles put moderator --scope account:acme --permission join-call,mute-users
  usher roles delete moderator --scope account:acme`,
		rolesListCommand(), rolesPutCommand(), rolesDeleteCommand())
}

func rolesListCommand() *cobra.Command {
	var req usherv1.ListRolesRequest
	cmd := &cobra.Command{
		Use:   "list [RESOURCE]",
		Short: "List the roles visible at a resource",
		Long: `List prints the roles visible at RESOURCE (root when absent), each with
the scope whose definition applies there. It follows every page.`,
		Example: `  usher roles list call:standup --output table
  usher roles list call:standup --assignable-by user:dana`,
		Args: argsBetween(0, 1, "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.Flags().StringVar(&req.AssignableBy, "assignable-by", "", "only the roles this `subject` may grant at the resource")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource = "root"
		if len(a) == 1 {
			req.Resource = a[0]
		}
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return allPages(ctx, &req, admin(conn).ListRoles)
		}, nil)
	}
	return cmd
}

func rolesPutCommand() *cobra.Command {
	role := &usherv1.Role{}
	req := usherv1.PutRoleRequest{Role: role}
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Define or redefine a role at a scope",
		Long: `Put defines the role NAME at --scope (root by default), or redefines it
there: its permissions, the roles its holders may grant, the resource types
it may be granted on, and how many may hold it.`,
		Example: `  usher roles put moderator --scope account:acme --permission join-call,mute-users
  usher roles put speaker --scope account:acme --permission join-call --permission send-audio --bindable-on call --actor user:dana`,
		Args: argsExactly("NAME"),
	}
	c := addClientFlags(cmd, callTimeout)
	fs := cmd.Flags()
	fs.StringVar(&role.Scope, "scope", "root", "the `resource` the definition lives on")
	fs.StringSliceVar(&role.Permissions, "permission", nil, "a permission the role holds; repeat or separate with commas")
	fs.StringSliceVar(&role.AssignableRoles, "assignable-role", nil, "a role the role's holders may grant; repeat or separate with commas")
	fs.StringSliceVar(&role.BindableOn, "bindable-on", nil, "a resource `type` the role may be granted on (default any); repeat or separate with commas")
	fs.Uint32Var(&role.MaxHolders, "max-holders", 0, "most subjects that may hold the role on one resource (0: no limit)")
	fs.StringVar(&role.Description, "description", "", "what the role is for")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		role.Name = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).PutRole(ctx, &req)
		}, nil)
	}
	return cmd
}

func rolesDeleteCommand() *cobra.Command {
	var req usherv1.DeleteRoleRequest
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete a role's definition from a scope",
		Long:    `Delete removes the definition of the role NAME from --scope (root by default).`,
		Example: `  usher roles delete moderator --scope account:acme`,
		Args:    argsExactly("NAME"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().StringVar(&req.Scope, "scope", "root", "the `resource` the definition lives on")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Name = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).DeleteRole(ctx, &req)
		}, nil)
	}
	return cmd
}

func resourcesCommand() *cobra.Command {
	return group("resources", "Register, read and delete resources",
		`Resources registers a resource in the tree (or moves it), reads one with its
ancestors, and deletes one that has no children.`,
		`  usher resources put call:standup --parent account:acme
  usher resources get call:standup
  usher resources delete call:standup`,
		resourcesPutCommand(), resourcesGetCommand(), resourcesDeleteCommand())
}

func resourcesPutCommand() *cobra.Command {
	var req usherv1.PutResourceRequest
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Register a resource, or move it to another parent",
		Long: `Put registers the resource NAME under --parent (root by default), or moves
it there. A call may be registered with its stage: when it starts, and
whether it is live; a move keeps the stage (see 'usher schedule' and
'usher go-live').`,
		Example: `  usher resources put account:acme
  usher resources put call:standup --parent account:acme --start 2026-12-01T09:00:00Z
  usher resources put call:standup --parent workspace:eng --actor user:dana`,
		Args: argsExactly("NAME"),
	}
	c := addClientFlags(cmd, callTimeout)
	start := &timeFlag{}
	fs := cmd.Flags()
	fs.StringVar(&req.Parent, "parent", "", "the parent `resource` (default root)")
	fs.Var(start, "start", "a call's start `time`: RFC 3339 or a duration from now")
	fs.BoolVar(&req.Live, "live", false, "register a call live")
	fs.BoolVar(&req.CreateOnly, "create-only", false, "register only: refuse a name registered already, wherever it is, rather than move it")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Name, req.StartTime = a[0], start.timestamp()
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).PutResource(ctx, &req)
		}, nil)
	}
	return cmd
}

func resourcesGetCommand() *cobra.Command {
	var req usherv1.GetResourceRequest
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a registered resource, its ancestors and how many children it has",
		Long: `Get prints the resource NAME as registered (its parent, creator and, for
a call, its stage), its ancestors from the parent up to root, and how many
children it has.`,
		Example: `  usher resources get call:standup --output table`,
		Args:    argsExactly("NAME"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Name = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).GetResource(ctx, &req)
		}, nil)
	}
	return cmd
}

func resourcesDeleteCommand() *cobra.Command {
	var req usherv1.DeleteResourceRequest
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a resource that has no children",
		Long: `Delete removes the resource NAME, which must have no children, with the
grants, blocks and role definitions on it.`,
		Example: `  usher resources delete call:standup --actor user:dana`,
		Args:    argsExactly("NAME"),
	}
	c := addClientFlags(cmd, callTimeout)
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Name = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).DeleteResource(ctx, &req)
		}, nil)
	}
	return cmd
}

func blockCommand() *cobra.Command {
	var req usherv1.BlockRequest
	cmd := &cobra.Command{
		Use:   "block SUBJECT RESOURCE",
		Short: "Deny a subject permissions on a resource, overriding grants",
		Long: `Block denies SUBJECT the --permission list (every permission when none is
given) on RESOURCE and below, whatever it is granted, and prints the block's
id. A block adds to the subject's other blocks there; --id names it, and
replaces the subject's block of that id there, if it has one.`,
		Example: `  usher block user:mallory call:standup --reason "spam in chat"
  usher block user:mallory call:standup --permission send-video,send-audio --expires 30m
  usher block user:mallory account:acme --actor user:dana --expires 2026-12-31T00:00:00Z`,
		Args: argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	fs := cmd.Flags()
	fs.StringSliceVar(&req.Permissions, "permission", nil, "a permission to deny (default all); repeat or separate with commas")
	fs.StringVar(&req.Reason, "reason", "", "why, recorded with the block and shown in the decisions it makes")
	fs.StringVar(&req.BlockId, "id", "", "the block's `id`: an existing block's to replace it, or a new one's (default: one made up)")
	actorFlag(cmd, &req.Actor)
	expires := expiresFlag(fs, "the block")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource, req.ExpireTime = a[0], a[1], expires.timestamp()
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).Block(ctx, &req)
		}, nil)
	}
	return cmd
}

func unblockCommand() *cobra.Command {
	var req usherv1.UnblockRequest
	cmd := &cobra.Command{
		Use:   "unblock SUBJECT RESOURCE",
		Short: "Lift a block",
		Long: `Unblock lifts the block --id of SUBJECT on RESOURCE or, without --id, every
block of the subject there that the actor may lift.`,
		Example: `  usher unblock user:mallory call:standup
  usher unblock user:mallory call:standup --id 3f2a --actor user:dana`,
		Args: argsExactly("SUBJECT", "RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().StringVar(&req.BlockId, "id", "", "the `id` of the block to lift (default every one)")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Subject, req.Resource = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).Unblock(ctx, &req)
		}, nil)
	}
	return cmd
}

func quotasCommand() *cobra.Command {
	return group("quotas", "List, set and delete quotas",
		`Quotas limits how many resources of a type may be registered below a scope,
in all or by one subject.`,
		`  usher quotas put account:acme call 100
  usher quotas list workspace:eng --output table
  usher quotas delete account:acme call`,
		quotasListCommand(), quotasPutCommand(), quotasDeleteCommand())
}

func quotasListCommand() *cobra.Command {
	var req usherv1.ListQuotasRequest
	cmd := &cobra.Command{
		Use:     "list RESOURCE",
		Short:   "List the quotas on a resource and above it, with their use",
		Long:    `List prints the quotas on RESOURCE and its ancestors, the nearest first, with how much of each is used. It follows every page.`,
		Example: `  usher quotas list workspace:eng --output table`,
		Args:    argsExactly("RESOURCE"),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Resource = a[0]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return allPages(ctx, &req, admin(conn).ListQuotas)
		}, nil)
	}
	return cmd
}

func quotasPutCommand() *cobra.Command {
	quota := &usherv1.Quota{}
	req := usherv1.PutQuotaRequest{Quota: quota}
	cmd := &cobra.Command{
		Use:   "put SCOPE RESOURCE_TYPE LIMIT",
		Short: "Set the limit of a quota, creating it if needed",
		Long: `Put limits the resources of RESOURCE_TYPE below SCOPE to LIMIT, in all or,
with --subject, those that subject creates.`,
		Example: `  usher quotas put account:acme call 100
  usher quotas put account:acme call 5 --subject user:eve --actor user:dana`,
		Args: argsExactly("SCOPE", "RESOURCE_TYPE", "LIMIT"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().StringVar(&quota.Subject, "subject", "", "limit what this subject creates (default: everyone's together)")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		limit, err := strconv.ParseUint(a[2], 10, 32)
		if err != nil {
			return usagef("LIMIT %q: want a whole number from 0 to %d", a[2], uint32(math.MaxUint32))
		}
		quota.Scope, quota.ResourceType, quota.Limit = a[0], a[1], uint32(limit)
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).PutQuota(ctx, &req)
		}, nil)
	}
	return cmd
}

func quotasDeleteCommand() *cobra.Command {
	var req usherv1.DeleteQuotaRequest
	cmd := &cobra.Command{
		Use:     "delete SCOPE RESOURCE_TYPE",
		Short:   "Delete a quota",
		Long:    `Delete removes the quota on RESOURCE_TYPE below SCOPE: everyone's together, or with --subject that subject's.`,
		Example: `  usher quotas delete account:acme call --subject user:eve`,
		Args:    argsExactly("SCOPE", "RESOURCE_TYPE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().StringVar(&req.Subject, "subject", "", "the quota of this subject (default: everyone's together)")
	actorFlag(cmd, &req.Actor)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Scope, req.ResourceType = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).DeleteQuota(ctx, &req)
		}, nil)
	}
	return cmd
}

func admissionsCommand() *cobra.Command {
	return group("admissions", "Set and delete admission rules",
		`Admissions sets the rule for who may join the resources of a type below a
scope, and how (see 'usher join'), and deletes one. Rules are the
platform's: they are written on the caller's own authority, never an
actor's.`,
		`  usher admissions put town-hall.yaml
  usher admissions delete account:acme call`,
		admissionsPutCommand(), admissionsDeleteCommand())
}

func admissionsPutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "put FILE",
		Short: "Set an admission rule from a YAML or JSON file",
		Long: `Put sets the admission rule FILE holds (stdin for -): one Admission, as
a policy file's admissions entries are written, in YAML or JSON.`,
		Example: `  usher admissions put town-hall.yaml
  echo '{scope: root, resource_type: call, join_permission: join-call, max_participants: 50}' | usher admissions put -`,
		Args: argsExactly("FILE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		adm, err := readAdmission(cmd.InOrStdin(), a[0])
		if err != nil {
			return err
		}
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: adm})
		}, nil)
	}
	return cmd
}

// readAdmission reads one Admission from a YAML or JSON file, or stdin for
// "-"; field names are the proto's, unknown ones errors.
func readAdmission(stdin io.Reader, name string) (*usherv1.Admission, error) {
	data, name, err := readInput(stdin, name)
	if err != nil {
		return nil, err
	}
	if err := yamldoc.One(data); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	adm := &usherv1.Admission{}
	if err := protojson.Unmarshal(js, adm); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return adm, nil
}

func admissionsDeleteCommand() *cobra.Command {
	var req usherv1.DeleteAdmissionRequest
	cmd := &cobra.Command{
		Use:     "delete SCOPE RESOURCE_TYPE",
		Short:   "Delete the admission rule for a resource type at a scope",
		Long:    `Delete removes the admission rule for RESOURCE_TYPE at SCOPE; the rule of a scope above, if any, applies again.`,
		Example: `  usher admissions delete account:acme call`,
		Args:    argsExactly("SCOPE", "RESOURCE_TYPE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		req.Scope, req.ResourceType = a[0], a[1]
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return admin(conn).DeleteAdmission(ctx, &req)
		}, nil)
	}
	return cmd
}
