package authz

import "testing"

// SetLookupScan makes a lookup page judge at most n candidates until the
// test ends.
func SetLookupScan(t testing.TB, n int) {
	old := lookupScan
	lookupScan = n
	t.Cleanup(func() { lookupScan = old })
}
