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
// A slot of the table holds, besides the id, the name's hash and where its
// bytes are: a lookup reads the slot, then the bytes, and nothing else. A
// slot whose hash differs is passed over without reading anything more.
//
// Ids of released names are reused; the bytes they held are reclaimed when
// the waste outgrows the live names (compact). The zero value is not usable:
// call newNames.
type names struct {
	seed   maphash.Seed
	chunks [][]byte // arena; a name never straddles two chunks
	spans  []nameSpan
	table  []nameSlot
	free   []uint32 // released ids, reused first
	live   int
	bytes  int // arena bytes of live names
	waste  int // arena bytes of released names
}

type nameSpan struct {
	chunk uint32
	off   uint32
	n     uint32 // 0 marks a released id
}

// nameSlot is an entry of the table.
type nameSlot struct {
	id   uint32 // id+1; 0 is an empty slot
	hash uint32 // the low bits of the name's hash, which place it
	at   uint32 // chunk<<nameChunkBits | offset of its bytes, or farName
	n    uint32 // its length
}

const (
	nameChunkBits = 20
	nameChunkSize = 1 << nameChunkBits
	noName        = ^uint32(0)
	// farName is a slot's at for a name in a chunk whose number does not
	// fit beside the offset: its bytes are found through its span.
	farName = ^uint32(0)
)

func newNames() *names {
	return &names{seed: maphash.MakeSeed(), table: make([]nameSlot, 64)}
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
	id, _ := t.find(name, h)
	return id
}

// lookupInterned is lookup that also returns the name as name(id) would,
// from the bytes it compared: no further read.
func (t *names) lookupInterned(name string) (uint32, string) {
	if len(name) == 0 {
		return noName, ""
	}
	return t.find(name, maphash.String(t.seed, name))
}

// find returns the id of a non-empty name whose hash is h, and its bytes in
// the arena; noName and "" when it is not there.
func (t *names) find(name string, h uint64) (uint32, string) {
	mask := uint64(len(t.table) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.table[i]
		if s.id == 0 {
			return noName, ""
		}
		if s.hash == uint32(h) && int(s.n) == len(name) {
			if b := t.slotBytes(s); b == name {
				return s.id - 1, b
			}
		}
	}
}

// slotBytes returns the name of a full slot.
func (t *names) slotBytes(s *nameSlot) string {
	if s.at == farName {
		return t.at(&t.spans[s.id-1])
	}
	c := t.chunks[s.at>>nameChunkBits]
	return unsafe.String(&c[s.at&(nameChunkSize-1)], s.n)
}

// slot is the table entry of a live id.
func (t *names) slot(id uint32) nameSlot {
	sp := &t.spans[id]
	at := farName
	if sp.chunk < farName>>nameChunkBits {
		at = sp.chunk<<nameChunkBits | sp.off
	}
	return nameSlot{id: id + 1, at: at, n: sp.n}
}

// lookupBatch sets ids[i] to lookup(keys[i]) for every i, using hashes,
// as long as keys, for scratch. A name's lookup is two reads that wait on
// one another (its slot in the table, its bytes) and miss the processor's
// caches once the table holds a million names; done one name at a time,
// they cost two trips to memory each. Here each read is made for every name
// in a loop of its own, whose iterations do not wait on one another, so
// that the processor has many of them in flight at once. The last loop is
// the plain lookup, over what the first ones brought into the caches. It
// returns what it read of the names, for the caller to keep where the
// compiler cannot tell that no one needs it. It only reads t, so several
// goroutines may call it at once.
func (t *names) lookupBatch(keys []string, ids []uint32, hashes []uint64) (touched byte) {
	mask := uint64(len(t.table) - 1)
	for i, k := range keys {
		if len(k) == 0 {
			ids[i] = 0
			continue
		}
		h := maphash.String(t.seed, k)
		hashes[i] = h
		ids[i] = t.table[h&mask].id
	}
	// The bytes of the slot whose hash matches, along the name's run.
	for i, id := range ids[:len(keys)] {
		h := hashes[i]
		for j := h & mask; id != 0; j = (j + 1) & mask {
			s := &t.table[j]
			if id = s.id; id != 0 && s.hash == uint32(h) {
				if s.n > 0 {
					b := t.slotBytes(s)
					touched ^= b[0] ^ b[len(b)-1]
				}
				break
			}
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
	if n := len(t.free); n > 0 {
		id = t.free[n-1]
		t.free = t.free[:n-1]
		t.spans[id] = sp
	} else {
		id = uint32(len(t.spans))
		t.spans = append(t.spans, sp)
	}
	s := t.slot(id)
	s.hash = uint32(h)
	mask := uint64(len(t.table) - 1)
	i := h & mask
	for t.table[i].id != 0 {
		i = (i + 1) & mask
	}
	t.table[i] = s
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
	mask := uint64(len(t.table) - 1)
	i := t.slotOf(id)
	// Backward-shift deletion keeps every probe chain unbroken without
	// tombstones: move later entries of the run into the hole when their
	// home slot is not between the hole and themselves.
	for j := (i + 1) & mask; t.table[j].id != 0; j = (j + 1) & mask {
		home := t.home(&t.table[j], mask)
		if (j-home)&mask >= (j-i)&mask {
			t.table[i] = t.table[j]
			i = j
		}
	}
	t.table[i] = nameSlot{}
	n := t.spans[id].n
	t.spans[id] = nameSpan{}
	t.free = append(t.free, id)
	t.live--
	t.bytes -= int(n)
	t.waste += int(n)
	if t.waste > nameChunkSize && t.waste > t.bytes {
		t.compact()
	}
}

func (t *names) home(s *nameSlot, mask uint64) uint64 { return uint64(s.hash) & mask }

// slotOf finds where in the table a live id's slot is, by hashing its name
// again.
func (t *names) slotOf(id uint32) uint64 {
	h := maphash.String(t.seed, t.name(id))
	mask := uint64(len(t.table) - 1)
	i := h & mask
	for t.table[i].id != id+1 {
		i = (i + 1) & mask
	}
	return i
}

// grow doubles the table and places every live name in it again.
func (t *names) grow() {
	old := t.table
	t.table = make([]nameSlot, len(old)*2)
	mask := uint64(len(t.table) - 1)
	for _, s := range old {
		if s.id == 0 {
			continue
		}
		i := t.home(&s, mask)
		for t.table[i].id != 0 {
			i = (i + 1) & mask
		}
		t.table[i] = s
	}
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
		*sp = t.store(unsafe.String(&c[sp.off], sp.n))
	}
	t.waste = 0
	for i := range t.table {
		if s := &t.table[i]; s.id != 0 {
			moved := t.slot(s.id - 1)
			moved.hash = s.hash
			*s = moved
		}
	}
}

// maxID is one past the largest id ever handed out: the size arrays indexed
// by id need.
func (t *names) maxID() int { return len(t.spans) }
