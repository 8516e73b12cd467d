package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// refusal is what a test expects a status's details to say.
type refusal struct {
	reason       string
	field, value string            // "" expects neither in the metadata
	meta         map[string]string // entries the metadata must hold besides
}

// wantDetails fails the test unless st carries an ErrorInfo of domain
// usher.v1 with want's reason and metadata, and the detail its code calls
// for: BadRequest naming the field, PreconditionFailure of the reason's
// type about the value, QuotaFailure about the value. It returns the
// ErrorInfo.
func wantDetails(t *testing.T, st *status.Status, want refusal) *errdetails.ErrorInfo {
	t.Helper()
	var (
		info  *errdetails.ErrorInfo
		bad   *errdetails.BadRequest
		pre   *errdetails.PreconditionFailure
		quota *errdetails.QuotaFailure
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		case *errdetails.PreconditionFailure:
			pre = d
		case *errdetails.QuotaFailure:
			quota = d
		case error:
			t.Fatalf("a detail of %s %q does not decode: %v", st.Code(), st.Message(), d)
		}
	}
	if info == nil {
		t.Fatalf("%s %q carries no ErrorInfo", st.Code(), st.Message())
	}
	if info.GetReason() != want.reason || info.GetDomain() != "usher.v1" {
		t.Errorf("ErrorInfo reason %q domain %q, want %q in usher.v1 (%q)", info.GetReason(), info.GetDomain(), want.reason, st.Message())
	}
	md := info.GetMetadata()
	if want.field != "" {
		if md["field"] != want.field || md["value"] != want.value {
			t.Errorf("ErrorInfo metadata names field %q value %q, want %q %q", md["field"], md["value"], want.field, want.value)
		}
	} else if _, ok := md["field"]; ok {
		t.Errorf("ErrorInfo metadata names field %q, want none", md["field"])
	}
	for k, v := range want.meta {
		if md[k] != v {
			t.Errorf("ErrorInfo metadata[%q] = %q, want %q (metadata %v)", k, md[k], v, md)
		}
	}
	switch st.Code() {
	case codes.InvalidArgument:
		if v := bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != want.field || v[0].GetDescription() == "" || v[0].GetReason() != want.reason {
			t.Errorf("BadRequest %v, want one violation of field %q with a description and reason %q", bad, want.field, want.reason)
		}
	case codes.FailedPrecondition:
		if v := pre.GetViolations(); len(v) != 1 || v[0].GetType() != want.reason || v[0].GetSubject() != want.value || v[0].GetDescription() == "" {
			t.Errorf("PreconditionFailure %v, want one violation of type %q about %q with a description", pre, want.reason, want.value)
		}
	case codes.ResourceExhausted:
		if v := quota.GetViolations(); len(v) != 1 || v[0].GetSubject() != want.value || v[0].GetDescription() == "" {
			t.Errorf("QuotaFailure %v, want one violation about %q with a description", quota, want.value)
		}
	}
	if st.Code() != codes.InvalidArgument && bad != nil {
		t.Errorf("%s carries a BadRequest: %v", st.Code(), bad)
	}
	if st.Code() != codes.FailedPrecondition && pre != nil {
		t.Errorf("%s carries a PreconditionFailure: %v", st.Code(), pre)
	}
	if st.Code() != codes.ResourceExhausted && quota != nil {
		t.Errorf("%s carries a QuotaFailure: %v", st.Code(), quota)
	}
	return info
}

// delegationWorld is errorWorld with the default scenario's delegation
// cast: sam administers the sales workspace with a role that may assign
// hosts, moderators and members; olga owns the account; hank hosts a call.
func delegationWorld(f *fixture) {
	errorWorld(f)
	f.putRole(&usherv1.Role{Name: "workspace-admin", Scope: acme, Permissions: []string{"workspace.manage"},
		AssignableRoles: []string{"host", "moderator", "call-member"}})
	f.grant("user:sam", "workspace-admin", sales)
	f.grant("user:olga", "owner", acme)
	f.grant("user:hank", "host", stream42)
}

