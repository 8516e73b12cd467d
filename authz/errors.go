package authz

import (
	"errors"
	"fmt"
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
	// still has children, a role whose holders are full.
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
