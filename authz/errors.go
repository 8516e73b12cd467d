package authz

import (
	"errors"
	"fmt"
	"strconv"
)

// Code classifies an Error; the server maps each to one gRPC status code.
type Code int

// The kinds of refusal DESIGN.md's error table distinguishes.
const (
	// Invalid: a malformed name, an undeclared permission, a bad policy.
	Invalid Code = iota + 1
	// NotFound: on a write, a resource that is not registered or a role not
	// visible at the scope.
	NotFound
	// FailedPrecondition: a move that would form a cycle, a resource that
	// still has children, a role whose holders are full, an admission of a
	// subject a block keeps out.
	FailedPrecondition
	// ResourceExhausted: a quota would be exceeded.
	ResourceExhausted
	// PermissionDenied: a delegation rule refuses the actor.
	PermissionDenied
	// Unimplemented: a request asks for something this build does not do.
	Unimplemented
	// Unavailable: the backend could not commit the write.
	Unavailable
	// Aborted: the write kept conflicting with concurrent writes.
	Aborted
	// AlreadyExists: a registration that may only register names a
	// resource registered already.
	AlreadyExists
)

// Error is a refusal that names the offending field and value.
type Error struct {
	Code  Code
	Field string // the request field, e.g. "resource" or "role.permissions[1]"
	Value string
	// Reason completes the sentence `field "value": reason`.
	Reason string
	Err    error // the cause, for Unavailable
	// Rule names the rule that refused, for machine-readable details: a
	// delegation rule ("no escalation"), a missing permission, a limit.
	Rule string
	// Meta carries what the refusal is about, e.g. subject, permission and
	// resource.
	Meta map[string]string
	// Kind tells apart refusals that share a Code, e.g. a cycle from a
	// resource with children; empty leaves it to KindOf.
	Kind Kind
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

// WithField returns a copy of e whose field is prefixed, e.g. "checks[2]." in
// a batch.
func (e *Error) WithField(prefix string) *Error {
	c := *e
	c.Field = prefix + c.Field
	return &c
}

// as sets e's Kind, where it is built: errorf(...).as(KindCycle).
func (e *Error) as(k Kind) *Error {
	e.Kind = k
	return e
}

// limited puts the limit e is refused at in its metadata, where a status
// carries it (ErrorInfo "limit", QuotaFailure quota_value).
func (e *Error) limited(n int) *Error {
	if e.Meta == nil {
		e.Meta = map[string]string{}
	}
	e.Meta["limit"] = strconv.Itoa(n)
	return e
}

func errorf(code Code, field, value, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// CodeOf returns the Code of err if it is or wraps an *Error, else 0.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// Kind is a refusal's stable reason, in UPPER_SNAKE_CASE: what a program
// switches on where a person reads the message. The server sends it as the
// reason of a google.rpc.ErrorInfo.
type Kind string

// The kinds of refusal. Each belongs to one Code; the first of each group
// is that Code's kind when nothing tells it apart.
const (
	// Invalid.
	KindInvalidField         Kind = "INVALID_FIELD"
	KindUndeclaredPermission Kind = "UNDECLARED_PERMISSION"
	KindPermissionInUse      Kind = "PERMISSION_IN_USE"

	// NotFound.
	KindNotFound              Kind = "NOT_FOUND"
	KindResourceNotFound      Kind = "RESOURCE_NOT_FOUND"
	KindRoleNotFound          Kind = "ROLE_NOT_FOUND"
	KindGrantNotFound         Kind = "GRANT_NOT_FOUND"
	KindBlockNotFound         Kind = "BLOCK_NOT_FOUND"
	KindQuotaNotFound         Kind = "QUOTA_NOT_FOUND"
	KindAdmissionRuleNotFound Kind = "ADMISSION_RULE_NOT_FOUND"
	KindSessionNotFound       Kind = "SESSION_NOT_FOUND"
	KindKnockNotFound         Kind = "KNOCK_NOT_FOUND"

	// FailedPrecondition.
	KindFailedPrecondition Kind = "FAILED_PRECONDITION"
	KindCycle              Kind = "CYCLE"
	KindHasChildren        Kind = "HAS_CHILDREN"
	KindMaxHolders         Kind = "MAX_HOLDERS"
	KindNotBindable        Kind = "NOT_BINDABLE"
	KindRoleInUse          Kind = "ROLE_IN_USE"
	KindCreatorRole        Kind = "CREATOR_ROLE_NOT_GRANTABLE"
	KindRevisionNotReached Kind = "REVISION_NOT_REACHED"
	KindPageTokenExpired   Kind = "PAGE_TOKEN_EXPIRED"
	KindFutureRevision     Kind = "FUTURE_REVISION" // a revision past the latest committed one
	KindNoAdmissionRule    Kind = "NO_ADMISSION_RULE"
	KindNoLobby            Kind = "NO_LOBBY"
	KindSubjectBlocked     Kind = "SUBJECT_BLOCKED"

	// ResourceExhausted.
	KindLimitExceeded      Kind = "LIMIT_EXCEEDED"
	KindQuotaExceeded      Kind = "QUOTA_EXCEEDED"
	KindMaxDepth           Kind = "MAX_DEPTH" // the tree would be deeper than MaxDepth
	KindSessionLimit       Kind = "SESSION_LIMIT"
	KindCallerSessionLimit Kind = "CALLER_SESSION_LIMIT" // the caller's share of the sessions
	KindWatchLimit         Kind = "WATCH_LIMIT"
	KindWatchFellBehind    Kind = "WATCH_FELL_BEHIND"

	// PermissionDenied: one kind per delegation rule (see KindOf).
	KindPermissionDenied  Kind = "PERMISSION_DENIED"
	KindNoEscalation      Kind = "NO_ESCALATION"
	KindNoOverreach       Kind = "NO_OVERREACH"
	KindNoSelfService     Kind = "NO_SELF_SERVICE"
	KindMissingPermission Kind = "MISSING_PERMISSION"
	KindNotAssignable     Kind = "NOT_ASSIGNABLE"
	KindPlatformOnly      Kind = "PLATFORM_ONLY"

	// Unimplemented.
	KindUnimplemented Kind = "UNIMPLEMENTED"

	// Unavailable.
	KindUnavailable             Kind = "UNAVAILABLE"
	KindUnavailableStorage      Kind = "UNAVAILABLE_STORAGE"
	KindUnavailableSessionStore Kind = "UNAVAILABLE_SESSION_STORE"
	KindShuttingDown            Kind = "SHUTTING_DOWN"

	// Aborted.
	KindAbortedConflicts Kind = "ABORTED_CONFLICTS"

	// AlreadyExists.
	KindResourceExists Kind = "RESOURCE_EXISTS"
)

// codeKinds are the kinds of each Code when an Error sets none.
var codeKinds = map[Code]Kind{
	Invalid:            KindInvalidField,
	NotFound:           KindNotFound,
	FailedPrecondition: KindFailedPrecondition,
	ResourceExhausted:  KindLimitExceeded,
	PermissionDenied:   KindPermissionDenied,
	Unimplemented:      KindUnimplemented,
	Unavailable:        KindUnavailable,
	Aborted:            KindAbortedConflicts,
	AlreadyExists:      KindResourceExists,
}

// ruleKinds are the kinds of refusals by a delegation rule.
var ruleKinds = map[string]Kind{
	RuleNoEscalation:      KindNoEscalation,
	RuleNoOverreach:       KindNoOverreach,
	RuleNoSelfService:     KindNoSelfService,
	RuleMissingPermission: KindMissingPermission,
	RuleNotAssignable:     KindNotAssignable,
	RulePlatformOnly:      KindPlatformOnly,
}

// KindOf returns the Kind of err if it is or wraps an *Error, else "": the
// Error's own, else its Rule's, else its Code's.
func KindOf(err error) Kind {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	if e.Kind != "" {
		return e.Kind
	}
	if k, ok := ruleKinds[e.Rule]; ok {
		return k
	}
	return codeKinds[e.Code]
}
