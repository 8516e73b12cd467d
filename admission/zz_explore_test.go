package admission_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

func TestExploreLeaveCall(t *testing.T) {
	w := newWorld(t)
	const n = 20000
	for i := range n {
		s := fmt.Sprintf("user:u%06d", i)
		if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: s, Role: "member", Resource: "call:acme:1"}); err != nil {
			t.Fatal(err)
		}
		w.wantJoin(s, "call:acme:1", admission.Admitted)
	}
	t0 := time.Now()
	const k = 200
	for range k {
		if err := w.m.LeaveCall(w.ctx, "user:absent", "call:acme:1"); authz.CodeOf(err) != authz.NotFound {
			t.Fatal(err)
		}
	}
	t.Logf("LeaveCall of an absent subject in a call of %d: %v each", n, time.Since(t0)/k)
	t0 = time.Now()
	for range k {
		w.m.KeepAlive(w.ctx, "nope")
	}
	t.Logf("KeepAlive unknown: %v each", time.Since(t0)/k)
}
