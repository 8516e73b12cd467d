package authz

import (
	"fmt"
	"hash/maphash"
	"testing"
)

// lookupBatch answers as lookup does, key by key: names present, released,
// never seen and empty, in tables with long probe runs.
func TestLookupBatchIsLookup(t *testing.T) {
	n := newNames()
	for i := range 3000 {
		n.intern(fmt.Sprintf("user:u%d", i))
	}
	for i := 0; i < 3000; i += 7 {
		n.release(n.lookup(fmt.Sprintf("user:u%d", i)))
	}
	var keys []string
	for i := range 4000 {
		keys = append(keys, fmt.Sprintf("user:u%d", i))
	}
	keys = append(keys, "", "user:", "user:u1 ")
	ids, hashes := make([]uint32, 64), make([]uint64, 64)
	for at := 0; at < len(keys); at += 64 {
		part := keys[at:min(at+64, len(keys))]
		n.lookupBatch(part, ids, hashes)
		for i, k := range part {
			if want := n.lookup(k); ids[i] != want {
				t.Errorf("lookupBatch(%q) = %d, lookup says %d", k, ids[i], want)
			}
		}
	}
}

// A key whose 32-bit hash is another's is told from it by its bytes.
func TestLookupBatchTellsEqualHashesApart(t *testing.T) {
	n := newNames()
	seen := map[uint32]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		k := fmt.Sprintf("user:%d", i)
		h := uint32(maphash.String(n.seed, k))
		if other, ok := seen[h]; ok {
			a, b = other, k
		}
		seen[h] = k
	}
	n.intern(a)
	ids, hashes := make([]uint32, 2), make([]uint64, 2)
	n.lookupBatch([]string{b, a}, ids, hashes)
	if ids[0] != noName || ids[1] != n.lookup(a) {
		t.Errorf("with %q alone: lookupBatch(%q, %q) = %v, want [%d %d]", a, b, a, ids, noName, n.lookup(a))
	}
	n.intern(b)
	n.lookupBatch([]string{b, a}, ids, hashes)
	if ids[0] != n.lookup(b) || ids[1] != n.lookup(a) || ids[0] == ids[1] {
		t.Errorf("with both: lookupBatch(%q, %q) = %v, want [%d %d]", b, a, ids, n.lookup(b), n.lookup(a))
	}
}
