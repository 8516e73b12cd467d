package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

var codeOf = map[authz.Code]codes.Code{
	authz.Invalid:            codes.InvalidArgument,
	authz.NotFound:           codes.NotFound,
	authz.FailedPrecondition: codes.FailedPrecondition,
	authz.ResourceExhausted:  codes.ResourceExhausted,
	authz.PermissionDenied:   codes.PermissionDenied,
	authz.Unimplemented:      codes.Unimplemented,
	authz.Unavailable:        codes.Unavailable,
	authz.Aborted:            codes.Aborted,
}

// toCheckError is the error of one check of a batch.
func toCheckError(i int, err error) *usherv1.CheckError {
	st, _ := status.FromError(toStatus(err))
	out := &usherv1.CheckError{Index: uint32(i), Code: int32(st.Code()), Message: st.Message()}
	var e *authz.Error
	if errors.As(err, &e) {
		out.Field, out.Value = e.Field, e.Value
	}
	return out
}

// toStatus maps an error from the engine to the status a client sees.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *authz.Error
	if errors.As(err, &e) {
		return status.Error(codeOf[e.Code], e.Error())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
