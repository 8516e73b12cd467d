package bolt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// checkPages must accept every file bbolt writes, or a server would refuse
// its own data: random puts, deletes, values spanning several pages, nested
// and inline buckets, checked after every commit and in copies.
func TestCheckPagesAcceptsWhatBboltWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "random.db")
	// What is on disk after each commit is the same without fsync.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(7, 7))
	key := func() []byte { return fmt.Appendf(nil, "k%05d", r.IntN(3000)) }
	check := func(what string) {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		info, _ := f.Stat()
		if err := checkPages(f, info.Size()); err != nil {
			t.Fatalf("%s: checkPages refuses a file bbolt wrote: %v", what, err)
		}
		if err := checkMapped(f, info.Size()); err != nil {
			t.Fatalf("%s: checkMapped refuses a file bbolt wrote: %v", what, err)
		}
	}
	for i := range 300 {
		err := db.Update(func(tx *bbolt.Tx) error {
			top, err := tx.CreateBucketIfNotExists(fmt.Appendf(nil, "bucket-%d", r.IntN(4)))
			if err != nil {
				return err
			}
			for range r.IntN(200) {
				switch n := r.IntN(100); {
				case n < 55:
					v := bytes.Repeat([]byte{byte(n)}, r.IntN(100))
					if r.IntN(50) == 0 {
						v = make([]byte, 5000+r.IntN(20000)) // overflow pages
					}
					if err := top.Put(key(), v); err != nil && err != bbolt.ErrIncompatibleValue {
						return err
					}
				case n < 90:
					if err := top.Delete(key()); err != nil && err != bbolt.ErrIncompatibleValue {
						return err
					}
				case n < 97:
					// Small nested buckets stay inline, larger ones get pages.
					nested, err := top.CreateBucketIfNotExists(fmt.Appendf(nil, "nested-%d", r.IntN(5)))
					if err != nil {
						if err == bbolt.ErrIncompatibleValue {
							continue
						}
						return err
					}
					for range r.IntN(40) {
						if err := nested.Put(key(), []byte("v")); err != nil {
							return err
						}
					}
				default:
					if err := top.DeleteBucket(fmt.Appendf(nil, "nested-%d", r.IntN(5))); err != nil && err != bbolt.ErrBucketNotFound && err != bbolt.ErrIncompatibleValue {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after commit %d", i))
		if i%50 == 49 {
			copyPath := filepath.Join(dir, fmt.Sprintf("copy-%d.db", i))
			if err := db.View(func(tx *bbolt.Tx) error { return tx.CopyFile(copyPath, 0o600) }); err != nil {
				t.Fatal(err)
			}
			f, _ := os.Open(copyPath)
			info, _ := f.Stat()
			if err := checkPages(f, info.Size()); err != nil {
				t.Fatalf("a copy after commit %d: %v", i, err)
			}
			f.Close()
		}
	}
}
