package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the domain of the google.rpc.ErrorInfo Usher's refusals carry.
const Domain = "usher.v1"

// Error is a call's failure as Usher describes it: the status code and
// message, and what the status's details say to programs. Every error a
// Client's calls return is one (errors.As(err, &e) with e an *Error), and
// it is still a gRPC status: status.Code(err) and status.FromError(err)
// work on it as before.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is the ErrorInfo's reason, one of the Reason constants (or
	// one added since: treat an unknown one as Code alone); empty when
	// the status carries no ErrorInfo, as gRPC's own statuses do not.
	Reason string
	Domain string
	// Field and Value are the offending request field and its value, as
	// the message quotes them; empty when the refusal names no field.
	Field, Value string
	// Metadata is the ErrorInfo's metadata: field and value, and what the
	// refusal is about (subject, role, permission, resource, scope,
	// limit, rule, latest_revision...).
	Metadata map[string]string
	// Violations are the BadRequest, PreconditionFailure and QuotaFailure
	// details, one entry per violation.
	Violations []Violation

	status *status.Status
}

// ViolationKind says which detail a Violation comes from.
type ViolationKind int

const (
	// BadRequest: a google.rpc.BadRequest field violation, of
	// InvalidArgument.
	BadRequest ViolationKind = iota + 1
	// PreconditionFailure: a google.rpc.PreconditionFailure violation, of
	// FailedPrecondition.
	PreconditionFailure
	// QuotaFailure: a google.rpc.QuotaFailure violation, of
	// ResourceExhausted.
	QuotaFailure
)

func (k ViolationKind) String() string {
	switch k {
	case BadRequest:
		return "BadRequest"
	case PreconditionFailure:
		return "PreconditionFailure"
	case QuotaFailure:
		return "QuotaFailure"
	}
	return fmt.Sprintf("ViolationKind(%d)", int(k))
}

// Violation is one violation of a BadRequest, PreconditionFailure or
// QuotaFailure detail, in one shape.
type Violation struct {
	Kind ViolationKind
	// Field is the request field (BadRequest).
	Field string
	// Subject is the value it is about (PreconditionFailure, QuotaFailure).
	Subject string
	// Type is the reason: BadRequest's reason, PreconditionFailure's
	// type, QuotaFailure's quota_id.
	Type        string
	Description string
	// Limit is the quota's value (QuotaFailure), when it has one.
	Limit int64
}

// Error reads as the gRPC status it came from.
func (e *Error) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", e.Code, e.Message)
}

// GRPCStatus is the status the error came from, for status.FromError and
// status.Code.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Is makes errors.Is(err, ErrCompacted) and the other sentinels hold for
// a refusal of that reason, and errors.Is(err, context.Canceled) or
// context.DeadlineExceeded for a call that ended so.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *sentinel:
		return e.Reason == t.reason && e.Domain == Domain
	}
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// sentinel is an error to compare with errors.Is: it matches an *Error of
// its reason.
type sentinel struct{ reason string }

func (s *sentinel) Error() string { return "usher: " + s.reason }

// Sentinels for the refusals a caller most often acts on; errors.Is(err,
// ErrX) holds when err is an *Error of that reason. Reason(err) gives any
// other.
var (
	// ErrCompacted: a Watch's revision is older than the change log
	// reaches; reload what you keep and watch after the revision you read
	// it at (see Reload).
	ErrCompacted error = &sentinel{ReasonCompacted}
	// ErrFutureRevision: a Watch's revision (or a ListChanges's, refused
	// FailedPrecondition) is past the latest one, as after restoring an
	// older backup; reload as for ErrCompacted.
	ErrFutureRevision error = &sentinel{ReasonFutureRevision}
	// ErrSessionNotFound: the session or knock has ended (left, ejected,
	// its lease lapsed).
	ErrSessionNotFound error = &sentinel{ReasonSessionNotFound}
	// ErrQuotaExceeded: a resource would exceed a quota of its scope.
	ErrQuotaExceeded error = &sentinel{ReasonQuotaExceeded}
	// ErrRevisionNotReached: the server did not reach a read's
	// MinRevision before the call's deadline.
	ErrRevisionNotReached error = &sentinel{ReasonRevisionNotReached}
	// ErrPageTokenExpired: what a page token pointed at changed; list
	// again from the first page.
	ErrPageTokenExpired error = &sentinel{ReasonPageTokenExpired}
	// ErrConflicts: a write kept conflicting with concurrent ones; try it
	// again.
	ErrConflicts error = &sentinel{ReasonAbortedConflicts}
)

// FromError returns err as an *Error when it is or wraps one, or is a gRPC
// status other than OK; else nil and false.
func FromError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return nil, false
	}
	return fromStatus(st), true
}

// fromStatus reads a status's details.
func fromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if e.Reason != "" {
				continue // the first one is Usher's
			}
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
			e.Field, e.Value = e.Metadata["field"], e.Metadata["value"]
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.Violations = append(e.Violations, Violation{Kind: BadRequest, Field: v.GetField(), Type: v.GetReason(), Description: v.GetDescription()})
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				e.Violations = append(e.Violations, Violation{Kind: PreconditionFailure, Subject: v.GetSubject(), Type: v.GetType(), Description: v.GetDescription()})
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				e.Violations = append(e.Violations, Violation{Kind: QuotaFailure, Subject: v.GetSubject(), Type: v.GetQuotaId(),
					Description: v.GetDescription(), Limit: v.GetQuotaValue()})
			}
		}
	}
	return e
}

// convert makes a call's error an *Error where it is a status.
func convert(err error) error {
	if e, ok := FromError(err); ok {
		return e
	}
	return err
}

// Reason is the ErrorInfo reason of err, or "" when it has none.
func Reason(err error) string {
	if e, ok := FromError(err); ok {
		return e.Reason
	}
	return ""
}

// IsDenied says whether err is a PermissionDenied refusal: a delegation
// rule refused a write made for an actor (Reason says which), or the
// caller's kind may not call the method (ReasonCallerKind).
func IsDenied(err error) bool {
	return status.Code(err) == codes.PermissionDenied
}

// IsUnauthenticated says whether the server did not know the caller's
// token or certificate.
func IsUnauthenticated(err error) bool {
	return status.Code(err) == codes.Unauthenticated
}

// transient says whether a call that failed with err may succeed if made
// again: the server was out of reach, restarting or busy.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Unknown:
		return true
	case codes.ResourceExhausted:
		// Usher's limits that lift with time; not a message too large.
		switch Reason(err) {
		case ReasonWatchLimit, ReasonCallerWatchLimit, ReasonWatchFellBehind, ReasonSessionLimit, ReasonCallerSessionLimit,
			ReasonInitialRate, ReasonCallerInitialRate, ReasonCallerInitialLimit, ReasonSendBudget:
			return true
		}
	case codes.FailedPrecondition:
		// A node yet to apply what the call needs (a session admitted
		// through another): it catches up.
		return Reason(err) == ReasonRevisionNotReached
	}
	return false
}

// retryAfter is how long the server said to wait before trying again (its
// retry_after), or 0.
func retryAfter(err error) time.Duration {
	e, ok := FromError(err)
	if !ok {
		return 0
	}
	d, _ := time.ParseDuration(e.Metadata["retry_after"])
	return max(d, 0)
}
