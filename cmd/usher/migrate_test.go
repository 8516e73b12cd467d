package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/etcd"
)

// migrationSource writes a data file with every kind of entity, through the
// engine as a server would, and returns its content.
func migrationSource(t *testing.T, path string) authz.Snapshot {
	t.Helper()
	ctx := context.Background()
	store, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	eng, err := authz.Start(ctx, store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	p := server.FromPolicy(msg)
	p.DefaultQuotas = append(p.DefaultQuotas, authz.DefaultQuota{ScopeType: "account", ResourceType: "event", Limit: 5})
	if _, _, err := eng.ApplyPolicy(ctx, authz.Author{Caller: "test"}, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	admin, ann := authz.Author{Caller: "test"}, authz.Author{Caller: "test", Actor: "user:ann"}
	later := time.Now().Add(time.Hour)
	for i, write := range []func() (authz.Revision, error){
		func() (authz.Revision, error) {
			return eng.PutResource(ctx, admin, authz.Resource{Name: "account:acme"})
		},
		func() (authz.Revision, error) {
			return eng.PutResource(ctx, admin, authz.Resource{Name: "workspace:sales", Parent: "account:acme"})
		},
		func() (authz.Revision, error) {
			return eng.Grant(ctx, admin, authz.Grant{Subject: "user:ann", Role: "owner", Resource: "workspace:sales"})
		},
		// On ann's behalf: the event records her as creator, with the
		// policy's creator role.
		func() (authz.Revision, error) {
			return eng.PutResource(ctx, ann, authz.Resource{Name: "event:launch", Parent: "workspace:sales"})
		},
		func() (authz.Revision, error) {
			return eng.PutRole(ctx, admin, authz.Role{Name: "speaker", Scope: "account:acme", Permissions: []string{"send-audio", "join-call"},
				MaxHolders: 3, BindableOn: []string{"event"}, Description: "may speak"})
		},
		func() (authz.Revision, error) {
			return eng.Grant(ctx, ann, authz.Grant{Subject: "user:bob", Role: "speaker", Resource: "event:launch", Expires: later})
		},
		func() (authz.Revision, error) {
			rev, _, err := eng.Block(ctx, admin, authz.Block{Subject: "user:eve", Resource: "account:acme", Permissions: []string{"join-call"}, Reason: "spam", Expires: later})
			return rev, err
		},
		func() (authz.Revision, error) {
			rev, _, err := eng.Block(ctx, admin, authz.Block{Subject: "user:eve", Resource: "workspace:sales"})
			return rev, err
		},
		func() (authz.Revision, error) {
			return eng.PutQuota(ctx, admin, authz.Quota{Scope: "workspace:sales", ResourceType: "event", Limit: 10})
		},
		func() (authz.Revision, error) {
			return eng.PutQuota(ctx, admin, authz.Quota{Scope: "workspace:sales", ResourceType: "event", Subject: "user:ann", Limit: 2})
		},
	} {
		if _, err := write(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	snap, err := storage.Snapshot(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for kind, n := range map[string]int{"grants": len(snap.Grants), "blocks": len(snap.Blocks), "quotas": len(snap.Quotas),
		"default quotas": len(snap.DefaultQuotas), "creator roles": len(snap.CreatorRoles), "admission rules": len(snap.Admissions)} {
		if n == 0 {
			t.Fatalf("the source holds no %s", kind)
		}
	}
	return snap
}

// TestMigrate copies a data file into an etcd cluster and back, and holds
// both copies to the source: the same entities at the same revision, and a
// server over each answering alike and writing on from that revision.
func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	src, back := filepath.Join(dir, "usher.db"), filepath.Join(dir, "back", "usher.db")
	want := migrationSource(t, src)
	c := etcdtest.Start(t, 1)
	endpoints := strings.Join(c.Endpoints(), ",")
	const prefix = "/migrated/"
	ctx := context.Background()

	run := func(args ...string) (string, error) {
		return runIn(append([]string{"migrate"}, args...)...)
	}
	out, err := run("--from", src, "--to-etcd", endpoints, "--etcd-prefix", prefix)
	if err != nil {
		t.Fatalf("migrate into etcd: %v", err)
	}
	t.Log(strings.TrimSpace(out))
	if !strings.Contains(out, fmt.Sprintf("at revision %d: %s; the copy matches", want.Revision, counts(want))) {
		t.Errorf("migrate into etcd said %q; want the revision %d and the counts", out, want.Revision)
	}
	if _, err := run("--from", src, "--to-etcd", endpoints, "--etcd-prefix", prefix); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("a second migration into the same prefix: %v; want a refusal", err)
	}
	out, err = run("--from-etcd", endpoints, "--etcd-prefix", prefix, "--to", back)
	if err != nil {
		t.Fatalf("migrate out of etcd: %v", err)
	}
	t.Log(strings.TrimSpace(out))
	if _, err := run("--from-etcd", endpoints, "--etcd-prefix", prefix, "--to", back); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a second migration into the same file: %v; want a refusal", err)
	}

	// Both copies hold the source whole, and servers over them go on from
	// its revision.
	cli := c.Client(t)
	inEtcd := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps})
	defer inEtcd.Close()
	inFile, err := bolt.Open(back, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer inFile.Close()
	for _, copy := range []struct {
		name  string
		store storage.Backend
	}{{"etcd", inEtcd}, {"the file copied back", inFile}} {
		got, err := storage.Snapshot(ctx, copy.store)
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.CompareSnapshots(want, got); err != nil {
			t.Errorf("%s against the source: %v", copy.name, err)
		}
		eng, err := authz.Start(ctx, copy.store, authz.Options{})
		if err != nil {
			t.Fatalf("%s: %v", copy.name, err)
		}
		for _, q := range []struct {
			query  authz.Query
			reason authz.Reason
		}{
			{authz.Query{Subject: "user:bob", Permission: "send-audio", Resource: "event:launch"}, authz.ReasonGranted},
			{authz.Query{Subject: "user:eve", Permission: "join-call", Resource: "event:launch"}, authz.ReasonBlocked},
			{authz.Query{Subject: "user:ann", Permission: "event.manage", Resource: "event:launch"}, authz.ReasonGranted},
		} {
			d, rev, err := eng.Check(q.query)
			if err != nil || d.Reason != q.reason || rev != want.Revision {
				t.Errorf("%s: Check(%+v) = %v at revision %d, %v; want %v at %d", copy.name, q.query, d.Reason, rev, err, q.reason, want.Revision)
			}
		}
		next, err := eng.Grant(ctx, authz.Author{Caller: "test"}, authz.Grant{Subject: "user:cy", Role: "user", Resource: "event:launch"})
		if err != nil || next != want.Revision+1 {
			t.Errorf("%s: the first write after the migration: revision %d, %v; want %d", copy.name, next, err, want.Revision+1)
		}
		eng.Close()
	}
}

func TestMigrateRefuses(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	store, err := bolt.Open(empty, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	for _, c := range []struct {
		name string
		args []string
		says string
	}{
		{"no direction", nil, "give --from FILE and --to-etcd ENDPOINTS"},
		{"two sources", []string{"--from", empty, "--from-etcd", "127.0.0.1:1", "--to", filepath.Join(dir, "x.db")}, "give --from FILE"},
		{"a missing file", []string{"--from", filepath.Join(dir, "missing.db"), "--to-etcd", "127.0.0.1:1"}, "no such file"},
		{"an empty file", []string{"--from", empty, "--to-etcd", "127.0.0.1:1"}, "holds nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := runIn(append([]string{"migrate"}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("migrate %q: %v; want an error saying %q", c.args, err, c.says)
			}
		})
	}
}
