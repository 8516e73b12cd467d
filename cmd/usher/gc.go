package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// heapHeadroom is how far the heap may grow past what is live before the
// collector runs, for a large index: a server with ten million grants holds
// about a gibibyte live, and Go's default (twice what is live) would let it
// reach two. The index keeps its names and grants in arrays without
// pointers, which the collector marks without reading, so running it more
// often costs little.
const heapHeadroom = 32 << 20

// minGCPercent bounds how often the collector runs on the largest indexes:
// at least a quarter of what is live is allocated between two runs.
const minGCPercent = 25

// gcPercent is the GOGC that lets the heap grow heapHeadroom past live
// bytes, and no less than minGCPercent nor more than Go's default of 100.
func gcPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	return int(max(minGCPercent, min(100, heapHeadroom*100/live)))
}

// boundHeapGrowth sets the collector's target from the heap live after the
// index is loaded (see gcPercent), unless the operator chose one with
// GOGC or GOMEMLIMIT.
func boundHeapGrowth(logger *slog.Logger) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := sample[0].Value.Uint64()
	pct := gcPercent(live)
	debug.SetGCPercent(pct)
	logger.Info("garbage collection paced", "live_heap_mib", live>>20, "gogc", pct)
}
