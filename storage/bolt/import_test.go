package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// migrated is a store's whole content at revision 42, as `usher migrate`
// hands it to Import: one of every kind of entity.
func migrated() authz.Snapshot {
	return authz.Snapshot{
		Revision: 42,
		Permissions: []authz.Permission{
			{Name: "rooms.manage"}, {Name: "rooms.join", Parents: []string{"rooms.manage"}},
			{Name: "usher.grants.write", Parents: []string{"rooms.manage"}},
		},
		Resources: []authz.Resource{{Name: "account:acme", Parent: "root"}, {Name: "room:r1", Parent: "account:acme", Creator: "user:ann"}},
		Roles: []authz.Role{
			{Name: "host", Scope: "root", Permissions: []string{"rooms.manage"}, AssignableRoles: []string{"guest"}, MaxHolders: 2},
			{Name: "guest", Scope: "account:acme", Permissions: []string{"rooms.join"}, BindableOn: []string{"room"}},
		},
		Grants: []authz.Grant{
			{Subject: "user:ann", Role: "host", Resource: "room:r1"},
			{Subject: "user:bob", Role: "guest", Resource: "room:r1", Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)},
		},
		Blocks:        []authz.Block{{Subject: "user:eve", Resource: "account:acme", ID: "b1", Permissions: []string{"rooms.join"}, Reason: "spam"}},
		Quotas:        []authz.Quota{{Scope: "account:acme", ResourceType: "room", Limit: 5}, {Scope: "account:acme", ResourceType: "room", Subject: "user:ann", Limit: 2}},
		CreatorRoles:  []authz.CreatorRole{{ResourceType: "room", Role: "host"}},
		DefaultQuotas: []authz.DefaultQuota{{ScopeType: "account", ResourceType: "room", Limit: 0}},
	}
}

// A snapshot imported at a revision keeps it: the copy's log begins after
// it, a reader from before it loads a snapshot, and the next write follows
// it.
func TestImportKeepsTheRevision(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "usher.db")
	store := openStore(t, path)
	// An engine already following the empty store sees the import.
	eng, err := authz.Start(ctx, store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := migrated()
	rev, err := store.Import(want, "test")
	if err != nil || rev != want.Revision {
		t.Fatalf("Import = revision %d, %v; want %d", rev, err, want.Revision)
	}
	got, err := storage.Snapshot(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.CompareSnapshots(want, got); err != nil {
		t.Errorf("the imported store: %v", err)
	}
	if _, err := store.Changes(ctx, want.Revision-1, 10); !errors.Is(err, authz.ErrCompacted) {
		t.Errorf("Changes after %d, before the import: %v; want ErrCompacted", want.Revision-1, err)
	}
	if css, err := store.Changes(ctx, want.Revision, 10); err != nil || len(css) != 0 {
		t.Errorf("Changes after the import: %d change sets, %v; want none", len(css), err)
	}
	if start, err := store.LogStart(ctx); err != nil || start != want.Revision {
		t.Errorf("LogStart after the import = %d, %v; want %d", start, err, want.Revision)
	}
	if _, err := store.Import(want, "test"); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a second Import: %v; want a refusal", err)
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := eng.Await(wctx, want.Revision); err != nil {
		t.Fatalf("an engine started before the import: %v", err)
	}
	d, _, err := eng.Check(authz.Query{Subject: "user:bob", Permission: "rooms.join", Resource: "room:r1"})
	if err != nil || !d.Allowed {
		t.Errorf("a grant imported: %+v, %v", d, err)
	}
	next, err := eng.Grant(ctx, authz.Author{Caller: "test"}, authz.Grant{Subject: "user:cy", Role: "guest", Resource: "room:r1"})
	if err != nil || next != want.Revision+1 {
		t.Errorf("the first write after the import: revision %d, %v; want %d", next, err, want.Revision+1)
	}
	eng.Close()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if rev, err := bolt.Verify(path); err != nil || rev != want.Revision+1 {
		t.Errorf("Verify = revision %d, %v; want %d", rev, err, want.Revision+1)
	}
}

// A failed import may leave entities behind at revision 0; a second import
// must not mix its own with them.
func TestImportRefusesWhatAFailedImportLeft(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	openStore(t, path).Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("default_quotas")).Put([]byte("left"), []byte("behind"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t, path)
	defer store.Close()
	if rev, err := store.Import(migrated(), "test"); err == nil || !strings.Contains(err.Error(), "entities at revision 0") {
		t.Errorf("Import over a failed import's leftovers = %d, %v; want a refusal", rev, err)
	}
}
