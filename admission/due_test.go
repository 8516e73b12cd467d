package admission

import (
	"maps"
	"math/rand/v2"
	"testing"
)

type entry struct {
	due
	name int
}

func (e *entry) slot() *due { return &e.due }

// Random sets, drops and takes on a dueQueue give what a plain map of what
// is queued gives: each entry at most once, taken in order of when it is
// due; and the records it keeps stay within twice the entries queued, one
// current record for each.
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
			case 0, 1:
				q.set(e, at)
				want[e.name] = at
			case 2:
				q.drop(e)
				delete(want, e.name)
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
			if len(q.recs) > 2*len(want)+spareRecords {
				t.Fatalf("seed %d step %d: %d records for %d entries", seed, step, len(q.recs), len(want))
			}
			current := map[int]int64{}
			for i, r := range q.recs {
				if i > 0 && q.recs[(i-1)/2].at > r.at {
					t.Fatalf("seed %d step %d: record %d due %d under one due %d", seed, step, i, r.at, q.recs[(i-1)/2].at)
				}
				if r.current() {
					if _, twice := current[r.t.name]; twice {
						t.Fatalf("seed %d step %d: entry %d has two current records", seed, step, r.t.name)
					}
					current[r.t.name] = r.at
				}
			}
			if !maps.Equal(current, want) {
				t.Fatalf("seed %d step %d: current records %v, want %v", seed, step, current, want)
			}
		}
	}
}

// A lease renewed again and again, as KeepAlive renews it, leaves records
// behind that the queue sweeps out: a million renewals of a thousand
// entries keep at most twice as many records as entries.
func TestDueQueueSweepsWhatItLeftBehind(t *testing.T) {
	var q dueQueue[*entry]
	entries := make([]*entry, 1000)
	for i := range entries {
		entries[i] = &entry{name: i}
	}
	most := 0
	for i := range 1_000_000 {
		q.set(entries[i%len(entries)], int64(i))
		most = max(most, len(q.recs))
	}
	if most > 2*len(entries)+spareRecords {
		t.Errorf("the queue held %d records for %d entries", most, len(entries))
	}
	for i := range len(entries) {
		got, ok := q.next(1 << 62)
		if want := entries[(1_000_000-len(entries)+i)%len(entries)]; !ok || got != want {
			t.Fatalf("next = %v, %v; want entry %d", got, ok, want.name)
		}
	}
	if _, ok := q.next(1 << 62); ok || q.Len() != 0 {
		t.Errorf("the queue has %d entries left after all were taken", q.Len())
	}
	// Entries dropped, as sessions end with no new one joining, leave no
	// more records than that either.
	for i, e := range entries {
		q.set(e, int64(i))
	}
	for _, e := range entries {
		q.drop(e)
		if len(q.recs) > 2*q.Len()+spareRecords {
			t.Fatalf("%d records kept for %d entries after drops", len(q.recs), q.Len())
		}
	}
}
