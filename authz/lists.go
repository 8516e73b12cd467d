package authz

import "slices"

// lists keeps, for each key (a subject's or a resource's id), a short list of
// records in arrays that hold no pointers: the garbage collector never scans
// them, and a million lists cost the heap a few large objects rather than a
// million small ones.
//
// A list lives in a span of one of 64 shard pools, chosen by key. A list that
// outgrows its span moves to a span twice as large at the end of its pool,
// leaving a hole; a pool whose holes outgrow its live records is compacted.
// Growing or compacting a pool copies one sixty-fourth of the records at
// most, so no single change holds the index's lock for long.
//
// R must contain no pointers. Callers keep each list in the order they need
// and find positions themselves (get, then a search).
type lists[R any] struct {
	heads  []listSpan // by key
	shards [listShards]listPool[R]
}

type listSpan struct {
	off, n, cap uint32
}

type listPool[R any] struct {
	recs  []R
	holes int
}

const listShards = 64

// get returns key's list. The slice aliases the pool: it is valid until the
// next change to any list and must not be appended to.
func (l *lists[R]) get(key uint32) []R {
	if int(key) >= len(l.heads) {
		return nil
	}
	h := l.heads[key]
	return l.shards[key%listShards].recs[h.off : h.off+h.n : h.off+h.n]
}

// count is len(get(key)).
func (l *lists[R]) count(key uint32) int {
	if int(key) >= len(l.heads) {
		return 0
	}
	return int(l.heads[key].n)
}

// insert puts r at position i of key's list.
func (l *lists[R]) insert(key uint32, i int, r R) {
	for int(key) >= len(l.heads) {
		l.heads = append(l.heads, listSpan{})
	}
	h := &l.heads[key]
	p := &l.shards[key%listShards]
	if h.n == h.cap {
		l.move(key, max(2*h.cap, 1))
		h = &l.heads[key]
	}
	recs := p.recs[h.off : h.off+h.n+1]
	copy(recs[i+1:], recs[i:h.n])
	recs[i] = r
	h.n++
}

// appendList gives key, whose list must be empty, the records recs in a
// span exactly as large, at the end of its pool: a builder that has all of a
// key's records at once places them with one copy, where inserting them one
// at a time would move the list each time it doubled.
func (l *lists[R]) appendList(key uint32, recs []R) {
	if len(recs) == 0 {
		return
	}
	for int(key) >= len(l.heads) {
		l.heads = append(l.heads, listSpan{})
	}
	h := &l.heads[key]
	p := &l.shards[key%listShards]
	p.holes += int(h.cap)
	off := uint32(len(p.recs))
	p.recs = append(p.recs, recs...)
	*h = listSpan{off: off, n: uint32(len(recs)), cap: uint32(len(recs))}
}

// layout makes every list, which must all be empty, an empty span of
// capacity counts[key], each pool exactly as large as its spans together,
// for push to fill.
func (l *lists[R]) layout(counts []uint32) {
	l.heads = make([]listSpan, len(counts))
	var sizes [listShards]uint32
	for key, n := range counts {
		s := uint32(key) % listShards
		l.heads[key] = listSpan{off: sizes[s], cap: n}
		sizes[s] += n
	}
	for s := range l.shards {
		l.shards[s] = listPool[R]{recs: make([]R, sizes[s])}
	}
}

// push appends r to key's list, which must have room for it: the lists are
// laid out for what is pushed.
func (l *lists[R]) push(key uint32, r R) {
	h := &l.heads[key]
	l.shards[key%listShards].recs[h.off+h.n] = r
	h.n++
}

// set replaces the record at position i of key's list.
func (l *lists[R]) set(key uint32, i int, r R) {
	h := l.heads[key]
	l.shards[key%listShards].recs[h.off+uint32(i)] = r
}

// remove deletes position i of key's list; an emptied list gives its span
// back.
func (l *lists[R]) remove(key uint32, i int) {
	h := &l.heads[key]
	p := &l.shards[key%listShards]
	recs := p.recs[h.off : h.off+h.n]
	copy(recs[i:], recs[i+1:])
	h.n--
	if h.n == 0 {
		p.holes += int(h.cap)
		*h = listSpan{}
		l.maybeCompact(key % listShards)
	}
}

// move gives key's list a span of capacity c at the end of its pool.
func (l *lists[R]) move(key uint32, c uint32) {
	h := &l.heads[key]
	p := &l.shards[key%listShards]
	off := uint32(len(p.recs))
	// The slots past the pool's length were never written (compaction
	// starts a new array), so growing into them needs no clearing.
	p.recs = slices.Grow(p.recs, int(c))[:len(p.recs)+int(c)]
	copy(p.recs[off:], p.recs[h.off:h.off+h.n])
	p.holes += int(h.cap)
	h.off, h.cap = off, c
	l.maybeCompact(key % listShards)
}

// maybeCompact rewrites a pool whose holes outnumber its other records,
// list by list, into a pool with none.
func (l *lists[R]) maybeCompact(shard uint32) {
	p := &l.shards[shard]
	if p.holes < 1024 || p.holes*2 < len(p.recs) {
		return
	}
	recs := make([]R, 0, len(p.recs)-p.holes)
	for key := shard; int(key) < len(l.heads); key += listShards {
		h := &l.heads[key]
		if h.cap == 0 {
			continue
		}
		off := uint32(len(recs))
		recs = append(recs, p.recs[h.off:h.off+h.cap]...)
		h.off = off
	}
	p.recs, p.holes = recs, 0
}

// size is the number of record slots held, live or not, for memory
// accounting.
func (l *lists[R]) size() int {
	n := 0
	for i := range l.shards {
		n += cap(l.shards[i].recs)
	}
	return n
}
