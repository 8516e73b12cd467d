package admission_test

import (
	"testing"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/storetest"
)

// TestMemoryStore runs the store conformance suite against the store of one
// node.
func TestMemoryStore(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T, b storetest.Bounds) admission.Store {
			return admission.NewMemoryStore(admission.MemoryOptions{MaxSessions: b.MaxSessions, MaxKnocks: b.MaxKnocks, CallerShare: b.CallerShare})
		},
	})
}
