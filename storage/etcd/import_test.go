package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
)

// imported is a store's content at revision 42, as `usher migrate` hands it
// to Import.
func imported() authz.Snapshot {
	return authz.Snapshot{
		Revision:    42,
		Permissions: []authz.Permission{{Name: "rooms.manage"}, {Name: "rooms.join", Parents: []string{"rooms.manage"}}},
		Resources:   []authz.Resource{{Name: "account:acme", Parent: "root"}, {Name: "room:r1", Parent: "account:acme", Creator: "user:ann"}},
		Roles: []authz.Role{
			{Name: "host", Scope: "root", Permissions: []string{"rooms.manage"}, AssignableRoles: []string{"guest"}, MaxHolders: 2},
			{Name: "guest", Scope: "account:acme", Permissions: []string{"rooms.join"}, BindableOn: []string{"room"}},
		},
		Grants: []authz.Grant{
			{Subject: "user:ann", Role: "host", Resource: "room:r1"},
			{Subject: "user:bob", Role: "guest", Resource: "room:r1", Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)},
		},
		Blocks:        []authz.Block{{Subject: "user:eve", Resource: "account:acme", ID: "b1", Permissions: []string{"rooms.join"}, Reason: "spam"}},
		Quotas:        []authz.Quota{{Scope: "account:acme", ResourceType: "room", Limit: 5}},
		CreatorRoles:  []authz.CreatorRole{{ResourceType: "room", Role: "host"}},
		DefaultQuotas: []authz.DefaultQuota{{ScopeType: "account", ResourceType: "room", Limit: 0}},
	}
}

func TestImport(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	ctx := context.Background()

	t.Run("a snapshot keeps its revision and the log begins after it", func(t *testing.T) {
		store := etcd.New(cli, etcd.Options{Prefix: prefixOf(t), MaxTxnOps: 4})
		defer store.Close()
		want := imported()
		if err := store.Import(ctx, want); err != nil {
			t.Fatalf("Import: %v", err)
		}
		got, err := storage.Snapshot(ctx, store)
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.CompareSnapshots(want, got); err != nil {
			t.Errorf("the imported prefix: %v", err)
		}
		if _, err := store.Changes(ctx, want.Revision-1, 10); !errors.Is(err, authz.ErrCompacted) {
			t.Errorf("Changes after %d, before the import: %v; want ErrCompacted", want.Revision-1, err)
		}
		if start, err := store.LogStart(ctx); err != nil || start != want.Revision {
			t.Errorf("LogStart after the import = %d, %v; want %d", start, err, want.Revision)
		}
		if err := store.Import(ctx, want); !errors.Is(err, etcd.ErrNotEmpty) {
			t.Errorf("a second Import: %v; want ErrNotEmpty", err)
		}
		// The import took transactions of a few operations; a server
		// needs more.
		served := etcd.New(cli, etcd.Options{Prefix: prefixOf(t), MaxTxnOps: etcdtest.MaxTxnOps})
		defer served.Close()
		eng, err := authz.Start(ctx, served, authz.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		if rev := eng.Index().Revision(); rev != want.Revision {
			t.Errorf("an engine on the imported prefix starts at revision %d, want %d", rev, want.Revision)
		}
		next, err := eng.Grant(ctx, authz.Author{Caller: "test"}, authz.Grant{Subject: "user:cy", Role: "guest", Resource: "room:r1"})
		if err != nil || next != want.Revision+1 {
			t.Errorf("the first write after the import: revision %d, %v; want %d", next, err, want.Revision+1)
		}
	})

	t.Run("a server writing under the prefix meanwhile fails the import", func(t *testing.T) {
		prefix := prefixOf(t)
		// Enough grants, a few per transaction, that the import is still
		// running when the other writer commits.
		snap := imported()
		for i := range 4000 {
			snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "guest", Resource: "room:r1"})
		}
		store := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: 4})
		defer store.Close()
		done := make(chan error, 1)
		go func() { done <- store.Import(ctx, snap) }()
		for {
			resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		// A server that started on what looked like an empty prefix
		// applies its default policy.
		other := etcd.New(cli, etcd.Options{Prefix: prefix})
		defer other.Close()
		res, err := other.Commit(ctx, []authz.Write{{Set: authz.ChangeSet{Changes: []authz.Change{
			{Op: authz.OpPutPermission, Permission: &authz.Permission{Name: "join-call"}}}}}})
		if err != nil || res[0].Revision != 1 {
			t.Fatalf("the other writer's commit: %+v, %v", res, err)
		}
		err = <-done
		if !errors.Is(err, etcd.ErrNotEmpty) || !strings.Contains(err.Error(), "another writer") {
			t.Errorf("Import while another writer committed: %v; want ErrNotEmpty naming the other writer", err)
		}
	})
}

// An import that stopped part way (a member lost, the command killed) leaves
// entities under the prefix and no revision: a server must not take that for
// a store of its own and serve it.
func TestLoadRefusesWhatAFailedImportLeft(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	ctx := context.Background()
	prefix := prefixOf(t)
	store := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: 4})
	defer store.Close()
	if err := store.Import(ctx, imported()); err != nil {
		t.Fatal(err)
	}
	// What the import's last transaction writes is not there.
	for _, k := range []string{"rev", "compacted"} {
		if _, err := cli.Delete(ctx, prefix+k); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := authz.Start(ctx, store, authz.Options{})
	if err == nil {
		defer eng.Close()
		resources, grants, _ := eng.Index().Counts()
		t.Fatalf("an engine started on a prefix holding entities and no revision: revision %d, %d resources, %d grants; want a refusal",
			eng.Index().Revision(), resources, grants)
	}
	if !strings.Contains(err.Error(), "no revision") || !strings.Contains(err.Error(), prefix) {
		t.Errorf("the refusal %q does not say the prefix holds entities but no revision", err)
	}
}

// An import keeps each transaction within the cluster's request limit
// (MaxTxnBytes, etcd's --max-request-bytes), however few operations its
// entities take: a store of large roles is copied whole.
func TestImportKeepsEachTransactionWithinTheRequestLimit(t *testing.T) {
	const requestBytes = 64 << 10
	c := etcdtest.StartWith(t, 1, etcdtest.Options{MaxRequestBytes: requestBytes})
	cli := c.Client(t)
	ctx := context.Background()
	snap := imported()
	// 200 roles of some 1.1 KB each: 220 KB in all, in few operations.
	for i := range 200 {
		snap.Roles = append(snap.Roles, authz.Role{Name: fmt.Sprintf("r%d", i), Scope: "root", Permissions: []string{"rooms.join"},
			Description: strings.Repeat("d", 1024)})
	}
	prefix := prefixOf(t)
	store := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps, MaxTxnBytes: requestBytes})
	defer store.Close()
	if err := store.Import(ctx, snap); err != nil {
		t.Fatalf("Import of %d roles of 1 KB under a request limit of %d bytes: %v", len(snap.Roles), requestBytes, err)
	}
	engine, err := authz.Start(ctx, store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	if got := engine.Index().Revision(); got != snap.Revision {
		t.Errorf("the imported store is at revision %d, want %d", got, snap.Revision)
	}
}
