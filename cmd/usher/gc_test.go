package main

import "testing"

// The collector may let the heap grow 32 MiB past what is live, within
// GOGC 25 to 100: small heaps keep Go's default, a ten-million-grant index
// grows by a quarter.
func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{8 << 20, 100},
		{32 << 20, 100},
		{64 << 20, 50},
		{110 << 20, 29},
		{128 << 20, 25},
		{1 << 30, 25},
	} {
		if got := gcPercent(tc.live); got != tc.want {
			t.Errorf("gcPercent(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}
