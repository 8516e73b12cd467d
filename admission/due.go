package admission

import "math"

// due is an entry's standing in a dueQueue: whether it is queued, when it
// is due, and which of the queue's records of it is the current one.
type due struct {
	at     int64 // unix nanoseconds
	gen    uint32
	queued bool
}

// dueQueue orders entries by when they are due, each at most once:
// MemoryStore's leases and the view's next looks at a session. It is a
// heap of records that carry their time, so ordering them reads no entry.
// Moving or dropping an entry leaves its old record where it is, to be
// skipped when it comes up, rather than searched for: a lease renewed to
// the latest time, as most are, goes in at the end in one step. Records
// left behind are swept out once they outnumber the entries queued, which
// bounds the heap to about twice the entries.
type dueQueue[T interface{ slot() *due }] struct {
	recs   []dueRecord[T]
	queued int
}

// dueRecord is t due at at, current while t's gen is gen and t is queued.
type dueRecord[T interface{ slot() *due }] struct {
	at  int64
	gen uint32
	t   T
}

func (r *dueRecord[T]) current() bool {
	d := r.t.slot()
	return d.queued && d.gen == r.gen
}

// spareRecords is how many records left behind a queue keeps beyond as
// many as it has entries before it sweeps them out.
const spareRecords = 64

// Len is how many entries are queued.
func (q *dueQueue[T]) Len() int { return q.queued }

// first is when the first record is due, or math.MaxInt64 for none: no
// entry is due before it, though the record may be one left behind.
func (q *dueQueue[T]) first() int64 {
	if len(q.recs) == 0 {
		return math.MaxInt64
	}
	return q.recs[0].at
}

// set makes t due at at: added, or moved if it is queued.
func (q *dueQueue[T]) set(t T, at int64) {
	d := t.slot()
	if d.queued && d.at == at {
		return
	}
	if !d.queued {
		d.queued = true
		q.queued++
	}
	d.at = at
	d.gen++
	q.recs = append(q.recs, dueRecord[T]{at: at, gen: d.gen, t: t})
	q.up(len(q.recs) - 1)
	q.trim()
}

// trim sweeps out the records left behind once they outnumber the entries
// queued.
func (q *dueQueue[T]) trim() {
	if len(q.recs) > 2*q.queued+spareRecords {
		q.sweep()
	}
}

// drop takes t out of the queue, if it is there.
func (q *dueQueue[T]) drop(t T) {
	if d := t.slot(); d.queued {
		d.queued = false
		q.queued--
		q.trim()
	}
}

// next takes out the first entry, if it is due by now.
func (q *dueQueue[T]) next(now int64) (T, bool) {
	for len(q.recs) > 0 && q.recs[0].at <= now {
		r := q.pop()
		if r.current() {
			r.t.slot().queued = false
			q.queued--
			return r.t, true
		}
	}
	var zero T
	return zero, false
}

// sweep drops the records that are no longer current and orders the rest
// again.
func (q *dueQueue[T]) sweep() {
	kept := q.recs[:0]
	for _, r := range q.recs {
		if r.current() {
			kept = append(kept, r)
		}
	}
	clear(q.recs[len(kept):])
	q.recs = kept
	if cap(q.recs) > 4*len(q.recs)+spareRecords {
		q.recs = append([]dueRecord[T](nil), q.recs...)
	}
	for i := len(q.recs)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q *dueQueue[T]) pop() dueRecord[T] {
	last := len(q.recs) - 1
	r := q.recs[0]
	q.recs[0] = q.recs[last]
	q.recs[last] = dueRecord[T]{}
	q.recs = q.recs[:last]
	q.down(0)
	return r
}

func (q *dueQueue[T]) up(i int) {
	r := q.recs[i]
	for i > 0 {
		parent := (i - 1) / 2
		if q.recs[parent].at <= r.at {
			break
		}
		q.recs[i] = q.recs[parent]
		i = parent
	}
	q.recs[i] = r
}

func (q *dueQueue[T]) down(i int) {
	n := len(q.recs)
	if i >= n {
		return
	}
	r := q.recs[i]
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if right := child + 1; right < n && q.recs[right].at < q.recs[child].at {
			child = right
		}
		if r.at <= q.recs[child].at {
			break
		}
		q.recs[i] = q.recs[child]
		i = child
	}
	q.recs[i] = r
}