// TestDelegationRefusalsNameTheirRule proves that each delegation rule's
// refusal says which rule refused, and what about, in its ErrorInfo.
func TestDelegationRefusalsNameTheirRule(t *testing.T) {
	f := newServer(t)
	delegationWorld(f)
	cases := []struct {
		name string
		call func(ctx context.Context) error
		want refusal
	}{
		{"no escalation: a definition carries only what the actor holds",
			func(ctx context.Context) error {
				_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Actor: "user:sam",
					Role: &usherv1.Role{Name: "moderator", Scope: sales, Permissions: []string{"account.manage"}}})
				return err
			},
			refusal{reason: "NO_ESCALATION", field: "actor", value: "user:sam",
				meta: map[string]string{"rule": "no escalation", "role": "moderator", "permission": "account.manage", "resource": sales}}},
		{"no overreach: a full block of someone who holds more than the actor",
			func(ctx context.Context) error {
				_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:olga", Resource: sales, Actor: "user:sam"})
				return err
			},
			refusal{reason: "NO_OVERREACH", field: "actor", value: "user:sam",
				meta: map[string]string{"rule": "no overreach", "subject": "user:olga", "resource": sales}}},
		{"no self-service: an actor may not revoke its own grants",
			func(ctx context.Context) error {
				_, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:sam", Role: "workspace-admin", Resource: sales, Actor: "user:sam"})
				return err
			},
			refusal{reason: "NO_SELF_SERVICE", field: "actor", value: "user:sam",
				meta: map[string]string{"rule": "no self-service", "subject": "user:sam"}}},
		{"an actor without usher.grants.write may not grant",
			func(ctx context.Context) error {
				_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:new", Role: "call-member", Resource: stream42, Actor: "user:nobody"})
				return err
			},
			refusal{reason: "MISSING_PERMISSION", field: "actor", value: "user:nobody",
				meta: map[string]string{"rule": "missing permission", "permission": "usher.grants.write", "resource": stream42, "role": "call-member"}}},
		{"a host may add members but not owners",
			func(ctx context.Context) error {
				_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:mia", Role: "owner", Resource: stream42, Actor: "user:hank"})
				return err
			},
			refusal{reason: "NOT_ASSIGNABLE", field: "actor", value: "user:hank",
				meta: map[string]string{"rule": "not assignable", "role": "owner", "resource": stream42}}},
		{"admission rules are the platform's",
			func(ctx context.Context) error {
				_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Actor: "user:olga",
					Admission: &usherv1.Admission{Scope: acme, ResourceType: "call", JoinPermission: "join-call"}})
				return err
			},
			refusal{reason: "PLATFORM_ONLY", field: "actor", value: "user:olga",
				meta: map[string]string{"rule": "platform only"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantDetails(t, wantCode(t, c.call(f.ctx()), codes.PermissionDenied), c.want)
		})
	}
}

func TestQuotaRefusalsCarryAQuotaFailure(t *testing.T) {
	f := newServer(t)
	f.world()
	ctx := f.ctx()
	if _, err := f.admin.PutQuota(ctx, &usherv1.PutQuotaRequest{Quota: &usherv1.Quota{Scope: sales, ResourceType: "call", Limit: 2}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:meeting:9", Parent: meeting})
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "QUOTA_EXCEEDED", field: "quota", value: sales + "/call",
		meta: map[string]string{"scope": sales, "resource_type": "call", "limit": "2", "used": "2"}})
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			if v := q.GetViolations()[0]; v.GetQuotaValue() != 2 || v.GetQuotaId() != "QUOTA_EXCEEDED" {
				t.Errorf("QuotaFailure violation %v, want quota_value 2 and quota_id QUOTA_EXCEEDED", v)
			}
		}
	}
}

func TestMaxHoldersNamesTheLimit(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:p2", Role: "presenter", Resource: stream42})
	wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "MAX_HOLDERS", field: "role", value: "presenter",
		meta: map[string]string{"resource": stream42, "max_holders": "1", "scope": acme}})
}

