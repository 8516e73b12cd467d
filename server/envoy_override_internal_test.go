package server

import (
	"runtime"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// A check caller may send Envoy's Check an override header or a query of
// megabytes, naming a method thousands of times: settling the method must
// cost little beside the request itself, not a record per name (some 40
// bytes for each "P," of a header).
func TestEnvoyMethodOfManyOverridesAllocatesLittle(t *testing.T) {
	const n = 1 << 18 // within the 4 MiB a message may have
	for _, mode := range []string{MethodOverrideDeny, MethodOverrideHonor} {
		e, err := NewEnvoyService(EnvoyConfig{
			Subject:        EnvoySubject{Header: "x-user-id", Prefix: "user:"},
			Rules:          []EnvoyRule{{Method: "POST", Path: "/calls/{type}/{id}/join", Resource: "call:{type}:{id}", Permission: "join-call"}},
			MethodOverride: mode,
		})
		if err != nil {
			t.Fatalf("NewEnvoyService: %v", err)
		}
		for _, tc := range []struct {
			name    string
			headers map[string]string
			query   string
		}{
			{"a header naming the method a quarter of a million times", map[string]string{"x-http-method-override": strings.Repeat("post, ", n)}, ""},
			{"a header naming another method a quarter of a million times", map[string]string{"x-http-method-override": strings.Repeat("P,", n)}, ""},
			{"a query naming the method a quarter of a million times", nil, strings.Repeat("_method=POST&", n)},
		} {
			t.Run(mode+": "+tc.name, func(t *testing.T) {
				http := &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/calls/meeting/7/join", Headers: tc.headers}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, _ = e.h.method(http, tc.query)
				runtime.ReadMemStats(&after)
				if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
					t.Errorf("method allocated %d bytes", n)
				}
			})
		}
	}
}
