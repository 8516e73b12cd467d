package admission

import "container/heap"

// due is where an entry of a dueQueue is, and when it is due.
type due struct {
	at     int64 // unix nanoseconds
	index  int   // in the queue, when queued
	queued bool
}

// dueQueue orders entries by when they are due, each at most once, and
// knows where each is, to move or drop it: MemoryStore's leases and the
// view's next looks at a session. The methods other than set, drop and next
// are container/heap's.
type dueQueue[T interface{ slot() *due }] []T

func (q dueQueue[T]) Len() int           { return len(q) }
func (q dueQueue[T]) Less(i, j int) bool { return q[i].slot().at < q[j].slot().at }
func (q dueQueue[T]) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].slot().index, q[j].slot().index = i, j
}
func (q *dueQueue[T]) Push(x any) {
	t := x.(T)
	t.slot().index = len(*q)
	*q = append(*q, t)
}
func (q *dueQueue[T]) Pop() any {
	old := *q
	t := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	*q = old[:len(old)-1]
	return t
}

// set makes t due at at: added, or moved if it is queued.
func (q *dueQueue[T]) set(t T, at int64) {
	d := t.slot()
	d.at = at
	if d.queued {
		heap.Fix(q, d.index)
		return
	}
	d.queued = true
	heap.Push(q, t)
}

// handOver puts u, not queued, in t's place in the queue, due at at: a
// drop and a set in one move.
func (q *dueQueue[T]) handOver(t, u T, at int64) {
	d, e := t.slot(), u.slot()
	if !d.queued {
		q.set(u, at)
		return
	}
	e.at, e.index, e.queued = at, d.index, true
	d.queued = false
	(*q)[e.index] = u
	heap.Fix(q, e.index)
}

// drop takes t out of the queue, if it is there.
func (q *dueQueue[T]) drop(t T) {
	if d := t.slot(); d.queued {
		heap.Remove(q, d.index)
		d.queued = false
	}
}

// next takes out the first entry, if it is due by now.
func (q *dueQueue[T]) next(now int64) (T, bool) {
	if len(*q) == 0 || (*q)[0].slot().at > now {
		var zero T
		return zero, false
	}
	t := heap.Pop(q).(T)
	t.slot().queued = false
	return t, true
}
