package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// changes prints the change log, a line per change, oldest first, following
// page tokens until the log (or --limit) is exhausted.
func changes(args []string) error {
	var req usherv1.ListChangesRequest
	limit := 0
	filters := func(fs *flag.FlagSet) {
		fs.StringVar(&req.Subject, "subject", "", "only changes to this subject's grants, blocks or quotas")
		fs.StringVar(&req.Resource, "resource", "", "only changes on or of this resource")
		fs.StringVar(&req.Actor, "actor", "", "only writes made on behalf of this actor")
		fs.StringVar(&req.Caller, "caller", "", "only writes made by this caller")
		fs.IntVar(&limit, "limit", 0, "print at most this many records (0: all)")
	}
	return runClientWith("changes", "", 0, args, filters, func(ctx context.Context, conn *grpc.ClientConn, _ []string) (proto.Message, error) {
		client := usherv1.NewAdminServiceClient(conn)
		printed := 0
		for {
			resp, err := client.ListChanges(ctx, &req)
			if err != nil {
				return nil, err
			}
			for _, rec := range resp.GetChanges() {
				if limit > 0 && printed == limit {
					return nil, nil
				}
				fmt.Println(formatRecord(rec))
				printed++
			}
			if resp.GetNextPageToken() == "" {
				return nil, nil
			}
			req.PageToken = resp.GetNextPageToken()
		}
	})
}

// formatRecord renders one change record as a line: revision, time, who, and
// each change as op followed by its entity in compact JSON.
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
		parts = append(parts, opName(c.GetOp())+entity)
	}
	return fmt.Sprintf("%d\t%s\t%s\t%s", rec.GetRevision(), rec.GetTime().AsTime().Format(time.RFC3339), who, strings.Join(parts, "; "))
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
