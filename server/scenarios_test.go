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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// The scenario files (policy/scenarios), each quoting its seed document
// (or the default policy) statement by statement, replayed against a running
// server with the shipped policy: every write, check, listing and join goes
// through the gRPC API, as a platform backend and a media server would make
// them.
func TestSeedScenariosReplayOverGRPC(t *testing.T) {
	for _, name := range []string{"livebox", "livecaller", "vancast", "stream", "alfaview", "default"} {
		t.Run(name, func(t *testing.T) {
			f, err := scenario.Load(filepath.Join("..", "policy", "scenarios", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if f.Policy != name {
				t.Fatalf("%s replays policy %q, want the shipped %q", f.Path, f.Policy, name)
			}
			r := newReplay(t, name)
			for _, s := range f.Steps {
				r.step(f.Path, s)
			}
			if r.expectations == 0 {
				t.Error("no expectation ran")
			}
		})
	}
}

// scenarioEpoch is when a replay's clock starts, as the scenario runner's.
var scenarioEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// replay is one server, with AdmissionService, on a bbolt file and a
// manual clock, with a shipped policy applied through ApplyPolicy.
type replay struct {
	t            *testing.T
	clock        *authz.ManualClock
	admin        usherv1.AdminServiceClient
	authz        usherv1.AuthorizationServiceClient
	adm          usherv1.AdmissionServiceClient
	sessions     map[scenario.Presence]string // a subject in a call -> its session
	blocks       map[string]string            // a block's name in the scenario -> its ID
	expectations int
}

func newReplay(t *testing.T, policyName string) *replay {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := authz.NewManualClock(scenarioEpoch)
	engine, err := authz.Start(context.Background(), store, authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(engine, admission.Options{})
	t.Cleanup(func() {
		m.Close()
		engine.Close()
		if err := store.Close(); err != nil {
			t.Errorf("store.Close: %v", err)
		}
	})
	conn := server.ServeLoopback(t, server.New(engine, slog.New(slog.DiscardHandler), server.WithAdmission(m)))
	r := &replay{t: t, clock: clock, admin: usherv1.NewAdminServiceClient(conn), authz: usherv1.NewAuthorizationServiceClient(conn),
		adm: usherv1.NewAdmissionServiceClient(conn), sessions: map[scenario.Presence]string{}, blocks: map[string]string{}}
	msg, err := policy.Load(policyName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.admin.ApplyPolicy(callCtx(t), &usherv1.ApplyPolicyRequest{Policy: msg}); err != nil {
		t.Fatalf("ApplyPolicy(%s): %v", policyName, err)
	}
	return r
}

// scenarioCodes are the codes scenario files name, as gRPC spells them.
var scenarioCodes = map[string]codes.Code{
	"INVALID_ARGUMENT":    codes.InvalidArgument,
	"NOT_FOUND":           codes.NotFound,
	"FAILED_PRECONDITION": codes.FailedPrecondition,
	"RESOURCE_EXHAUSTED":  codes.ResourceExhausted,
	"PERMISSION_DENIED":   codes.PermissionDenied,
	"UNAVAILABLE":         codes.Unavailable,
	"ABORTED":             codes.Aborted,
}

// step replays one step. A setup step that fails ends the test: what
// follows it would only repeat its failure.
func (r *replay) step(path string, s scenario.Step) {
	t := r.t
	t.Helper()
	at := fmt.Sprintf("%s:%d", path, s.Line)
	if s.Quote != "" {
		at += fmt.Sprintf(" %q", s.Quote)
	}
	if s.Expectation() {
		r.expectations++
	}
	ctx := callCtx(t)
	switch {
	case s.Check != nil:
		r.check(ctx, at, s)
	case s.Permissions != nil:
		resp, err := r.authz.ListPermissions(ctx, &usherv1.ListPermissionsRequest{Subject: s.Permissions.Subject, Resource: s.Permissions.Resource})
		switch {
		case err != nil:
			t.Errorf("%s: %s: %v", at, s.Describe(), err)
		case !resp.GetResourceKnown():
			t.Errorf("%s: %s: the resource is not registered", at, s.Describe())
		default:
			r.sameSet(at, s, resp.GetPermissions())
		}
	case s.Roles != nil:
		var got []string
		req := &usherv1.ListRolesRequest{Resource: s.Roles.Resource, AssignableBy: s.Roles.AssignableBy}
		for {
			resp, err := r.admin.ListRoles(ctx, req)
			if err != nil {
				t.Errorf("%s: %s: %v", at, s.Describe(), err)
				return
			}
			for _, role := range resp.GetRoles() {
				got = append(got, role.GetName())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		r.sameSet(at, s, got)
	case s.Join != nil:
		resp, err := r.adm.Join(ctx, &usherv1.JoinRequest{Subject: s.Join.Subject, Resource: s.Join.Resource})
		if err != nil {
			t.Fatalf("%s: %s: %v", at, s.Describe(), err)
		}
		if resp.GetOutcome() == usherv1.Outcome_OUTCOME_ADMITTED {
			r.sessions[*s.Join] = resp.GetSessionId()
		}
		want := "OUTCOME_" + s.Outcome
		if s.Outcome == "" {
			want = usherv1.Outcome_OUTCOME_ADMITTED.String()
		}
		if got := resp.GetOutcome().String(); got != want {
			if s.Outcome == "" {
				t.Fatalf("%s: %s: %s (%s), want %s", at, s.Describe(), got, resp.GetReason(), want)
			}
			t.Errorf("%s: %s: %s (%s), want %s", at, s.Describe(), got, resp.GetReason(), want)
		}
	case s.Leave != nil:
		id := r.sessions[*s.Leave]
		if id == "" {
			t.Fatalf("%s: %s did not join %s earlier", at, s.Leave.Subject, s.Leave.Resource)
		}
		delete(r.sessions, *s.Leave)
		if _, err := r.adm.Leave(ctx, &usherv1.LeaveRequest{SessionId: id}); err != nil {
			t.Fatalf("%s: leave %s: %v", at, s.Leave.Resource, err)
		}
	case s.Advance != "":
		d, err := time.ParseDuration(s.Advance)
		if err != nil {
			t.Fatalf("%s: advance %q: %v", at, s.Advance, err)
		}
		r.clock.Advance(d)
	default:
		r.write(ctx, at, s)
	}
}

func (r *replay) check(ctx context.Context, at string, s scenario.Step) {
	c := s.Check
	resp, err := r.authz.Check(ctx, &usherv1.CheckRequest{Subject: c.Subject, Permission: c.Permission, Resource: c.Resource})
	if err != nil {
		r.t.Errorf("%s: %s: %v", at, s.Describe(), err)
		return
	}
	d := resp.GetDecision()
	got := fmt.Sprintf("allowed %v (%s by %q at %q)", d.GetAllowed(), d.GetReason(), d.GetRole(), d.GetScope())
	switch {
	case s.Allowed == nil:
		r.t.Errorf("%s: %s: the step says nothing about allowed", at, s.Describe())
	case d.GetAllowed() != *s.Allowed:
		r.t.Errorf("%s: %s: %s, want allowed %v", at, s.Describe(), got, *s.Allowed)
	case s.Reason != "" && d.GetReason().String() != "REASON_"+s.Reason:
		r.t.Errorf("%s: %s: %s, want reason %s", at, s.Describe(), got, s.Reason)
	case s.Role != "" && d.GetRole() != s.Role:
		r.t.Errorf("%s: %s: %s, want role %s", at, s.Describe(), got, s.Role)
	case s.Scope != "" && d.GetScope() != s.Scope:
		r.t.Errorf("%s: %s: %s, want scope %s", at, s.Describe(), got, s.Scope)
	}
}

func (r *replay) sameSet(at string, s scenario.Step, got []string) {
	got, want := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(s.Exactly))
	if !slices.Equal(got, want) {
		r.t.Errorf("%s: %s: got %v, want exactly %v", at, s.Describe(), got, want)
	}
}

// timestamp is the instant a step's expires_in names on the replay's
// clock, or nil for none.
func (r *replay) timestamp(at, in string) *timestamppb.Timestamp {
	if in == "" {
		return nil
	}
	d, err := time.ParseDuration(in)
	if err != nil {
		r.t.Fatalf("%s: expires_in %q: %v", at, in, err)
	}
	return timestamppb.New(r.clock.Now().Add(d))
}

// actorOf is the actor a write step names.
func actorOf(s scenario.Step) string {
	switch {
	case s.Register != nil:
		return s.Register.Actor
	case s.Delete != nil:
		return s.Delete.Actor
	case s.Grant != nil:
		return s.Grant.Actor
	case s.Revoke != nil:
		return s.Revoke.Actor
	case s.Block != nil:
		return s.Block.Actor
	case s.Unblock != nil:
		return s.Unblock.Actor
	case s.PutRole != nil:
		return s.PutRole.Actor
	case s.DeleteRole != nil:
		return s.DeleteRole.Actor
	case s.PutQuota != nil:
		return s.PutQuota.Actor
	case s.DeleteQuota != nil:
		return s.DeleteQuota.Actor
	case s.Admit != nil:
		return s.Admit.Actor
	case s.GoLive != nil:
		return s.GoLive.Actor
	}
	return ""
}

func (r *replay) revision(ctx context.Context) uint64 {
	resp, err := r.authz.GetRevision(ctx, &usherv1.GetRevisionRequest{})
	if err != nil {
		r.t.Fatalf("GetRevision: %v", err)
	}
	return resp.GetRevision()
}

// write makes a write step's call. Setup must succeed. An expected refusal
// must come with the step's code, an ErrorInfo with a reason (and the
// step's rule, when it names one), and leave the revision where it was.
func (r *replay) write(ctx context.Context, at string, s scenario.Step) {
	t := r.t
	before := r.revision(ctx)
	var err error
	switch {
	case s.Register != nil:
		w := s.Register
		_, err = r.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: w.Name, Parent: w.Parent, Actor: w.Actor})
	case s.Delete != nil:
		_, err = r.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: s.Delete.Name, Actor: s.Delete.Actor})
	case s.Grant != nil:
		w := s.Grant
		_, err = r.admin.Grant(ctx, &usherv1.GrantRequest{Subject: w.Subject, Role: w.Role, Resource: w.Resource, Actor: w.Actor,
			ExpireTime: r.timestamp(at, w.ExpiresIn)})
	case s.Revoke != nil:
		w := s.Revoke
		_, err = r.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: w.Subject, Role: w.Role, Resource: w.Resource, Actor: w.Actor})
	case s.Block != nil:
		w := s.Block
		var resp *usherv1.BlockResponse
		resp, err = r.admin.Block(ctx, &usherv1.BlockRequest{Subject: w.Subject, Resource: w.Resource, Permissions: w.Permissions,
			Reason: w.Reason, Actor: w.Actor, ExpireTime: r.timestamp(at, w.ExpiresIn)})
		if err == nil && w.ID != "" {
			r.blocks[w.ID] = resp.GetBlockId()
		}
	case s.Unblock != nil:
		w := s.Unblock
		id := ""
		if w.ID != "" {
			if id = r.blocks[w.ID]; id == "" {
				t.Fatalf("%s: no block named %q was made earlier", at, w.ID)
			}
		}
		_, err = r.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: w.Subject, Resource: w.Resource, Actor: w.Actor, BlockId: id})
	case s.PutRole != nil:
		w := s.PutRole
		_, err = r.admin.PutRole(ctx, &usherv1.PutRoleRequest{Actor: w.Actor, Role: &usherv1.Role{Name: w.Name, Scope: w.Scope,
			Permissions: w.Permissions, AssignableRoles: w.AssignableRoles, BindableOn: w.BindableOn, MaxHolders: w.MaxHolders}})
	case s.DeleteRole != nil:
		w := s.DeleteRole
		_, err = r.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: w.Name, Scope: w.Scope, Actor: w.Actor})
	case s.PutQuota != nil:
		w := s.PutQuota
		_, err = r.admin.PutQuota(ctx, &usherv1.PutQuotaRequest{Actor: w.Actor,
			Quota: &usherv1.Quota{Scope: w.Scope, ResourceType: w.ResourceType, Subject: w.Subject, Limit: w.Limit}})
	case s.DeleteQuota != nil:
		w := s.DeleteQuota
		_, err = r.admin.DeleteQuota(ctx, &usherv1.DeleteQuotaRequest{Scope: w.Scope, ResourceType: w.ResourceType, Subject: w.Subject, Actor: w.Actor})
	case s.Admit != nil:
		w := s.Admit
		_, err = r.adm.Admit(ctx, &usherv1.AdmitRequest{Resource: w.Resource, Subject: w.Subject, Actor: w.Actor,
			ExpireTime: r.timestamp(at, w.ExpiresIn)})
	case s.GoLive != nil:
		_, err = r.adm.GoLive(ctx, &usherv1.GoLiveRequest{Resource: s.GoLive.Resource, Live: true, Actor: s.GoLive.Actor})
	default:
		t.Fatalf("%s: a step with no action", at)
	}
	if s.Refused == "" {
		if err != nil {
			t.Fatalf("%s: %s: %v", at, s.Describe(), err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: %s was allowed, want it refused with %s", at, s.Describe(), s.Refused)
		return
	}
	st := status.Convert(err)
	want, known := scenarioCodes[s.Refused]
	if !known {
		t.Fatalf("%s: refused %q is not a code", at, s.Refused)
	}
	if st.Code() != want {
		t.Errorf("%s: %s was refused with %s (%s), want %s", at, s.Describe(), st.Code(), st.Message(), want)
		return
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if e, ok := d.(*errdetails.ErrorInfo); ok {
			info = e
		}
	}
	switch {
	case info == nil || info.GetReason() == "" || info.GetDomain() != "usher.v1":
		t.Errorf("%s: %s: refusal %q carries no usher.v1 ErrorInfo with a reason: %v", at, s.Describe(), st.Message(), st.Details())
	case s.Rule != "" && info.GetMetadata()["rule"] != s.Rule:
		t.Errorf("%s: %s: refusal %q names rule %q, want %q", at, s.Describe(), st.Message(), info.GetMetadata()["rule"], s.Rule)
	case want == codes.PermissionDenied && actorOf(s) != "" && !strings.Contains(st.Message(), fmt.Sprintf("%q", actorOf(s))):
		t.Errorf("%s: %s: refusal %q does not name the actor %q", at, s.Describe(), st.Message(), actorOf(s))
	}
	if after := r.revision(ctx); after != before {
		t.Errorf("%s: %s: a refused write moved the revision from %d to %d", at, s.Describe(), before, after)
	}
}