// The most blocks one subject may carry on one resource is a limit like
// the others: the refusal names it, and how many there are, in the
// ErrorInfo and as the QuotaFailure's quota_value, and writes nothing.
func TestTheBlocksLimitNamesTheLimit(t *testing.T) {
	f := newServer(t)
	f.world()
	mute := &usherv1.BlockRequest{Subject: "user:z", Resource: stream42, Permissions: []string{"send-audio"}}
	for range authz.MaxBlocksPerBinding {
		f.block(mute)
	}
	before := f.snapshotState("user:z")
	// A block that covers none of them: one that did would take the
	// place of one.
	_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:z", Resource: stream42, Permissions: []string{"send-video"}})
	st := wantCode(t, err, codes.ResourceExhausted)
	limit := fmt.Sprint(authz.MaxBlocksPerBinding)
	wantDetails(t, st, refusal{reason: "LIMIT_EXCEEDED", field: "subject", value: "user:z",
		meta: map[string]string{"resource": stream42, "limit": limit, "used": limit}})
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			if v := q.GetViolations()[0]; v.GetQuotaValue() != int64(authz.MaxBlocksPerBinding) || v.GetQuotaId() != "LIMIT_EXCEEDED" {
				t.Errorf("QuotaFailure violation %v, want quota_value %d and quota_id LIMIT_EXCEEDED", v, authz.MaxBlocksPerBinding)
			}
		}
	}
	if diff := before.diff(f.snapshotState("user:z")); len(diff) > 0 {
		t.Errorf("a refused block wrote something: %s", strings.Join(diff, "; "))
	}
}

// A grant outside a role's bindable_on says, as MAX_HOLDERS does, on which
// resource and by which definition.
func TestNotBindableNamesTheResourceAndTheDefinition(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	before := f.snapshotState("user:p2")
	_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:p2", Role: "presenter", Resource: sales})
	wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "NOT_BINDABLE", field: "role", value: "presenter",
		meta: map[string]string{"resource": sales, "scope": acme}})
	if diff := before.diff(f.snapshotState("user:p2")); len(diff) > 0 {
		t.Errorf("a refused grant wrote something: %s", strings.Join(diff, "; "))
	}
}

