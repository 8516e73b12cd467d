package admission

import (
	"math/rand/v2"
	"testing"
)

type entry struct {
	due
	name int
}

func (e *entry) slot() *due { return &e.due }

// Random sets, drops, hand-overs and takes on a dueQueue give what a plain
// map of what is queued gives: each entry at most once, taken in order of
// when it is due, and the queue's record of where each entry is right.
func TestDueQueueAgainstAMap(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var q dueQueue[*entry]
		entries := make([]*entry, 40)
		for i := range entries {
			entries[i] = &entry{name: i}
		}
		want := map[int]int64{} // queued entry -> when due
		for step := range 300 {
			e := entries[rng.IntN(len(entries))]
			at := rng.Int64N(1000)
			switch op := rng.IntN(4); op {
			case 0:
				q.set(e, at)
				want[e.name] = at
			case 1:
				q.drop(e)
				delete(want, e.name)
			case 2:
				u := entries[rng.IntN(len(entries))]
				if _, queued := want[u.name]; queued || u == e {
					continue
				}
				q.handOver(e, u, at)
				delete(want, e.name)
				want[u.name] = at
			case 3:
				now := rng.Int64N(1000)
				for got, ok := q.next(now); ok; got, ok = q.next(now) {
					at, queued := want[got.name]
					if !queued || at > now {
						t.Fatalf("seed %d step %d: next(%d) took entry %d (queued %v, due %d)", seed, step, now, got.name, queued, at)
					}
					for name, other := range want {
						if other < at {
							t.Fatalf("seed %d step %d: next took entry %d due %d before entry %d due %d", seed, step, got.name, at, name, other)
						}
					}
					delete(want, got.name)
				}
				for name, at := range want {
					if at <= now {
						t.Fatalf("seed %d step %d: entry %d due %d left after next(%d)", seed, step, name, at, now)
					}
				}
			}
			if q.Len() != len(want) {
				t.Fatalf("seed %d step %d: %d queued, want %d", seed, step, q.Len(), len(want))
			}
			for i, e := range q {
				if !e.queued || e.index != i || e.at != want[e.name] {
					t.Fatalf("seed %d step %d: entry %d at %d says queued %v index %d due %d; want due %d", seed, step, e.name, i, e.queued, e.index, e.at, want[e.name])
				}
			}
		}
	}
}
