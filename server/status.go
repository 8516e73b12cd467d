package server

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

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
	authz.AlreadyExists:      codes.AlreadyExists,
}

// errorDomain is the domain of the google.rpc.ErrorInfo details Usher sends.
const errorDomain = "usher.v1"

// The reasons of the refusals the server makes itself, beside the
// engine's kinds (authz.Kind): authentication, callers' kinds, Watch, the
// shares of the stream pools.
const (
	reasonNoCredentials          = "NO_CREDENTIALS"
	reasonMalformedAuthorization = "MALFORMED_AUTHORIZATION"
	reasonBadToken               = "BAD_TOKEN"
	reasonUnknownCertificate     = "UNKNOWN_CERTIFICATE"
	reasonExpiredCertificate     = "EXPIRED_CERTIFICATE"
	reasonUntrustedCertificate   = "UNTRUSTED_CERTIFICATE"
	reasonCallerKind             = "CALLER_KIND"
	reasonCompacted              = "COMPACTED"
	reasonFutureRevision         = "FUTURE_REVISION"
	reasonNoDataFile             = "NO_DATA_FILE"
	reasonInternal               = "INTERNAL"
	reasonCancelled              = "CANCELLED"
	reasonDeadlineExceeded       = "DEADLINE_EXCEEDED"
	// A stream refused because its caller, or for a health Watch its
	// connection, holds its share of the pool; the pool's own refusal is
	// WATCH_LIMIT.
	reasonCallerWatchLimit     = "CALLER_WATCH_LIMIT"
	reasonConnectionWatchLimit = "CONNECTION_WATCH_LIMIT"
	// A WatchCall refused because its caller's streams hold its share of
	// the events of initial states not yet sent, or have started whole
	// initial states faster than its share of MaxInitialRate; or because
	// the server's have started them faster than MaxInitialRate.
	reasonCallerInitialLimit = "CALLER_INITIAL_LIMIT"
	reasonCallerInitialRate  = "CALLER_INITIAL_RATE"
	reasonInitialRate        = "INITIAL_RATE"
	// A Backup refused because MaxBackups are in progress, or because the
	// copy it takes would leave the data file's disk too little room.
	reasonBackupLimit  = "BACKUP_LIMIT"
	reasonBackupNoRoom = "BACKUP_NO_ROOM"
	// A read refused its wait for min_revision because the reads waiting
	// hold MaxWaitingBytes, or its caller's share of it.
	reasonWaitLimit       = "WAIT_LIMIT"
	reasonCallerWaitLimit = "CALLER_WAIT_LIMIT"
)

// details are what a refusal says to programs: a reason, the offending
// field and value, and what else it is about.
type details struct {
	reason       string
	field, value string // both left out when field is ""
	meta         map[string]string
	// why completes `field "value": why`; it describes the violation in
	// BadRequest, PreconditionFailure and QuotaFailure.
	why string
}

// refuse is the status of code with msg and d as details: an ErrorInfo
// always, and BadRequest for INVALID_ARGUMENT, PreconditionFailure for
// FAILED_PRECONDITION or QuotaFailure for RESOURCE_EXHAUSTED.
func refuse(code codes.Code, msg string, d details) error {
	md := make(map[string]string, len(d.meta)+2)
	for k, v := range d.meta {
		md[k] = detailText(v)
	}
	value := detailText(d.value)
	if d.field != "" {
		md["field"], md["value"] = d.field, value
	}
	why := strings.ToValidUTF8(d.why, "\uFFFD")
	out := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: d.reason, Domain: errorDomain, Metadata: md}}
	switch code {
	case codes.InvalidArgument:
		out = append(out, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: d.field, Description: why, Reason: d.reason},
		}})
	case codes.FailedPrecondition:
		out = append(out, &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
			{Type: d.reason, Subject: value, Description: why},
		}})
	case codes.ResourceExhausted:
		v := &errdetails.QuotaFailure_Violation{Subject: value, Description: why, QuotaId: d.reason}
		if n, err := strconv.ParseInt(d.meta["limit"], 10, 64); err == nil {
			v.QuotaValue = n
		}
		out = append(out, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{v}})
	}
	st, err := status.New(code, msg).WithDetails(out...)
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// detailText is a value made fit for a detail: valid UTF-8, which
// protobuf strings must be, and no longer than a message quotes a value.
// (A status whose details do not marshal loses them all.)
func detailText(s string) string {
	return clip(strings.ToValidUTF8(s, "\uFFFD"))
}

// detailsOf are the details of an engine's refusal: its Kind as the
// reason, its field, value and Meta, and its Rule.
func detailsOf(e *authz.Error) details {
	d := details{reason: string(authz.KindOf(e)), field: e.Field, value: e.Value, why: e.Reason, meta: e.Meta}
	if e.Rule != "" {
		d.meta = maps.Clone(e.Meta)
		if d.meta == nil {
			d.meta = map[string]string{}
		}
		d.meta["rule"] = e.Rule
	}
	return d
}

// toCheckError is the error of one check of a batch.
func toCheckError(i int, err error) *usherv1.CheckError {
	st, _ := status.FromError(toStatus(err))
	out := &usherv1.CheckError{Index: uint32(i), Code: int32(st.Code()), Message: st.Message()}
	var e *authz.Error
	if errors.As(err, &e) {
		out.Field, out.Value, out.Reason = e.Field, e.Value, string(authz.KindOf(e))
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
		if len(e.Value) > maxEchoedValue {
			// Quoted cut in the message as in the details: a page token
			// may be 4 KiB.
			c := *e
			c.Value = clip(e.Value)
			e = &c
		}
		return refuse(codeOf[e.Code], e.Error(), detailsOf(e))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		st := status.FromContextError(err)
		reason := reasonCancelled
		if st.Code() == codes.DeadlineExceeded {
			reason = reasonDeadlineExceeded
		}
		return refuse(st.Code(), st.Message(), details{reason: reason})
	}
	return refuse(codes.Internal, err.Error(), details{reason: reasonInternal})
}
