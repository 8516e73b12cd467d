package main

import (
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

func changesCommand() *cobra.Command {
	var req usherv1.ListChangesRequest
	limit := 0
	cmd := &cobra.Command{
		Use:   "changes",
		Short: "Print the change log, optionally filtered",
		Long: `Changes prints the change log, oldest first: each write's revision, time,
caller and actor, and what it changed. It follows every page until the log
(or --limit) is exhausted. The filters combine with AND; --after skips the
records up to a revision, e.g. the last one read.

With --output table each write is a line: revision, time, who (the caller,
"for" the actor), and each change as its op and entity in JSON.`,
		Example: `  usher changes
  usher changes --subject user:dana --output table
  usher changes --resource call:standup --limit 20
  usher changes --after 1200`,
		Args: argsExactly(),
	}
	c := addClientFlags(cmd, callTimeout)
	minRevisionFlag(cmd, &req.MinRevision)
	changeFilters(cmd, &req.Subject, &req.Resource, &req.Actor, &req.Caller)
	cmd.Flags().Uint64Var(&req.AfterRevision, "after", 0, "only the records committed after this `revision` (0: the whole log)")
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many records (0: all)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			client := admin(conn)
			all := &usherv1.ListChangesResponse{}
			for {
				resp, err := client.ListChanges(ctx, &req)
				if err != nil {
					return nil, err
				}
				all.Revision = resp.GetRevision()
				for _, rec := range resp.GetChanges() {
					if limit > 0 && len(all.Changes) == limit {
						return all, nil
					}
					all.Changes = append(all.Changes, rec)
				}
				if resp.GetNextPageToken() == "" {
					return all, nil
				}
				req.PageToken = resp.GetNextPageToken()
			}
		}, changesTable)
	}
	return cmd
}

// changeFilters defines the filters ListChanges and Watch share.
func changeFilters(cmd *cobra.Command, subject, resource, actor, caller *string) {
	fs := cmd.Flags()
	fs.StringVar(subject, "subject", "", "only changes to this subject's grants, blocks or quotas")
	fs.StringVar(resource, "resource", "", "only changes on or of this resource")
	fs.StringVar(actor, "actor", "", "only writes made on behalf of this actor")
	fs.StringVar(caller, "caller", "", "only writes made by this caller")
}

// changesTable writes a change record a line.
func changesTable(w io.Writer, m proto.Message) {
	fmt.Fprintln(w, "REVISION\tTIME\tWHO\tCHANGES")
	for _, rec := range m.(*usherv1.ListChangesResponse).GetChanges() {
		fmt.Fprintln(w, formatRecord(rec))
	}
}

// formatRecord renders one change record as a line: revision, time, who, and
// each change as op followed by its entity in compact JSON, and the parent
// a resource moved or deleted leaves.
func formatRecord(rec *usherv1.ChangeRecord) string {
	who := rec.GetCaller()
	if rec.GetActor() != "" {
		who += " for " + rec.GetActor()
	}
	var parts []string
	for _, c := range rec.GetChanges() {
		entity := ""
		if m := entityOf(c); m != nil {
			b, _ := protojson.Marshal(m)
			entity = " " + string(b)
		}
		if from := c.GetPreviousParent(); from != "" {
			entity += " from " + from
		}
		parts = append(parts, opName(c.GetOp())+entity)
	}
	line := fmt.Sprintf("%d\t%s\t%s\t%s", rec.GetRevision(), rec.GetTime().AsTime().Format(time.RFC3339), who, strings.Join(parts, "; "))
	if rec.GetContinued() {
		line += "\t(continued in the next record)"
	}
	return line
}

// entityOf is whichever entity a change carries, or nil.
func entityOf(c *usherv1.Change) proto.Message {
	m := c.ProtoReflect()
	field := m.WhichOneof(m.Descriptor().Oneofs().ByName("entity"))
	if field == nil {
		return nil
	}
	return m.Get(field).Message().Interface()
}

// opName spells an op as the change log always has: "put_grant".
func opName(op usherv1.Op) string {
	return strings.ToLower(strings.TrimPrefix(op.String(), "OP_"))
}
