package authz

import (
	"hash/maphash"
	"unsafe"
)

// names interns strings as small integers in arrays that hold no pointers,
// so that the garbage collector has nothing to scan however many subjects or
// resources the index holds. A name's bytes live in fixed-size chunks of an
// arena (growing never copies what is there), its id indexes spans, and an
// open-addressing table with linear probing maps a hash to ids.
//
// Ids of released names are reused; the bytes they held are reclaimed when
// the waste outgrows the live names (compact). The zero value is not usable:
// call newNames.
type names struct {
	seed   maphash.Seed
	chunks [][]byte // arena; a name never straddles two chunks
	spans  []nameSpan
	table  []uint32 // id+1; 0 is an empty slot
	free   []uint32 // released ids, reused first
	live   int
	bytes  int // arena bytes of live names
	waste  int // arena bytes of released names
}

type nameSpan struct {
	chunk uint32
	off   uint32
	n     uint32 // 0 marks a released id
	hash  uint32
}

const (
	nameChunkSize = 1 << 20
	noName        = ^uint32(0)
)

func newNames() *names {
	return &names{seed: maphash.MakeSeed(), table: make([]uint32, 64)}
}

// Len is the number of live names.
func (t *names) Len() int { return t.live }

// lookup returns the id of name, or noName.
func (t *names) lookup(name string) uint32 {
	if len(name) == 0 {
		return noName
	}
	return t.lookupHashed(name, maphash.String(t.seed, name))
}

// lookupHashed is lookup of a non-empty name whose hash is h.
func (t *names) lookupHashed(name string, h uint64) uint32 {
	mask := uint64(len(t.table) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		id := t.table[i]
		if id == 0 {
			return noName
		}
		id--
		if sp := &t.spans[id]; sp.hash == uint32(h) && t.at(sp) == name {
			return id
		}
	}
}

// lookupBatch sets ids[i] to lookup(keys[i]) for every i, using hashes,
// as long as keys, for scratch. A name's lookup is three reads that wait on
// one another (its slot in the table, its span, its bytes) and miss the
// processor's caches once the table holds a million names; done one name at
// a time, they cost three trips to memory each. Here each read is made for
// every name in a loop of its own, whose iterations do not wait on one
// another, so that the processor has many of them in flight at once. The
// last loop is the plain lookup, over what the first ones brought into the
// caches. It returns what it read of the names, for the caller to keep
// where the compiler cannot tell that no one needs it. It only reads t, so
// several goroutines may call it at once.
func (t *names) lookupBatch(keys []string, ids []uint32, hashes []uint64) (touched byte) {
	mask := uint64(len(t.table) - 1)
	for i, k := range keys {
		if len(k) == 0 {
			ids[i] = 0
			continue
		}
		h := maphash.String(t.seed, k)
		hashes[i] = h
		ids[i] = t.table[h&mask]
	}
	// The span whose hash matches, along the name's run of slots.
	for i, id := range ids[:len(keys)] {
		h := hashes[i]
		for j := h & mask; id != 0; j = (j + 1) & mask {
			if id = t.table[j]; id != 0 && t.spans[id-1].hash == uint32(h) {
				break
			}
		}
		ids[i] = id
	}
	for _, id := range ids[:len(keys)] {
		if id == 0 {
			continue
		}
		if sp := &t.spans[id-1]; sp.n > 0 {
			c := t.chunks[sp.chunk]
			touched |= c[sp.off] ^ c[sp.off+sp.n-1]
		}
	}
	for i, k := range keys {
		if len(k) == 0 {
			ids[i] = noName
			continue
		}
		ids[i] = t.lookupHashed(k, hashes[i])
	}
	return touched
}

// name returns the name of a live id. The string shares the arena's memory,
// which is written only past its end and never reused, so the string stays
// valid and unchanged; keeping it keeps its chunk alive.
func (t *names) name(id uint32) string { return t.at(&t.spans[id]) }

func (t *names) at(sp *nameSpan) string {
	c := t.chunks[sp.chunk]
	return unsafe.String(&c[sp.off], sp.n)
}

// intern returns name's id, adding it if needed; added reports whether it
// was new.
func (t *names) intern(name string) (id uint32, added bool) {
	if id := t.lookup(name); id != noName {
		return id, false
	}
	if (t.live+1)*2 > len(t.table) {
		t.grow()
	}
	h := maphash.String(t.seed, name)
	sp := t.store(name)
	sp.hash = uint32(h)
	if n := len(t.free); n > 0 {
		id = t.free[n-1]
		t.free = t.free[:n-1]
		t.spans[id] = sp
	} else {
		id = uint32(len(t.spans))
		t.spans = append(t.spans, sp)
	}
	mask := uint64(len(t.table) - 1)
	i := h & mask
	for t.table[i] != 0 {
		i = (i + 1) & mask
	}
	t.table[i] = id + 1
	t.live++
	t.bytes += len(name)
	return id, true
}

// store copies name into the arena.
func (t *names) store(name string) nameSpan {
	last := len(t.chunks) - 1
	if last < 0 || len(t.chunks[last])+len(name) > cap(t.chunks[last]) {
		t.chunks = append(t.chunks, make([]byte, 0, max(nameChunkSize, len(name))))
		last++
	}
	c := t.chunks[last]
	off := len(c)
	t.chunks[last] = append(c, name...)
	return nameSpan{chunk: uint32(last), off: uint32(off), n: uint32(len(name))}
}

// release forgets a live id; its number is reused by a later intern.
func (t *names) release(id uint32) {
	sp := t.spans[id]
	mask := uint64(len(t.table) - 1)
	i := uint64(sp.hash) & mask
	for t.table[i] != id+1 {
		i = (i + 1) & mask
	}
	// Backward-shift deletion keeps every probe chain unbroken without
	// tombstones: move later entries of the run into the hole when their
	// home slot is not between the hole and themselves.
	for j := (i + 1) & mask; t.table[j] != 0; j = (j + 1) & mask {
		home := uint64(t.spans[t.table[j]-1].hash) & mask
		if (j-home)&mask >= (j-i)&mask {
			t.table[i] = t.table[j]
			i = j
		}
	}
	t.table[i] = 0
	t.spans[id] = nameSpan{}
	t.free = append(t.free, id)
	t.live--
	t.bytes -= int(sp.n)
	t.waste += int(sp.n)
	if t.waste > nameChunkSize && t.waste > t.bytes {
		t.compact()
	}
}

// grow doubles the table and places every live id again.
func (t *names) grow() {
	table := make([]uint32, len(t.table)*2)
	mask := uint64(len(table) - 1)
	for id := range t.spans {
		sp := &t.spans[id]
		if sp.n == 0 {
			continue
		}
		i := uint64(sp.hash) & mask
		for table[i] != 0 {
			i = (i + 1) & mask
		}
		table[i] = uint32(id) + 1
	}
	t.table = table
}

// compact copies the live names into fresh chunks, dropping the bytes of
// released ones. Ids do not change.
func (t *names) compact() {
	old := t.chunks
	t.chunks = nil
	for id := range t.spans {
		sp := &t.spans[id]
		if sp.n == 0 {
			continue
		}
		c := old[sp.chunk]
		moved := t.store(unsafe.String(&c[sp.off], sp.n))
		moved.hash = sp.hash
		*sp = moved
	}
	t.waste = 0
}

// maxID is one past the largest id ever handed out: the size arrays indexed
// by id need.
func (t *names) maxID() int { return len(t.spans) }
