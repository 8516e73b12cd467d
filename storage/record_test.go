package storage_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// A part of a change log value decodes to the change set's header and the
// changes it asks for, as decoding it whole and slicing would give.
func TestAChangeSetPartIsTheWholeSliced(t *testing.T) {
	cs := authz.ChangeSet{Revision: 7, Time: time.Unix(0, 1_700_000_000_123).UTC(), Caller: "importer", Actor: "user:ann"}
	for i := range 8 {
		cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "user", Resource: "call:c"}})
	}
	cs.Changes = append(cs.Changes,
		authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: "call:c", Parent: "account:b"}, PreviousParent: "account:a"},
		authz.Change{Op: authz.OpDeleteResource, Resource: &authz.Resource{Name: "call:d"}, PreviousParent: "account:b"})
	v, err := storage.EncodeChangeSet(cs)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := storage.DecodeChangeSet(v)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(whole, cs) {
		t.Fatalf("decoded %+v, want %+v as encoded", whole, cs)
	}
	for _, c := range []struct{ from, n int }{{0, 10}, {0, 3}, {3, 4}, {9, 5}, {10, 1}, {12, 3}} {
		part, total, err := storage.DecodeChangeSetPart(v, c.from, c.n)
		if err != nil {
			t.Fatalf("DecodeChangeSetPart(%d, %d): %v", c.from, c.n, err)
		}
		want := whole
		want.Changes = whole.Changes[min(c.from, 10):min(c.from+c.n, 10)]
		if len(want.Changes) == 0 {
			want.Changes = nil
		}
		if total != 10 || !reflect.DeepEqual(part, want) {
			t.Errorf("DecodeChangeSetPart(%d, %d) = %+v of %d; want %+v of 10", c.from, c.n, part, total, want)
		}
	}
	if _, _, err := storage.DecodeChangeSetPart(v[:len(v)-3], 0, 1); err == nil {
		t.Error("DecodeChangeSetPart of a value cut short: no error")
	}
}
