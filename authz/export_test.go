package authz

import (
	"context"
	"testing"
	"time"
)

// SetLookupScan makes a lookup page judge at most n candidates until the
// test ends.
func SetLookupScan(t testing.TB, n int) {
	old := lookupScan
	lookupScan = n
	t.Cleanup(func() { lookupScan = old })
}

// AssignWeighs asks whether actor may assign role on resource, as a Grant
// would, and returns how many resources the answer weighed.
func AssignWeighs(x *Index, actor, role, resource string) (int, error) {
	x.view.RLock()
	defer x.view.RUnlock()
	p := &plan{ctx: context.Background(), x: x, by: Author{Actor: actor}, limits: Limits{}.withDefaults(), now: x.now()}
	err := p.mayAssign(role, x.lookupNode(resource), "grant")
	return p.weighed, err
}

// SetFeedPauses makes a lost feed pause first, then at most longest,
// before it is followed again, until the test ends.
func SetFeedPauses(t testing.TB, first, longest time.Duration) {
	oldFirst, oldLongest := feedPause, maxFeedPause
	feedPause, maxFeedPause = first, longest
	t.Cleanup(func() { feedPause, maxFeedPause = oldFirst, oldLongest })
}

// RolesPageWeighs reads a page of ListRoles with assignable_by, as
// ListRolesPage does, and returns how many resources its judgements
// weighed.
func RolesPageWeighs(x *Index, resource, actor string, size int, token string) ([]Role, string, int, error) {
	roles, next, _, weighed, err := x.listRolesPage(resource, actor, size, token)
	return roles, next, weighed, err
}

// PolicyMoveLooks asks, as a policy that moves name under parent does,
// whether the move would leave a grant with no definition of its role, and
// returns how many grants the search looked at.
func PolicyMoveLooks(x *Index, name, parent string) (int, error) {
	return PolicyMovesLook(x, [][2]string{{name, parent}})
}

// PolicyMovesLook is PolicyMoveLooks for a policy that lists each of
// moves, a name and its parent, in order.
func PolicyMovesLook(x *Index, moves [][2]string) (int, error) {
	x.view.RLock()
	defer x.view.RUnlock()
	v := &policyView{x: x, parents: map[string]string{}, children: map[string]map[string]bool{},
		roles: map[[2]string]*Role{}, guard: func(...string) {}}
	var placed []string
	for _, m := range moves {
		v.place(m[0], m[1])
		placed = append(placed, m[0])
	}
	err := x.policyOrphans(v, placed)
	return v.looked, err
}

// PolicyPruneWalks asks, as a policy that prunes roles defined at scope
// does, whether pruning them would leave a grant with no definition of its
// role, and returns how many resources the search walked past.
func PolicyPruneWalks(x *Index, scope string, roles []string) (int, error) {
	x.view.RLock()
	defer x.view.RUnlock()
	v := &policyView{x: x, parents: map[string]string{}, children: map[string]map[string]bool{},
		roles: map[[2]string]*Role{}, guard: func(...string) {}}
	for _, r := range roles {
		v.roles[[2]string{scope, r}] = nil
	}
	err := x.policyOrphans(v, nil)
	return v.walked, err
}

// SetBatchHold makes a CheckBatch look whether it may move to view once it
// has held the lock Check takes for d, calling yields as it looks and moved
// as it moves (see batchYields, batchMoved), until the test ends.
func SetBatchHold(t testing.TB, d time.Duration, yields func(), moved func(waiting bool)) {
	oldHold, oldYields, oldMoved := maxBatchHold, batchYields, batchMoved
	maxBatchHold, batchYields, batchMoved = d, yields, moved
	t.Cleanup(func() { maxBatchHold, batchYields, batchMoved = oldHold, oldYields, oldMoved })
}

// HoldView holds x's view lock, as a long admin read does, until release
// is called.
func HoldView(x *Index) (release func()) {
	x.view.RLock()
	return x.view.RUnlock
}

// ApplyWaitsForMu reports whether an Apply waits for x's mu, which it
// takes once it holds view.
func ApplyWaitsForMu(x *Index) bool {
	if x.mu.TryRLock() {
		x.mu.RUnlock()
		return false
	}
	return true
}

// ApplyWaits reports whether an Apply holds x's view lock or waits for it.
func ApplyWaits(x *Index) bool {
	if x.view.TryRLock() {
		x.view.RUnlock()
		return false
	}
	return true
}
