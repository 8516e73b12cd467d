package authz

import (
	"context"
	"testing"
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
