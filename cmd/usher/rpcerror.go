package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// describeError says what went wrong: for a gRPC status its code, message
// and each detail on a line of its own (the ErrorInfo's reason and
// metadata, the field of a BadRequest, ...), for scripts to grep and people
// to read, in what the error wraps it in; any other error as it is.
func describeError(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return err.Error()
	}
	st := se.GRPCStatus()
	text := fmt.Sprintf("%s: %s", st.Code(), st.Message())
	if outer, inner := err.Error(), st.Err().Error(); outer != inner {
		text = strings.Replace(outer, inner, text, 1)
	}
	var b strings.Builder
	b.WriteString(text)
	for _, d := range st.Details() {
		b.WriteString("\n  ")
		b.WriteString(describeDetail(d))
	}
	return b.String()
}

func describeDetail(d any) string {
	switch d := d.(type) {
	case *errdetails.ErrorInfo:
		s := fmt.Sprintf("reason %s (domain %s)", d.GetReason(), d.GetDomain())
		keys := make([]string, 0, len(d.GetMetadata()))
		for k := range d.GetMetadata() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			s += fmt.Sprintf(" %s=%q", k, d.GetMetadata()[k])
		}
		return s
	case *errdetails.BadRequest:
		var parts []string
		for _, v := range d.GetFieldViolations() {
			parts = append(parts, fmt.Sprintf("bad request: field %s: %s", v.GetField(), v.GetDescription()))
		}
		return strings.Join(parts, "\n  ")
	case *errdetails.PreconditionFailure:
		var parts []string
		for _, v := range d.GetViolations() {
			parts = append(parts, fmt.Sprintf("precondition failure: %s %q: %s", v.GetType(), v.GetSubject(), v.GetDescription()))
		}
		return strings.Join(parts, "\n  ")
	case *errdetails.QuotaFailure:
		var parts []string
		for _, v := range d.GetViolations() {
			parts = append(parts, fmt.Sprintf("quota failure: %q: %s", v.GetSubject(), v.GetDescription()))
		}
		return strings.Join(parts, "\n  ")
	case proto.Message:
		raw, _ := protojson.Marshal(d)
		return fmt.Sprintf("%s %s", d.ProtoReflect().Descriptor().FullName(), raw)
	case error:
		return "detail: " + d.Error()
	}
	return fmt.Sprint(d)
}
