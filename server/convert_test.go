package server_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// TestTheChangeLogCarriesWholeEntities proves that a change set puts on the
// wire every field of what it changed: grants and blocks, which the server
// converts, and resources, which the policy package converts.
func TestTheChangeLogCarriesWholeEntities(t *testing.T) {
	w := newWatchWorld(t)
	ctx := callCtx(t)
	later := timestamppb.New(time.Now().Add(time.Hour).Truncate(time.Second))

	res, err := w.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:c1", StartTime: later, Live: true})
	if err != nil {
		t.Fatal(err)
	}
	grant, err := w.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:ann", Role: "host", Resource: "call:c1", ExpireTime: later})
	if err != nil {
		t.Fatal(err)
	}
	block, err := w.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: "call:c1",
		Permissions: []string{"join-call"}, ExpireTime: later, Reason: "spam"})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		rev  uint64
		op   usherv1.Op
		want proto.Message
		got  func(*usherv1.Change) proto.Message
	}{
		{"a resource keeps its start time and live flag", res.GetRevision(), usherv1.Op_OP_PUT_RESOURCE,
			&usherv1.Resource{Name: "call:c1", Parent: "root", StartTime: later, Live: true},
			func(c *usherv1.Change) proto.Message { return c.GetResource() }},
		{"a grant keeps its expiry", grant.GetRevision(), usherv1.Op_OP_PUT_GRANT,
			&usherv1.Grant{Subject: "user:ann", Role: "host", Resource: "call:c1", ExpireTime: later},
			func(c *usherv1.Change) proto.Message { return c.GetGrant() }},
		{"a block keeps its id, permissions, expiry and reason", block.GetRevision(), usherv1.Op_OP_PUT_BLOCK,
			&usherv1.Block{Subject: "user:bob", Resource: "call:c1", Id: block.GetBlockId(),
				Permissions: []string{"join-call"}, ExpireTime: later, Reason: "spam"},
			func(c *usherv1.Change) proto.Message { return c.GetBlock() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A call registered comes with the quotas its type starts with.
			changes := w.logged(tc.rev).GetChanges()
			if len(changes) == 0 || changes[0].GetOp() != tc.op || slices.ContainsFunc(changes[1:], func(c *usherv1.Change) bool { return c.GetOp() != usherv1.Op_OP_PUT_QUOTA }) {
				t.Fatalf("revision %d holds %v, want one %v", tc.rev, changes, tc.op)
			}
			if got := tc.got(changes[0]); !proto.Equal(got, tc.want) {
				t.Errorf("revision %d: the log says\n%v\nwant\n%v", tc.rev, got, tc.want)
			}
		})
	}
}
