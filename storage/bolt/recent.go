package bolt

import "github.com/usher-authz/usher/authz"

// changeRing keeps the latest committed change sets, at most size of them,
// oldest first. It is a ring rather than a slice trimmed at its front, so
// that once it is full a commit replaces the oldest set in place: copying
// the whole window at every commit made each write allocate hundreds of
// kilobytes the garbage collector then had to scan and free, which every
// Check served meanwhile paid for.
type changeRing struct {
	size  int
	sets  []authz.ChangeSet // allocated at the first push, size long
	start int               // index of the oldest
	n     int
}

func newChangeRing(size int) changeRing { return changeRing{size: size} }

// len is how many change sets the ring holds.
func (r *changeRing) len() int { return r.n }

// at returns the i-th oldest change set; i must be below len.
func (r *changeRing) at(i int) *authz.ChangeSet {
	return &r.sets[(r.start+i)%len(r.sets)]
}

// push adds cs as the latest change set, forgetting the oldest when the ring
// is full.
func (r *changeRing) push(cs authz.ChangeSet) {
	if r.sets == nil {
		r.sets = make([]authz.ChangeSet, r.size)
	}
	if r.n == len(r.sets) {
		r.sets[r.start] = cs
		r.start = (r.start + 1) % len(r.sets)
		return
	}
	r.sets[(r.start+r.n)%len(r.sets)] = cs
	r.n++
}

// dropThrough forgets the change sets at or below rev.
func (r *changeRing) dropThrough(rev authz.Revision) {
	for r.n > 0 && r.at(0).Revision <= rev {
		*r.at(0) = authz.ChangeSet{}
		r.start = (r.start + 1) % len(r.sets)
		r.n--
	}
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
