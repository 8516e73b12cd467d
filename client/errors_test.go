package client_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/client"
)

func TestFromErrorReadsAnyStatus(t *testing.T) {
	st, err := status.New(codes.OutOfRange, "after_revision \"3\": compacted").WithDetails(&errdetails.ErrorInfo{
		Reason: client.ReasonCompacted, Domain: client.Domain,
		Metadata: map[string]string{"field": "after_revision", "value": "3", "latest_revision": "9"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := fmt.Errorf("following changes: %w", st.Err())
	e, ok := client.FromError(wrapped)
	if !ok || e.Reason != client.ReasonCompacted || e.Field != "after_revision" || e.Value != "3" || e.Metadata["latest_revision"] != "9" {
		t.Fatalf("FromError(a wrapped status) = %+v, %v", e, ok)
	}
	if !errors.Is(e, client.ErrCompacted) || errors.Is(e, client.ErrFutureRevision) {
		t.Errorf("a COMPACTED error: errors.Is ErrCompacted %v, ErrFutureRevision %v; want true, false",
			errors.Is(e, client.ErrCompacted), errors.Is(e, client.ErrFutureRevision))
	}
	if client.Reason(wrapped) != client.ReasonCompacted {
		t.Errorf("Reason = %q", client.Reason(wrapped))
	}

	// gRPC's own statuses carry no details: the code alone.
	e, ok = client.FromError(status.Error(codes.Unimplemented, "unknown method"))
	if !ok || e.Code != codes.Unimplemented || e.Reason != "" || e.Metadata != nil {
		t.Errorf("FromError(a status without details) = %+v, %v", e, ok)
	}
	for _, err := range []error{nil, errors.New("not a status"), status.Error(codes.OK, "")} {
		if e, ok := client.FromError(err); ok {
			t.Errorf("FromError(%v) = %+v, want nothing", err, e)
		}
	}
}
