package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// A hostile tenant, over gRPC: an end user who holds some roles and acts
// through the platform's admin caller, trying each way around the
// delegation rules that a single write, or a structural one, offers. Under
// the default policy: hank hosts call 42, mallory moderates it and may
// create calls in the workspace (user there), and the platform has muted
// mallory on call 42 and hank on call 7, which he also hosts. Every attempt
// is PERMISSION_DENIED naming its rule, and writes nothing at all.
func TestHostileTenantOverGRPC(t *testing.T) {
	f := newServer(t)
	f.world()
	f.grant("user:olga", "owner", sales)
	f.grant("user:hank", "host", stream42)
	f.grant("user:hank", "host", meeting7)
	f.grant("user:mallory", "moderator", stream42)
	f.grant("user:mallory", "user", sales)
	f.grant("user:gus", "call-member", stream42)
	f.block(&usherv1.BlockRequest{Subject: "user:mallory", Resource: stream42, BlockId: "mute", Permissions: []string{"send-audio"}})
	f.block(&usherv1.BlockRequest{Subject: "user:hank", Resource: meeting7, BlockId: "mute", Permissions: []string{"send-audio"}})
	// The platform restates owner at call 42, so that it has a definition
	// there that an owner above could delete.
	if _, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "owner", Scope: stream42,
		Permissions: []string{"account.manage"}, AssignableRoles: []string{"*"}}}); err != nil {
		t.Fatalf("PutRole(owner at %s): %v", stream42, err)
	}
	// Hank hosts call 43 until tomorrow, and may create calls in the
	// workspace: deleting call 43 and registering it again would make him
	// its host for good, as its creator.
	const stream43 = "call:livestream:43"
	f.putResource(stream43, livestream)
	if _, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:hank", Role: "host", Resource: stream43,
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}); err != nil {
		t.Fatalf("Grant(host on %s until tomorrow): %v", stream43, err)
	}
	f.grant("user:hank", "user", sales)
	// Another tenant, in which none of them holds anything, has a board
	// meeting scheduled.
	const board = "call:globex:board"
	boardStarts := time.Now().Add(48 * time.Hour).Truncate(time.Hour)
	f.putResource("account:globex", "")
	if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: board, Parent: "account:globex",
		StartTime: timestamppb.New(boardStarts)}); err != nil {
		t.Fatalf("PutResource(%s starting %s): %v", board, boardStarts, err)
	}
	subjects := []string{"user:olga", "user:hank", "user:mallory", "user:gus"}

	for _, a := range []struct {
		name, actor, rule string
		meta              map[string]string
		write             func() error
	}{
		{"lifting one's own mute", "user:mallory", "no self-service", map[string]string{"subject": "user:mallory"}, func() error {
			_, err := f.admin.Unblock(f.ctx(), &usherv1.UnblockRequest{Subject: "user:mallory", Resource: stream42, BlockId: "mute", Actor: "user:mallory"})
			return err
		}},
		{"lifting all one's own blocks", "user:mallory", "no self-service", map[string]string{"subject": "user:mallory"}, func() error {
			_, err := f.admin.Unblock(f.ctx(), &usherv1.UnblockRequest{Subject: "user:mallory", Resource: stream42, Actor: "user:mallory"})
			return err
		}},
		{"replacing one's own mute by its ID with a lesser one", "user:mallory", "no self-service", map[string]string{"subject": "user:mallory"}, func() error {
			_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:mallory", Resource: stream42, BlockId: "mute",
				Permissions: []string{"create-reaction"}, Actor: "user:mallory"})
			return err
		}},
		{"granting oneself what one may assign", "user:mallory", "no self-service", map[string]string{"subject": "user:mallory"}, func() error {
			_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:mallory", Role: "call-member", Resource: stream42, Actor: "user:mallory"})
			return err
		}},
		{"banning the host who outranks one", "user:mallory", "no overreach", map[string]string{"subject": "user:hank", "resource": stream42}, func() error {
			_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:hank", Resource: stream42, Actor: "user:mallory"})
			return err
		}},
		{"taking from the host what only the host holds", "user:mallory", "no overreach", map[string]string{"subject": "user:hank", "permission": "end-call"}, func() error {
			_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:hank", Resource: stream42, Permissions: []string{"end-call"}, Actor: "user:mallory"})
			return err
		}},
		{"revoking the host", "user:mallory", "not assignable", map[string]string{"role": "host", "resource": stream42}, func() error {
			_, err := f.admin.Revoke(f.ctx(), &usherv1.RevokeRequest{Subject: "user:hank", Role: "host", Resource: stream42, Actor: "user:mallory"})
			return err
		}},
		{"granting a role one may not assign", "user:mallory", "not assignable", map[string]string{"role": "moderator", "resource": stream42}, func() error {
			_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:gus", Role: "moderator", Resource: stream42, Actor: "user:mallory"})
			return err
		}},
		{"moving the call one is muted on, out from under the mute", "user:mallory", "missing permission",
			map[string]string{"permission": "usher.resources.move.call", "resource": stream42}, func() error {
				_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: stream42, Parent: sales, Actor: "user:mallory"})
				return err
			}},
		{"deleting the call one is muted on, to shed the mute", "user:hank", "no self-service", map[string]string{"subject": "user:hank", "block_id": "mute"}, func() error {
			_, err := f.admin.DeleteResource(f.ctx(), &usherv1.DeleteResourceRequest{Name: meeting7, Actor: "user:hank"})
			return err
		}},
		{"deleting the call one hosts until tomorrow, to register it again as its host for good", "user:hank", "no self-service",
			map[string]string{"subject": "user:hank"}, func() error {
				_, err := f.admin.DeleteResource(f.ctx(), &usherv1.DeleteResourceRequest{Name: stream43, Actor: "user:hank"})
				return err
			}},
		{"moving another tenant's call live, to learn whether it is", "user:mallory", "missing permission",
			map[string]string{"permission": "usher.resources.move.call", "resource": board}, func() error {
				_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: board, Parent: sales, Live: true, Actor: "user:mallory"})
				return err
			}},
		{"moving another tenant's call with a start time, to learn whether it starts then", "user:mallory", "missing permission",
			map[string]string{"permission": "usher.resources.move.call", "resource": board}, func() error {
				_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: board, Parent: sales,
					StartTime: timestamppb.New(boardStarts.Add(time.Hour)), Actor: "user:mallory"})
				return err
			}},
		{"redefining a role one holds", "user:olga", "no self-service", map[string]string{"subject": "user:olga", "role": "owner"}, func() error {
			_, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "owner", Scope: stream42,
				Permissions: []string{"join-call"}}, Actor: "user:olga"})
			return err
		}},
		{"deleting a definition of a role one holds", "user:olga", "no self-service", map[string]string{"subject": "user:olga", "role": "owner"}, func() error {
			_, err := f.admin.DeleteRole(f.ctx(), &usherv1.DeleteRoleRequest{Scope: stream42, Name: "owner", Actor: "user:olga"})
			return err
		}},
	} {
		t.Run(a.name, func(t *testing.T) {
			before := f.snapshotState(subjects...)
			err := a.write()
			st := wantCode(t, err, codes.PermissionDenied)
			meta := map[string]string{"rule": a.rule}
			for k, v := range a.meta {
				meta[k] = v
			}
			wantDetails(t, st, refusal{reason: strings.ToUpper(strings.NewReplacer(" ", "_", "-", "_").Replace(a.rule)), field: "actor", value: a.actor, meta: meta})
			if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
				t.Errorf("the refused write wrote: %v", diff)
			}
		})
	}

	// A call of one's own, registered below the call one moderates and is
	// muted on, would make one its host by the creator role, with call 42's
	// grants and blocks reaching it: no call goes in a call (the default
	// policy's default quota), and nothing is written.
	t.Run("a call one registers below one's mute", func(t *testing.T) {
		const mine = "call:livestream:mallory"
		before := f.snapshotState(subjects...)
		_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: mine, Parent: stream42, Actor: "user:mallory"})
		st := wantCode(t, err, codes.ResourceExhausted)
		wantDetails(t, st, refusal{reason: "QUOTA_EXCEEDED", field: "quota", value: stream42 + "/call"})
		if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
			t.Errorf("the refused registration wrote: %v", diff)
		}
		if d, _ := f.check("user:mallory", "end-call", mine); d.GetAllowed() || d.GetReason() != usherv1.Reason_REASON_UNKNOWN_RESOURCE {
			t.Errorf("user:mallory on %s after the refused registration: %v, want an unknown resource", mine, d)
		}
	})

	// A call one registered, and so hosts for good, one may delete: to
	// register it again gives nothing one does not hold.
	t.Run("deleting a call one created", func(t *testing.T) {
		const mine = "call:livestream:hank"
		if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: mine, Parent: livestream, Actor: "user:hank"}); err != nil {
			t.Fatalf("registering %s: %v", mine, err)
		}
		if _, err := f.admin.DeleteResource(f.ctx(), &usherv1.DeleteResourceRequest{Name: mine, Actor: "user:hank"}); err != nil {
			t.Errorf("deleting the call one created: %v", err)
		}
	})

	// A call one created, on which the platform has restated its host
	// role with less (no recording), one hosts for good as that lesser
	// host: deleting it, to register it again as a host of the role as
	// defined above, would shed the definition of a role one holds.
	t.Run("deleting a call one created, whose host role the call restricts", func(t *testing.T) {
		const mine = "call:livestream:hank-restricted"
		if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: mine, Parent: livestream, Actor: "user:hank"}); err != nil {
			t.Fatalf("registering %s: %v", mine, err)
		}
		f.putRole(&usherv1.Role{Name: "host", Scope: mine, Permissions: []string{"join-call", "read-call", "send-audio", "end-call"}})
		if d, _ := f.check("user:hank", "start-record-call", mine); d.GetAllowed() {
			t.Fatalf("the restated host role lets %s record: %v", mine, d)
		}
		before := f.snapshotState(subjects...)
		_, err := f.admin.DeleteResource(f.ctx(), &usherv1.DeleteResourceRequest{Name: mine, Actor: "user:hank"})
		st := wantCode(t, err, codes.PermissionDenied)
		wantDetails(t, st, refusal{reason: "NO_SELF_SERVICE", field: "actor", value: "user:hank",
			meta: map[string]string{"rule": "no self-service", "subject": "user:hank"}})
		if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
			t.Errorf("the refused delete wrote: %v", diff)
		}
		if _, err := f.admin.GetResource(f.ctx(), &usherv1.GetResourceRequest{Name: mine}); err != nil {
			t.Errorf("GetResource(%s) after the refused delete: %v", mine, err)
		}
	})
}
