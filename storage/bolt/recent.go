package bolt

import "github.com/usher-authz/usher/authz"

// changeRing keeps the latest committed change sets, at most size of them
// and of at most maxBytes encoded (but always the latest), oldest first.
// It is a ring rather than a slice trimmed at its front, so that once it
// is full a commit replaces the oldest set in place: copying
// the whole window at every commit made each write allocate hundreds of
// kilobytes the garbage collector then had to scan and free, which every
// Check served meanwhile paid for.
type changeRing struct {
	size     int
	maxBytes int
	sets     []authz.ChangeSet // allocated at the first push, size long
	bytes    []int             // each set's size encoded, beside it
	held     int               // the sum of bytes of the sets held
	start    int               // index of the oldest
	n        int
}

func newChangeRing(size, maxBytes int) changeRing { return changeRing{size: size, maxBytes: maxBytes} }

// len is how many change sets the ring holds.
func (r *changeRing) len() int { return r.n }

// at returns the i-th oldest change set; i must be below len.
func (r *changeRing) at(i int) *authz.ChangeSet {
	return &r.sets[(r.start+i)%len(r.sets)]
}

// push adds cs, of size bytes encoded, as the latest change set,
// forgetting the oldest when the ring is full, and as many as it takes to
// hold maxBytes or less besides cs.
func (r *changeRing) push(cs authz.ChangeSet, size int) {
	if r.sets == nil {
		r.sets = make([]authz.ChangeSet, r.size)
		r.bytes = make([]int, r.size)
	}
	if r.n == len(r.sets) {
		r.dropOldest()
	}
	i := (r.start + r.n) % len(r.sets)
	r.sets[i], r.bytes[i] = cs, size
	r.held += size
	r.n++
	for r.n > 1 && r.held > r.maxBytes {
		r.dropOldest()
	}
}

// dropThrough forgets the change sets at or below rev.
func (r *changeRing) dropThrough(rev authz.Revision) {
	for r.n > 0 && r.at(0).Revision <= rev {
		r.dropOldest()
	}
}

func (r *changeRing) dropOldest() {
	r.sets[r.start] = authz.ChangeSet{}
	r.held -= r.bytes[r.start]
	r.bytes[r.start] = 0
	r.start = (r.start + 1) % len(r.sets)
	r.n--
}

// copyRange returns a copy of the change sets from the i-th oldest up to,
// not including, the j-th; nil when there are none.
func (r *changeRing) copyRange(i, j int) []authz.ChangeSet {
	if i >= j {
		return nil
	}
	out := make([]authz.ChangeSet, 0, j-i)
	for k := i; k < j; k++ {
		out = append(out, *r.at(k))
	}
	return out
}
