package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// batchCollector is a Collector that takes grants in batches too, and
// counts them.
type batchCollector struct {
	authz.Collector
	batches int
}

func (c *batchCollector) GrantBatch(gs []authz.Grant) error {
	c.batches++
	for _, g := range gs {
		if err := c.Grant(g); err != nil {
			return err
		}
	}
	return nil
}

// oneByOne hides a sink's GrantBatch, so that a load hands it grants one at
// a time.
type oneByOne struct{ authz.Sink }

// loadTestStore is a store holding a few thousand grants, more than one
// batch.
func loadTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	snap := authz.Snapshot{
		Permissions: []authz.Permission{{Name: "join-call"}},
		Roles:       []authz.Role{{Name: "host", Scope: authz.RootName, Permissions: []string{"join-call"}}},
	}
	for i := range 50 {
		snap.Resources = append(snap.Resources, authz.Resource{Name: fmt.Sprintf("call:c%d", i), Parent: authz.RootName})
	}
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3*grantBatch + 17 {
		g := authz.Grant{Subject: fmt.Sprintf("user:u%d", i%701), Role: []string{"host", "guest"}[i%2], Resource: fmt.Sprintf("call:c%d", i%50)}
		if i%3 == 0 {
			g.Expires = at.Add(time.Duration(i) * time.Second)
		}
		snap.Grants = append(snap.Grants, g)
	}
	if _, err := s.Import(snap, "test"); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadHandsGrantsInBatchesAsItWouldOneByOne(t *testing.T) {
	s := loadTestStore(t)
	var one authz.Collector
	if _, err := s.Load(context.Background(), &one); err != nil {
		t.Fatal(err)
	}
	var batched batchCollector
	if _, err := s.Load(context.Background(), &batched); err != nil {
		t.Fatal(err)
	}
	if len(one.Snapshot.Grants) != 3*grantBatch+17 {
		t.Fatalf("loaded %d grants, want %d", len(one.Snapshot.Grants), 3*grantBatch+17)
	}
	if !reflect.DeepEqual(batched.Snapshot, one.Snapshot) {
		t.Error("what was loaded in batches differs from what was loaded one by one")
	}
	if batched.batches < 4 {
		t.Errorf("%d batches, want at least 4", batched.batches)
	}
}

// A grant the index refuses comes before a grant that cannot be decoded:
// the load in batches must say what the load one by one said.
func TestLoadInBatchesRefusesAsOneByOne(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []string
	}{
		{"a grant on a resource that is not registered, then an undecodable one", []string{"user:u5\x00call:nowhere\x00host", "user:u6-undecodable"}},
		{"an undecodable grant, then one on a resource that is not registered", []string{"user:u5-undecodable", "user:u6\x00call:nowhere\x00host"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := loadTestStore(t)
			err := s.db.Update(func(tx *bbolt.Tx) error {
				for _, k := range tc.keys {
					v := []byte{1, 0, 0, 0, 0, 0, 0, 0, 0}
					if err := tx.Bucket(bucketOf(storage.KindGrant)).Put([]byte(k), v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			_, want := s.Load(context.Background(), oneByOne{authz.NewBuilder(authz.SystemClock{})})
			_, got := s.Load(context.Background(), authz.NewBuilder(authz.SystemClock{}))
			if want == nil || fmt.Sprint(got) != want.Error() {
				t.Errorf("loading in batches says %v, one by one %v", got, want)
			}
			if !strings.Contains(fmt.Sprint(got), strings.Split(strings.Split(tc.keys[0], "\x00")[0], "-")[0]) {
				t.Errorf("the error %v is not about the first bad grant", got)
			}
		})
	}
}

// BenchmarkOpenAndLoad is usher serve's start-up on 200,000 grants: Open,
// with its check of the file's pages, then Load into a Builder and Build.
func BenchmarkOpenAndLoad(b *testing.B) {
	path := filepath.Join(b.TempDir(), "usher.db")
	s, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	snap := authz.Snapshot{
		Permissions: []authz.Permission{{Name: "join-call"}},
		Roles:       []authz.Role{{Name: "host", Scope: authz.RootName, Permissions: []string{"join-call"}}},
	}
	for i := range 20_000 {
		snap.Resources = append(snap.Resources, authz.Resource{Name: fmt.Sprintf("call:c%d", i), Parent: authz.RootName})
	}
	for i := range 200_000 {
		snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:u%d", i%40_009), Role: []string{"host", "guest"}[i%2],
			Resource: fmt.Sprintf("call:c%d", (i*7919)%20_000)})
	}
	if _, err := s.Import(snap, "bench"); err != nil {
		b.Fatal(err)
	}
	s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		builder := authz.NewBuilder(authz.SystemClock{})
		rev, err := s.Load(context.Background(), builder)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := builder.Build(rev); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