// A move puts the grants it carries under the definitions of their roles
// where it lands: as a grant there, it may not pass a definition's
// max_holders nor its bindable_on, and a refused move writes nothing.
func TestAMoveIsHeldToTheDefinitionsItComesUnder(t *testing.T) {
	f := newServer(t)
	f.world()
	f.putRole(&usherv1.Role{Name: "presenter", Scope: livestream, Permissions: []string{"screenshare"}})
	f.putRole(&usherv1.Role{Name: "presenter", Scope: meeting, Permissions: []string{"screenshare"}, MaxHolders: 1})
	f.putRole(&usherv1.Role{Name: "producer", Scope: sales, Permissions: []string{"join-backstage"}})
	f.putRole(&usherv1.Role{Name: "producer", Scope: meeting, Permissions: []string{"join-backstage"}, BindableOn: []string{"calltype"}})
	f.grant("user:p1", "presenter", stream42)
	f.grant("user:p2", "presenter", stream42)
	f.grant("user:prod", "producer", stream42)
	cases := []struct {
		name   string
		revoke *usherv1.RevokeRequest // before the move, leaving the other limit to refuse it
		want   refusal
		quoted string
	}{
		{"two presenters may not come under a definition that allows one",
			&usherv1.RevokeRequest{Subject: "user:prod", Role: "producer", Resource: stream42},
			refusal{reason: "MAX_HOLDERS", field: "parent", value: meeting,
				meta: map[string]string{"resource": stream42, "role": "presenter", "max_holders": "1", "scope": meeting}},
			`"presenter"`},
		{"a producer may not come under a definition not bindable on calls",
			&usherv1.RevokeRequest{Subject: "user:p2", Role: "presenter", Resource: stream42},
			refusal{reason: "NOT_BINDABLE", field: "parent", value: meeting,
				meta: map[string]string{"resource": stream42, "role": "producer", "scope": meeting}},
			`"producer"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.revoke != nil {
				if _, err := f.admin.Revoke(f.ctx(), c.revoke); err != nil {
					t.Fatal(err)
				}
				defer f.grant(c.revoke.GetSubject(), c.revoke.GetRole(), c.revoke.GetResource())
			}
			before := f.snapshotState("user:p1", "user:p2", "user:prod")
			_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: stream42, Parent: meeting})
			st := wantCode(t, err, codes.FailedPrecondition)
			wantDetails(t, st, c.want)
			for _, quoted := range []string{named("parent", meeting), c.quoted, fmt.Sprintf("%q", stream42)} {
				if !strings.Contains(st.Message(), quoted) {
					t.Errorf("message %q does not name %s", st.Message(), quoted)
				}
			}
			if diff := before.diff(f.snapshotState("user:p1", "user:p2", "user:prod")); len(diff) > 0 {
				t.Errorf("a refused move wrote something: %s", strings.Join(diff, "; "))
			}
		})
	}
	// Within both limits, the move goes through.
	for _, r := range []*usherv1.RevokeRequest{{Subject: "user:p2", Role: "presenter", Resource: stream42}, {Subject: "user:prod", Role: "producer", Resource: stream42}} {
		if _, err := f.admin.Revoke(f.ctx(), r); err != nil {
			t.Fatal(err)
		}
	}
	f.putResource(stream42, meeting)
	if d, _ := f.check("user:p1", "screenshare", stream42); !d.GetAllowed() || d.GetRole() != "presenter" {
		t.Errorf("after the move, user:p1 screenshare on %s: %v, want allowed as presenter", stream42, d)
	}
}

func TestRevisionNotReachedNamesTheLatest(t *testing.T) {
	f := newServer(t)
	rev := f.world()
	// A deadline longer than the server waits for a revision, 5 s, so that
	// its answer has seconds to arrive on a loaded machine; the margin it
	// keeps before shorter deadlines is TestDeadlines'.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: stream42, MinRevision: rev + 100})
	wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "REVISION_NOT_REACHED",
		field: "min_revision", value: fmt.Sprint(rev + 100), meta: map[string]string{"latest_revision": fmt.Sprint(rev)}})
}

// A batch's bad item says its reason in its CheckError, as its status
// would alone.
func TestCheckBatchItemsCarryTheirReason(t *testing.T) {
	f := newServer(t)
	f.world()
	resp, err := f.authz.CheckBatch(f.ctx(), &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
		{Subject: "user:alice", Permission: "join-call", Resource: stream42},
		{Subject: "user:alice", Permission: "teleport", Resource: stream42},
		{Subject: "alice", Permission: "join-call", Resource: stream42},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range resp.GetErrors() {
		got = append(got, fmt.Sprintf("%d %s %s=%q", e.GetIndex(), e.GetReason(), e.GetField(), e.GetValue()))
	}
	want := []string{`1 UNDECLARED_PERMISSION checks[1].permission="teleport"`, `2 INVALID_FIELD checks[2].subject="alice"`}
	if !slices.Equal(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
}

// admissionCallers is an admission server (admWorld) that authenticates an
// admin and a check caller by bearer token, and clients of it as each.
func admissionCallers(t *testing.T) (admin, check usherv1.AdmissionServiceClient) {
	t.Helper()
	adminToken, checkToken := newToken(t), newToken(t)
	callers := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, callers, fmt.Sprintf("callers:\n  - {name: backend, kind: admin, token_sha256: %s}\n  - {name: sidecar, kind: check, token_sha256: %s}\n",
		hashOf(adminToken), hashOf(checkToken)))
	src, err := server.NewCallerSource(callers, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w := newAdmWorld(t, admission.Options{}, server.WithCallers(src))
	return usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(adminToken)))),
		usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(checkToken))))
}

// TestAdmissionRefusalsCarryDetails reads the details of
// usher.v1.AdmissionService's refusals through its generated client.
func TestAdmissionRefusalsCarryDetails(t *testing.T) {
	join, check := admissionCallers(t)
	cases := []struct {
		name string
		call func(ctx context.Context) error
		code codes.Code
		want refusal
	}{
		{"Join of an unregistered call", func(ctx context.Context) error {
			_, err := join.Join(ctx, &usherv1.JoinRequest{Subject: "user:dana", Resource: "call:livestream:404"})
			return err
		}, codes.NotFound, refusal{reason: "RESOURCE_NOT_FOUND", field: "resource", value: "call:livestream:404"}},
		{"Join of a resource no admission rule governs", func(ctx context.Context) error {
			_, err := join.Join(ctx, &usherv1.JoinRequest{Subject: "user:dana", Resource: sales})
			return err
		}, codes.FailedPrecondition, refusal{reason: "NO_ADMISSION_RULE", field: "resource", value: sales}},
		{"Admit at a resource no admission rule governs", func(ctx context.Context) error {
			_, err := join.Admit(ctx, &usherv1.AdmitRequest{Resource: sales, Subject: "user:dana"})
			return err
		}, codes.FailedPrecondition, refusal{reason: "NO_ADMISSION_RULE", field: "resource", value: sales}},
		{"Deny at a resource no admission rule governs", func(ctx context.Context) error {
			_, err := join.Deny(ctx, &usherv1.DenyRequest{Resource: sales, Subject: "user:dana"})
			return err
		}, codes.FailedPrecondition, refusal{reason: "NO_ADMISSION_RULE", field: "resource", value: sales}},
		{"ListLobby of a resource no admission rule governs", func(ctx context.Context) error {
			_, err := join.ListLobby(ctx, &usherv1.ListLobbyRequest{Resource: sales})
			return err
		}, codes.FailedPrecondition, refusal{reason: "NO_ADMISSION_RULE", field: "resource", value: sales}},
		{"KeepAlive of a session that never was", func(ctx context.Context) error {
			_, err := join.KeepAlive(ctx, &usherv1.KeepAliveRequest{SessionId: "0123456789abcdef"})
			return err
		}, codes.NotFound, refusal{reason: "SESSION_NOT_FOUND", field: "session_id", value: "0123456789abcdef"}},
		{"KeepAlive of a session id longer than any Usher makes", func(ctx context.Context) error {
			_, err := join.KeepAlive(ctx, &usherv1.KeepAliveRequest{SessionId: strings.Repeat("a", 65)})
			return err
		}, codes.InvalidArgument, refusal{reason: "INVALID_FIELD", field: "session_id", value: strings.Repeat("a", 65)}},
		{"Deny of a subject not waiting in the lobby", func(ctx context.Context) error {
			_, err := join.Deny(ctx, &usherv1.DenyRequest{Resource: stream42, Subject: "user:zed"})
			return err
		}, codes.NotFound, refusal{reason: "KNOCK_NOT_FOUND", field: "subject", value: "user:zed"}},
		{"ListLobby by an actor without the lobby's admit permission", func(ctx context.Context) error {
			_, err := join.ListLobby(ctx, &usherv1.ListLobbyRequest{Resource: stream42, Actor: "user:nobody"})
			return err
		}, codes.PermissionDenied, refusal{reason: "MISSING_PERMISSION", field: "actor", value: "user:nobody",
			meta: map[string]string{"rule": "missing permission", "permission": "update-call-permissions", "resource": stream42}}},
		{"a check caller admitting on its own authority", func(ctx context.Context) error {
			_, err := check.Admit(ctx, &usherv1.AdmitRequest{Resource: stream42, Subject: "user:zed"})
			return err
		}, codes.PermissionDenied, refusal{reason: "CALLER_KIND", meta: map[string]string{"caller": "sidecar", "kind": "check"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantDetails(t, wantCode(t, c.call(callCtx(t)), c.code), c.want)
		})
	}
}

// A refusal of a huge value quotes it cut short in its details too, as in
// its message, so that the trailer stays small.
func TestDetailsQuoteAHugeValueCut(t *testing.T) {
	f := newServer(t)
	huge := "user:" + strings.Repeat("a", 1<<20)
	_, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: huge, Permission: "join-call", Resource: "root"})
	st := wantCode(t, err, codes.InvalidArgument)
	info := wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: "subject", value: clipped(t, st)})
	if v := info.GetMetadata()["value"]; len(v) > 1024 || !strings.HasSuffix(v, fmt.Sprintf("(%d bytes)", len(huge))) {
		t.Errorf("the value in the details is %d bytes long, ending %q; want it cut, saying how long it was", len(v), v[max(0, len(v)-20):])
	}
}

// A page token the server did not make, up to the 4,096 bytes a request
// may send, is quoted cut in the message as in the details, whichever list
// refuses it and however.
func TestARefusedPageTokenIsQuotedCut(t *testing.T) {
	f := newServer(t)
	f.world()
	token := strings.Repeat("A", server.MaxPageTokenLen)
	for name, call := range map[string]func(ctx context.Context) error{
		"ListGrants": func(ctx context.Context) error {
			_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: stream42, PageToken: token})
			return err
		},
		"ExportPolicy": func(ctx context.Context) error {
			_, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{PageToken: token})
			return err
		},
		"LookupSubjects": func(ctx context.Context) error {
			_, err := f.authz.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call", PageToken: token})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			st, _ := status.FromError(call(f.ctx()))
			var quoted string
			if _, err := fmt.Sscanf(st.Message(), "page_token %q:", &quoted); err != nil {
				t.Fatalf("%s %.80q: %v", st.Code(), st.Message(), err)
			}
			if len(st.Message()) > 1024 || !strings.HasSuffix(quoted, fmt.Sprintf("(%d bytes)", len(token))) {
				t.Errorf("the message is %d bytes long, quoting a value that ends %q; want it cut, saying how long it was",
					len(st.Message()), quoted[max(0, len(quoted)-20):])
			}
			wantDetails(t, st, refusal{reason: reasonOf(st), field: "page_token", value: quoted})
		})
	}
}

// reasonOf is the reason of st's ErrorInfo.
func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// clipped is the value a message about the subject quotes.
func clipped(t *testing.T, st *status.Status) string {
	t.Helper()
	var v string
	if _, err := fmt.Sscanf(st.Message(), "subject %q:", &v); err != nil {
		t.Fatalf("message %.80q: %v", st.Message(), err)
	}
	return v
}

// An Admit refused for the lobby's role, which AdmitRequest does not name,
// names the call it asked about, with the rule's role in the metadata, and
// grants nothing.
func TestAdmitRefusalsOverTheLobbysRoleNameTheCall(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	ctx := context.Background()
	w.grant("user:host", "host", meeting7)
	w.grant("user:host", "host", stream42)
	if _, err := w.engine.PutRole(ctx, w.by, authz.Role{Name: "call-member", Scope: meeting, Permissions: []string{"join-call"}, MaxHolders: 1}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:member", "call-member", meeting7)
	if _, err := w.engine.PutRole(ctx, w.by, authz.Role{Name: "call-member", Scope: livestream, Permissions: []string{"join-call"}, BindableOn: []string{"workspace"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []authz.Resource{{Name: "calltype:webinar", Parent: sales}, {Name: "call:webinar:8", Parent: "calltype:webinar"}} {
		if _, err := w.engine.PutResource(ctx, w.by, r); err != nil {
			t.Fatal(err)
		}
	}
	// The webinar's lobby names a role defined only for livestreams.
	if _, err := w.engine.PutRole(ctx, w.by, authz.Role{Name: "front-desk", Scope: livestream, Permissions: []string{"join-call"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.engine.PutAdmission(ctx, w.by, authz.Admission{Scope: "calltype:webinar", ResourceType: "call", Join: "join-call",
		Lobby: &authz.Lobby{Admit: "update-call-permissions", Role: "front-desk"}}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:host", "host", "call:webinar:8")
	rev, changes := w.revision(w.conn)
	cases := []struct {
		name     string
		resource string
		code     codes.Code
		want     refusal
	}{
		{"the lobby's role has its max_holders", meeting7, codes.FailedPrecondition,
			refusal{reason: "MAX_HOLDERS", field: "resource", value: meeting7, meta: map[string]string{"role": "call-member", "max_holders": "1"}}},
		{"the lobby's role is not bindable on a call", stream42, codes.FailedPrecondition,
			refusal{reason: "NOT_BINDABLE", field: "resource", value: stream42, meta: map[string]string{"role": "call-member"}}},
		{"the lobby's role is defined nowhere above the call", "call:webinar:8", codes.NotFound,
			refusal{reason: "ROLE_NOT_FOUND", field: "resource", value: "call:webinar:8", meta: map[string]string{"role": "front-desk"}}},
	}
	for _, c := range cases {
		for _, actor := range []string{"", "user:host"} {
			t.Run(c.name+" (actor "+actor+")", func(t *testing.T) {
				_, err := w.adm.Admit(callCtx(t), &usherv1.AdmitRequest{Resource: c.resource, Subject: "user:guest", Actor: actor})
				st := wantCode(t, err, c.code)
				wantDetails(t, st, c.want)
				for _, quoted := range []string{named("resource", c.resource), fmt.Sprintf("%q", c.want.meta["role"])} {
					if !strings.Contains(st.Message(), quoted) {
						t.Errorf("message %q does not name %s", st.Message(), quoted)
					}
				}
			})
		}
	}
	if r, n := w.revision(w.conn); r != rev || n != changes {
		t.Errorf("after the refusals: revision %d with %d change records, want %d with %d", r, n, rev, changes)
	}
}
