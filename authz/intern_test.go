package authz

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
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

// Random interns and releases, with compactions and growth among them,
// answer as a map does: every live name is found under its id, with its
// bytes; released and never-seen names are not found; the table holds
// exactly the live names, each in the run that starts at its home slot.
func TestNamesAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := newNames()
	want := map[string]uint32{}
	var held []string
	name := func() string {
		// Short names from a small pool, so that some return after their
		// release, and now and then a long one, so that the waste soon
		// outgrows a chunk and the arena is compacted.
		if r.IntN(50) == 0 {
			return fmt.Sprintf("long:%d:%s", r.IntN(4000), strings.Repeat("x", 1000+r.IntN(5000)))
		}
		return fmt.Sprintf("user:u%d", r.IntN(4000))
	}
	compactions := 0
	for step := range 60000 {
		if len(held) > 0 && r.IntN(100) < 45 {
			i := r.IntN(len(held))
			k := held[i]
			held[i] = held[len(held)-1]
			held = held[:len(held)-1]
			waste := n.waste
			n.release(want[k])
			delete(want, k)
			if n.waste < waste {
				compactions++
			}
		} else {
			k := name()
			id, added := n.intern(k)
			if old, ok := want[k]; ok {
				if added || id != old {
					t.Fatalf("step %d: intern(%q) = %d, %v; want %d, false", step, k, id, added, old)
				}
			} else {
				if !added {
					t.Fatalf("step %d: intern(%q) = %d, false; want a new id", step, k, id)
				}
				want[k] = id
				held = append(held, k)
			}
		}
		if step%997 == 0 || step == 59999 {
			checkNames(t, n, want)
			if got := n.lookup(name() + "?"); got != noName {
				t.Fatalf("step %d: a name never interned has id %d", step, got)
			}
		}
	}
	if compactions == 0 {
		t.Error("the arena was never compacted")
	}
}

func checkNames(t *testing.T, n *names, want map[string]uint32) {
	t.Helper()
	if n.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", n.Len(), len(want))
	}
	ids := map[uint32]bool{}
	for k, id := range want {
		if ids[id] {
			t.Fatalf("id %d given twice", id)
		}
		ids[id] = true
		if got := n.lookup(k); got != id {
			t.Fatalf("lookup(%.20q) = %d, want %d", k, got, id)
		}
		if got, b := n.lookupInterned(k); got != id || b != k {
			t.Fatalf("lookupInterned(%.20q) = %d, %.20q", k, got, b)
		}
		if got := n.name(id); got != k {
			t.Fatalf("name(%d) = %.20q, want %.20q", id, got, k)
		}
	}
	mask := uint64(len(n.table) - 1)
	full := 0
	for i, s := range n.table {
		if s.id == 0 {
			continue
		}
		full++
		k := n.name(s.id - 1)
		h := maphash.String(n.seed, k)
		if s.hash != uint32(h) || n.slotBytes(&s) != k {
			t.Fatalf("slot %d of id %d holds hash %x and %.20q; the name is %.20q, hash %x", i, s.id-1, s.hash, n.slotBytes(&s), k, uint32(h))
		}
		for j := h & mask; j != uint64(i); j = (j + 1) & mask {
			if n.table[j].id == 0 {
				t.Fatalf("slot %d of %.20q is past an empty slot of its run", i, k)
			}
		}
	}
	if full != len(want) {
		t.Fatalf("%d full slots for %d names", full, len(want))
	}
}

// A name in a chunk whose number does not fit in a slot is found through
// its span.
func TestNamesInFarChunks(t *testing.T) {
	n := newNames()
	near, _ := n.intern("user:near")
	// Chunks up to the last one a slot can address, left empty: the next
	// name goes into a chunk of its own past them.
	for len(n.chunks) < int(farName>>nameChunkBits) {
		n.chunks = append(n.chunks, nil)
	}
	want := map[string]uint32{"user:near": near}
	for i := range 100 {
		k := fmt.Sprintf("user:far%d", i)
		id, _ := n.intern(k)
		want[k] = id
		if s := n.slot(id); s.at != farName {
			t.Fatalf("%s in chunk %d has at %x, want farName", k, n.spans[id].chunk, s.at)
		}
	}
	checkNames(t, n, want)
	n.release(want["user:far7"])
	delete(want, "user:far7")
	checkNames(t, n, want)
}
