package admission_test

import (
	"runtime"
	"testing"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/bench"
)

// A node keeps its live sessions in memory, so what each holds bounds how
// many it can keep, and what the collector has to mark beside the index:
// 3,000 sessions in the platform's 1,000 calls, each subject joining its
// call three times (a re-join replaces the session), hold at most maxBytes and maxObjects a session,
// the store's, the view's and the endings remembered for KeepAlive and for
// streams that resume (each replaced session's, two a session here) all
// counted.
func TestSessionsHoldLittleMemory(t *testing.T) {
	const maxBytes, maxObjects = 1350, 6.5
	m, joins := platform(t, bench.Shape{Accounts: 2, WorkspacesPerAccount: 5, CallTypesPerSpace: 1, CallsPerType: 100, Users: 10_000, Grants: 20_000}, 3_000)
	heap := func() runtime.MemStats {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms
	}
	before := heap()
	for round := range 3 {
		for i := range joins {
			j := joins[(i*7919+round)%len(joins)]
			if r, err := m.Join(t.Context(), "", j.Subject, j.Call, 0); err != nil || r.Outcome != admission.Admitted {
				t.Fatalf("Join(%s, %s) = %+v, %v", j.Subject, j.Call, r, err)
			}
		}
	}
	after := heap()
	if c := m.Counts(); c.Sessions != len(joins) {
		t.Fatalf("%d sessions live, want %d", c.Sessions, len(joins))
	}
	n := float64(len(joins))
	bytes, objects := float64(after.HeapAlloc)-float64(before.HeapAlloc), float64(after.HeapObjects)-float64(before.HeapObjects)
	if bytes/n > maxBytes || objects/n > maxObjects {
		t.Errorf("each of %d sessions holds %.0f bytes in %.2f objects; want at most %d bytes in %.1f objects", len(joins), bytes/n, objects/n, maxBytes, maxObjects)
	}
	t.Logf("each of %d sessions holds %.0f bytes in %.2f objects", len(joins), bytes/n, objects/n)
}
