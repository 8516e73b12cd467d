package server_test

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// TestAMalformedCheckIsRefusedOnEveryPath proves that Check refuses a
// malformed name whether it asks the index first (no min_revision, short
// names) or checks the shape first (a min_revision, or names too long to
// hash).
func TestAMalformedCheckIsRefusedOnEveryPath(t *testing.T) {
	f := newServer(t)
	rev := f.world()
	long := "call:" + strings.Repeat("x", 2000)
	for _, c := range []struct {
		name  string
		req   *usherv1.CheckRequest
		field string
	}{
		{"a malformed resource asked of the index first", &usherv1.CheckRequest{Subject: "user:ann", Permission: "join-call", Resource: "call:"}, "resource"},
		{"a malformed resource with a min_revision", &usherv1.CheckRequest{Subject: "user:ann", Permission: "join-call", Resource: "call:", MinRevision: rev}, "resource"},
		{"a malformed subject with a min_revision", &usherv1.CheckRequest{Subject: "ann", Permission: "join-call", Resource: stream42, MinRevision: rev}, "subject"},
		{"a resource too long to ask the index", &usherv1.CheckRequest{Subject: "user:ann", Permission: "join-call", Resource: long}, "resource"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.authz.Check(f.ctx(), c.req)
			st := wantCode(t, err, codes.InvalidArgument)
			var field string
			for _, d := range st.Details() {
				if v, ok := d.(*errdetails.BadRequest); ok && len(v.GetFieldViolations()) == 1 {
					field = v.GetFieldViolations()[0].GetField()
				}
			}
			if field != c.field {
				t.Errorf("refused %q with BadRequest field %q, want %q", st.Message(), field, c.field)
			}
		})
	}
}

// TestPutAdmissionWithoutARuleNamesTheField proves that a PutAdmission
// that carries no rule is refused, naming the missing field.
func TestPutAdmissionWithoutARuleNamesTheField(t *testing.T) {
	f := newServer(t)
	_, err := f.admin.PutAdmission(f.ctx(), &usherv1.PutAdmissionRequest{})
	wantDetails(t, wantCode(t, err, codes.InvalidArgument), refusal{reason: "INVALID_FIELD", field: "admission"})
}
