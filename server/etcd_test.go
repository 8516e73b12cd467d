package server_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// On etcd, a write that needs more operations than one transaction may
// hold is refused RESOURCE_EXHAUSTED (LIMIT_EXCEEDED), naming the limit, and
// writes nothing: tried again it would be refused again, so it is no
// outage, UNAVAILABLE, for a client to retry.
func TestAWriteTooLargeForAnEtcdTransactionIsALimit(t *testing.T) {
	const maxTxnOps = 16
	c := etcdtest.Start(t, 1)
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/too-large/", MaxTxnOps: maxTxnOps})
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(); store.Close() })
	f := serveEngine(t, engine)
	catalog := &usherv1.Policy{Permissions: []*usherv1.Permission{{Name: "view"}}}
	if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: catalog}); err != nil {
		t.Fatalf("ApplyPolicy of a catalog: %v", err)
	}
	before := f.snapshotState()

	large := &usherv1.Policy{Permissions: catalog.Permissions}
	for i := range maxTxnOps {
		large.Roles = append(large.Roles, &usherv1.Role{Name: fmt.Sprintf("r%d", i), Scope: authz.RootName, Permissions: []string{"view"}})
	}
	_, err = f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: large})
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "LIMIT_EXCEEDED", meta: map[string]string{"limit": fmt.Sprint(maxTxnOps)}})
	if diff := before.diff(f.snapshotState()); len(diff) > 0 {
		t.Errorf("a refused write wrote something: %v", diff)
	}
}
