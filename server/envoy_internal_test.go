package server

import (
	"runtime"
	"strings"
	"testing"
)

// A check caller may send Envoy's Check a path of megabytes: one of more
// segments than any rule has matches none, and finding that out must cost
// little beside the request itself, not a string header per segment (16
// times the path's length for a path of "a/").
func TestEnvoyRouteOfAPathOfManySegmentsAllocatesLittle(t *testing.T) {
	e, err := NewEnvoyService(EnvoyConfig{
		Subject: EnvoySubject{Header: "x-user-id", Prefix: "user:"},
		Rules: []EnvoyRule{
			{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
			{Method: "POST", Path: "/calls/{type}/{id}/join", Resource: "call:{type}:{id}", Permission: "join-call"},
		},
	})
	if err != nil {
		t.Fatalf("NewEnvoyService: %v", err)
	}
	for _, tc := range []struct {
		name string
		path string
	}{
		{"a path of a million segments", "/" + strings.Repeat("a/", 1<<20)},
		{"a path of a million escaped segments", "/" + strings.Repeat("%61/", 1<<20)},
		{"a path one segment longer than the longest rule's", "/calls/meeting/7/join/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := e.h.route("GET", tc.path)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("route matched %.40q…", tc.path)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
				t.Errorf("route allocated %d bytes for a path of %d", n, len(tc.path))
			}
		})
	}
	// A path as long as the longest rule's is still matched.
	if _, vars, err := e.h.route("POST", "/calls/meeting/7/join"); err != nil || vars["id"] != "7" {
		t.Errorf("route(POST /calls/meeting/7/join) = %v, %v; want a match with id 7", vars, err)
	}
}
