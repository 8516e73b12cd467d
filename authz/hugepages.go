package authz

import "unsafe"

// The arrays a check reads (the names' tables, spans and bytes, the nodes,
// the grant lists) are read at random: once they hold a million entries,
// nearly every read is to a page the processor's address cache does not
// hold, and most of a check's time goes to finding pages rather than
// reading them. Backed by 2 MiB pages instead of 4 KiB ones, the same
// arrays take 512 times fewer entries of that cache. Go's heap asks the
// kernel for no huge pages, and on most machines the kernel gives them
// only where asked (transparent huge pages set to madvise), so the index
// asks for its own arrays, once they are large enough for it to matter,
// each time one of them moves.

// hugeFloor is how many bytes the index's arrays must hold together before
// it asks for huge pages.
var hugeFloor uintptr = 16 << 20

// hugeArrays records where the index's arrays were when it last asked for
// huge pages, to ask again only for those that moved. It holds addresses,
// not pointers, so that it keeps no array alive.
type hugeArrays struct {
	at, next []arrayAt
}

type arrayAt struct{ addr, n uintptr }

// hugeArray is an array's memory. The pointer keeps it alive until the
// kernel is done with it.
type hugeArray struct {
	p unsafe.Pointer
	n uintptr
}

func arrayOf[E any](s []E) hugeArray {
	var e E
	return hugeArray{unsafe.Pointer(unsafe.SliceData(s)), uintptr(cap(s)) * unsafe.Sizeof(e)}
}

// eachArray calls f with each of the index's large pointer-free arrays, in
// an order that changes only when one of them moves or a chunk of names is
// added: the chunks come last, each names' in the order it added them.
func (x *Index) eachArray(f func(hugeArray)) {
	for _, t := range [...]*names{x.res, x.subj} {
		f(arrayOf(t.table))
		f(arrayOf(t.spans))
	}
	f(arrayOf(x.nodes))
	f(arrayOf(x.bySubject.heads))
	f(arrayOf(x.byResource.heads))
	for i := range x.bySubject.shards {
		f(arrayOf(x.bySubject.shards[i].recs))
		f(arrayOf(x.byResource.shards[i].recs))
	}
	for _, t := range [...]*names{x.res, x.subj} {
		for _, c := range t.chunks {
			f(arrayOf(c))
		}
	}
}

// moved returns the arrays of x that moved since the last call, or none
// while they are too small together. Call it with x locked.
func (h *hugeArrays) moved(x *Index) []hugeArray {
	var total uintptr
	x.eachArray(func(a hugeArray) { total += a.n })
	if total < hugeFloor {
		return nil
	}
	next := h.next[:0]
	var moved []hugeArray
	x.eachArray(func(a hugeArray) {
		at := arrayAt{uintptr(a.p), a.n}
		if i := len(next); a.n > 0 && (i >= len(h.at) || h.at[i] != at) {
			moved = append(moved, a)
		}
		next = append(next, at)
	})
	h.at, h.next = next, h.at
	return moved
}

// collapseAll asks for huge pages under each of arrays. The memory stays
// what it was; the kernel copies it into huge pages, and readers and
// writers of it may go on meanwhile, so x need not be locked.
func collapseAll(arrays []hugeArray) {
	for _, a := range arrays {
		_ = collapseArray(a)
	}
}

// collapseArray is collapse, but where a test records the calls.
var collapseArray = collapse
