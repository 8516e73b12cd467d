package etcd_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
	"github.com/usher-authz/usher/storage/storagetest"
)

// TestStore runs the conformance suite against a three-member etcd cluster,
// each case under a prefix of its own.
func TestStore(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		sum := sha256.Sum256([]byte(dir))
		return etcd.New(cli, etcd.Options{Prefix: "/test/" + hex.EncodeToString(sum[:8]) + "/", MaxTxnOps: etcdtest.MaxTxnOps})
	})
}

// A write may guard more keys than one transaction may read or compare: the
// store reads them in parts at one etcd revision and compares only the
// revision key, which every commit puts.
func TestManyGuardsInFewOperationsATransaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	storagetest.RunManyGuards(t, func(t *testing.T, dir string) storage.Backend {
		sum := sha256.Sum256([]byte(dir))
		return etcd.New(cli, etcd.Options{Prefix: "/guards/" + hex.EncodeToString(sum[:8]) + "/", MaxTxnOps: 8})
	})
}

// A write that needs more operations than one transaction may hold is
// refused alone, committing nothing of it, whatever writes share its
// batch: those before it and after it commit, at consecutive revisions,
// and their acknowledgements stand.
func TestAWriteTooLargeForATransactionIsRefusedAlone(t *testing.T) {
	c := etcdtest.Start(t, 1)
	const maxTxnOps = 8
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/too-large/", MaxTxnOps: maxTxnOps})
	t.Cleanup(func() { store.Close() })
	grants := func(subject string, n int) authz.ChangeSet {
		cs := authz.ChangeSet{Caller: "test"}
		for i := range n {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant,
				Grant: &authz.Grant{Subject: subject, Role: "viewer", Resource: fmt.Sprintf("doc:%d", i)}})
		}
		return cs
	}
	ctx := context.Background()
	res, err := store.Commit(ctx, []authz.Write{{Set: grants("user:before", 1)}, {Set: grants("user:large", maxTxnOps)}, {Set: grants("user:after", 1)}})
	if err != nil {
		t.Fatalf("Commit: %v; want the large write refused alone", err)
	}
	var tl *authz.TooLargeError
	if !errors.As(res[1].Err, &tl) || tl.Limit != maxTxnOps || res[1].Revision != 0 {
		t.Errorf("the large write's result %+v, want a TooLargeError of limit %d and no revision", res[1], maxTxnOps)
	}
	if res[0].Err != nil || res[2].Err != nil || res[0].Revision == 0 || res[2].Revision != res[0].Revision+1 {
		t.Errorf("the small writes' results %+v and %+v, want consecutive revisions", res[0], res[2])
	}
	sets, err := store.Changes(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, cs := range sets {
		for _, ch := range cs.Changes {
			subjects = append(subjects, ch.Grant.Subject)
		}
	}
	if want := []string{"user:before", "user:after"}; !slices.Equal(subjects, want) {
		t.Errorf("the log holds grants of %v, want %v", subjects, want)
	}
}

// Writes that fit one transaction each in bytes but not together are
// committed in several, all of them; one that does not fit alone is
// refused alone.
func TestWritesAreCommittedWithinTheBytesOfATransaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	const maxTxnBytes = 8 << 10
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/bytes/", MaxTxnBytes: maxTxnBytes})
	t.Cleanup(func() { store.Close() })
	// A grant of a subject of 200 bytes is some 600 bytes of a
	// transaction: its key, its record in the log and their framing.
	grants := func(subject string, n int) authz.ChangeSet {
		cs := authz.ChangeSet{Caller: "test"}
		for i := range n {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant,
				Grant: &authz.Grant{Subject: "user:" + subject + strings.Repeat("x", 200), Role: "viewer", Resource: fmt.Sprintf("doc:%d", i)}})
		}
		return cs
	}
	ws := []authz.Write{{Set: grants("a", 5)}, {Set: grants("large", 20)}, {Set: grants("b", 5)}, {Set: grants("c", 5)}}
	res, err := store.Commit(context.Background(), ws)
	if err != nil {
		t.Fatalf("Commit: %v; want the large write refused alone", err)
	}
	var tl *authz.TooLargeError
	if !errors.As(res[1].Err, &tl) || tl.Limit != maxTxnBytes || tl.Needs <= maxTxnBytes {
		t.Errorf("the large write's result %+v, want a TooLargeError of limit %d", res[1], maxTxnBytes)
	}
	for _, i := range []int{0, 2, 3} {
		if res[i].Err != nil || res[i].Revision == 0 {
			t.Errorf("write %d's result %+v, want it committed", i, res[i])
		}
	}
	if res[2].Revision != res[0].Revision+1 || res[3].Revision != res[2].Revision+1 {
		t.Errorf("revisions %d, %d, %d; want them consecutive", res[0].Revision, res[2].Revision, res[3].Revision)
	}
}

// A store that counts on the cluster's own request limit never sends a
// transaction the cluster refuses, however closely its batches fill one:
// what it counts of a transaction's bytes is never less than what etcd
// receives.
func TestBatchesFillATransactionWithinTheClustersRequestLimit(t *testing.T) {
	const limit = 8 << 10
	c := etcdtest.StartWith(t, 1, etcdtest.Options{MaxRequestBytes: limit})
	store := etcd.New(c.Client(t), etcd.Options{Prefix: "/fill/", MaxTxnBytes: limit, MaxTxnOps: 1000})
	t.Cleanup(func() { store.Close() })
	for size := 1; size < 3000; size = size*3/2 + 1 {
		var ws []authz.Write
		for i := range 30 {
			cs := authz.ChangeSet{Caller: "test", Actor: "user:" + strings.Repeat("a", size%200+1)}
			for j := range 1 + i%3 {
				cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{
					Subject: "user:" + strings.Repeat("s", size%250+1), Role: "viewer", Resource: fmt.Sprintf("doc:%d-%d-%d", size, i, j)}})
			}
			ws = append(ws, authz.Write{Set: cs, Touches: []string{fmt.Sprintf("k%d-%d", size, i), strings.Repeat("t", size%100+1)}})
		}
		res, err := store.Commit(context.Background(), ws)
		if err != nil {
			t.Fatalf("Commit of 30 writes of subjects of %d bytes: %v", size%250+1, err)
		}
		for i, r := range res {
			if r.Err != nil || r.Revision == 0 {
				t.Errorf("write %d of subjects of %d bytes: %+v; want it committed", i, size%250+1, r)
			}
		}
	}
}
