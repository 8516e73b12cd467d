package bolt

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
)

// testdata/v1.db was written by the version of Usher that wrote format 1:
// the vancast policy, an account, a workspace, an event registered by an
// actor, grants with and without an expiry, a block, quotas and a custom
// role, over 13 revisions. testdata/v1.json is what that version read back
// from it: its snapshot and its change log.
type legacyDump struct {
	Snapshot struct {
		Revision     authz.Revision
		Permissions  []legacyPermission
		Resources    []legacyResource
		Roles        []legacyRole
		Grants       []legacyGrant
		Blocks       []legacyBlock
		Quotas       []legacyQuota
		CreatorRoles []legacyCreatorRole
	} `json:"snapshot"`
	Changes []legacyChangeSet `json:"changes"`
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func readDump(t *testing.T) (authz.Snapshot, []authz.ChangeSet) {
	t.Helper()
	raw, err := os.ReadFile("testdata/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var d legacyDump
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	want := authz.Snapshot{Revision: d.Snapshot.Revision}
	for _, p := range d.Snapshot.Permissions {
		want.Permissions = append(want.Permissions, authz.Permission(p))
	}
	for _, r := range d.Snapshot.Resources {
		want.Resources = append(want.Resources, r.resource())
	}
	for _, r := range d.Snapshot.Roles {
		want.Roles = append(want.Roles, authz.Role(r))
	}
	for _, g := range d.Snapshot.Grants {
		want.Grants = append(want.Grants, authz.Grant(g))
	}
	for _, b := range d.Snapshot.Blocks {
		want.Blocks = append(want.Blocks, b.block())
	}
	for _, q := range d.Snapshot.Quotas {
		want.Quotas = append(want.Quotas, authz.Quota(q))
	}
	for _, c := range d.Snapshot.CreatorRoles {
		want.CreatorRoles = append(want.CreatorRoles, authz.CreatorRole(c))
	}
	var log []authz.ChangeSet
	for _, l := range d.Changes {
		cs := authz.ChangeSet{Revision: l.Revision, Time: l.Time, Caller: l.Caller, Actor: l.Actor}
		for _, lc := range l.Changes {
			c, err := lc.change()
			if err != nil {
				t.Fatal(err)
			}
			cs.Changes = append(cs.Changes, c)
		}
		log = append(log, cs)
	}
	return want, log
}

// checkMigrated opens path and compares what it loads and logs with the
// dump, then verifies the file.
func checkMigrated(t *testing.T, path string) {
	t.Helper()
	want, wantLog := readDump(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open of a format 1 file: %v", err)
	}
	var c authz.Collector
	rev, err := s.Load(context.Background(), &c)
	if err != nil {
		t.Fatal(err)
	}
	c.Snapshot.Revision = rev
	if !reflect.DeepEqual(normal(c.Snapshot), normal(want)) {
		t.Errorf("migrated file loads\n %+v\nwant\n %+v", normal(c.Snapshot), normal(want))
	}
	log, err := s.Changes(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != len(wantLog) {
		t.Fatalf("migrated change log holds %d change sets, want %d", len(log), len(wantLog))
	}
	for i := range log {
		got, w := log[i], wantLog[i]
		got.Time, w.Time = got.Time.UTC(), w.Time.UTC()
		if !reflect.DeepEqual(normalSet(got), normalSet(w)) {
			t.Errorf("change set %d:\n got %+v\nwant %+v", i+1, got, w)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := Verify(path); err != nil || got != want.Revision {
		t.Errorf("Verify of the migrated file = %d, %v; want %d", got, err, want.Revision)
	}
}

func TestOpenMigratesFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	copyFile(t, "testdata/v1.db", path)
	checkMigrated(t, path)
	// Opening a migrated file again changes nothing.
	checkMigrated(t, path)
}

// A migration cut off after some buckets, as by a crash, resumes when the
// file is opened again: every value says which format it is in.
func TestMigrationResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	copyFile(t, "testdata/v1.db", path)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("default_quotas"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	steps := migrationSteps()
	for _, step := range steps[:len(steps)/2] {
		if err := migrateBucket(db, step.bucket, step.convert); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	checkMigrated(t, path)
}

// normal sorts what a snapshot holds and drops empty lists, so that two
// snapshots compare as sets.
func normal(s authz.Snapshot) authz.Snapshot {
	sortBy := func(n int, key func(i int) string, swap func(i, j int)) {
		for i := 1; i < n; i++ {
			for j := i; j > 0 && key(j) < key(j-1); j-- {
				swap(j, j-1)
			}
		}
	}
	sortBy(len(s.Permissions), func(i int) string { return s.Permissions[i].Name }, func(i, j int) { s.Permissions[i], s.Permissions[j] = s.Permissions[j], s.Permissions[i] })
	sortBy(len(s.Resources), func(i int) string { return s.Resources[i].Name }, func(i, j int) { s.Resources[i], s.Resources[j] = s.Resources[j], s.Resources[i] })
	sortBy(len(s.Roles), func(i int) string { return s.Roles[i].Scope + "\x00" + s.Roles[i].Name }, func(i, j int) { s.Roles[i], s.Roles[j] = s.Roles[j], s.Roles[i] })
	sortBy(len(s.Grants), func(i int) string {
		return s.Grants[i].Subject + "\x00" + s.Grants[i].Resource + "\x00" + s.Grants[i].Role
	}, func(i, j int) { s.Grants[i], s.Grants[j] = s.Grants[j], s.Grants[i] })
	for i := range s.Permissions {
		s.Permissions[i].Parents = nonEmpty(s.Permissions[i].Parents)
	}
	for i := range s.Roles {
		s.Roles[i].Permissions, s.Roles[i].AssignableRoles, s.Roles[i].BindableOn = nonEmpty(s.Roles[i].Permissions), nonEmpty(s.Roles[i].AssignableRoles), nonEmpty(s.Roles[i].BindableOn)
	}
	for i := range s.Grants {
		s.Grants[i].Expires = s.Grants[i].Expires.UTC()
	}
	for i := range s.Blocks {
		s.Blocks[i].Expires = s.Blocks[i].Expires.UTC()
		s.Blocks[i].Permissions = nonEmpty(s.Blocks[i].Permissions)
	}
	return s
}

func normalSet(cs authz.ChangeSet) authz.ChangeSet {
	for i, c := range cs.Changes {
		switch {
		case c.Permission != nil:
			p := *c.Permission
			p.Parents = nonEmpty(p.Parents)
			cs.Changes[i].Permission = &p
		case c.Role != nil:
			r := *c.Role
			r.Permissions, r.AssignableRoles, r.BindableOn = nonEmpty(r.Permissions), nonEmpty(r.AssignableRoles), nonEmpty(r.BindableOn)
			cs.Changes[i].Role = &r
		case c.Grant != nil:
			g := *c.Grant
			g.Expires = g.Expires.UTC()
			cs.Changes[i].Grant = &g
		case c.Block != nil:
			b := *c.Block
			b.Expires = b.Expires.UTC()
			b.Permissions = nonEmpty(b.Permissions)
			cs.Changes[i].Block = &b
		}
	}
	return cs
}

func nonEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
