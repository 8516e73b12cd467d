package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// A data file whose revision is behind (or ahead of) the end of its own
// change log is damaged in a way that still decodes: served as it is, the
// next commit would take a revision the log holds and overwrite that change
// set, revisions used twice and history lost (or the log would skip
// revisions). Open refuses it, as Verify does.
func TestOpenRefusesARevisionThatDisagreesWithItsLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		rev  authz.Revision
	}{{"behind", 2}, {"ahead", 9}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "usher.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i, subject := range []string{"user:a", "user:b", "user:c", "user:d"} {
				if _, err := s.Commit(context.Background(), grantWrite(subject, authz.Revision(i))); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyRevision, storage.EncodeRevision(tc.rev))
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if _, err := Verify(path); err == nil {
				t.Error("Verify accepts the file")
			}
			s, err = Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open served a file at revision %d whose change log ends at 4", tc.rev)
			}
			want := fmt.Sprintf("the data file is damaged (restore it from a backup with usher restore): the change log ends at revision 4, the file says it is at %d", tc.rev)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open: %v, want it to say %q", err, want)
			}
		})
	}
}
