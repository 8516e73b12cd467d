package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// applyToFreshStore validates and applies data as a policy on an empty store
// and returns the engine.
func applyToFreshStore(t *testing.T, name string, data []byte) *authz.Engine {
	t.Helper()
	msg, err := policy.Parse(name, data)
	if err != nil {
		t.Fatal(err)
	}
	return applyMessage(t, name, msg)
}

// applyMessage validates and applies a parsed policy on an empty store.
func applyMessage(t *testing.T, name string, msg *usherv1.Policy) *authz.Engine {
	t.Helper()
	p := server.FromPolicy(msg)
	if err := server.ValidatePolicy(p); err != nil {
		t.Fatal(err)
	}
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, p, authz.ApplyOptions{}); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return engine
}

// Every shipped policy applies to an empty store, and applying it again
// writes nothing.
func TestShippedPoliciesApply(t *testing.T) {
	names := policy.Shipped()
	if want := []string{"alfaview", "default", "livebox", "livecaller", "stream", "vancast"}; !slices.Equal(names, want) {
		t.Fatalf("shipped policies %v, want %v", names, want)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			msg, err := policy.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			if policy.Describe(name) == "" {
				t.Errorf("%s has no first-line comment for usher policy list", name)
			}
			engine := applyMessage(t, name, msg)
			rev := engine.Index().Revision()
			again, changed, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{})
			if err != nil || len(changed) > 0 || again != rev {
				t.Errorf("applying %s again: revision %d -> %d, changed %v, %v", name, rev, again, changed, err)
			}
		})
	}
}

// The default policy carries Stream Video's call capabilities (seeds/003):
// "The list of call capabilities that you can include in your role
// configurations", and its five built-in call roles.
func TestDefaultPolicyHasStreamCallModel(t *testing.T) {
	data, err := os.ReadFile("policies/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	engine := applyToFreshStore(t, "default.yaml", data)
	capabilities := []string{"join-call", "read-call", "create-call", "join-ended-call", "join-backstage",
		"update-call", "update-call-settings", "screenshare", "send-video", "send-audio", "start-record-call",
		"stop-record-call", "start-broadcast-call", "stop-broadcast-call", "end-call", "mute-users",
		"update-call-permissions", "block-users", "create-reaction", "pin-for-everyone", "remove-call-member",
		"start-transcription-call", "stop-transcription-call"}
	export := exportAll(t, engine)
	declared := map[string]bool{}
	for _, p := range export.Permissions {
		declared[p.Name] = true
	}
	for _, c := range capabilities {
		if !declared[c] {
			t.Errorf("capability %q is not declared", c)
		}
	}
	roles, _, err := engine.Index().ListRoles(authz.RootName)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range roles {
		have[r.Name] = true
	}
	for _, r := range []string{"user", "moderator", "host", "admin", "call-member"} {
		if !have[r] {
			t.Errorf("built-in call role %q is missing", r)
		}
	}
}

func TestREADMEPolicyExampleApplies(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Policy files")
	section, _, _ = strings.Cut(section, "\n## ")
	var example []byte
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1) {
		example = append(example, m[1]...)
	}
	if !strings.Contains(string(example), "creator_roles") {
		t.Fatalf("README.md's Policy files section has no complete yaml example:\n%s", example)
	}
	engine := applyToFreshStore(t, "README example", example)
	// The call type's redefinition of host applies to its calls.
	if _, err := engine.PutResource(context.Background(), authz.Author{}, authz.Resource{Name: "call:livestream:1", Parent: "calltype:livestream"}); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Grant(context.Background(), authz.Author{}, authz.Grant{Subject: "user:a", Role: "host", Resource: "call:livestream:1"}); err != nil {
		t.Fatal(err)
	}
	perms, _, _ := engine.Index().ListPermissions("user:a", "call:livestream:1", false)
	if strings.Join(perms, ",") != "join-call" {
		t.Fatalf("host on a livestream call holds %v, want only join-call", perms)
	}
}

func TestParseRefusesUnknownFieldsNamingTheFile(t *testing.T) {
	_, err := policy.Parse("acme.yaml", []byte("permissions:\n  - name: join-call\n    parent: [x]\n"))
	if err == nil || !strings.Contains(err.Error(), "acme.yaml") || !strings.Contains(err.Error(), "parent") {
		t.Fatalf("got %v, want an error naming acme.yaml and the unknown field", err)
	}
}

func TestParseReadsJSON(t *testing.T) {
	p, err := policy.Parse("p.json", []byte(`{"permissions": [{"name": "join-call"}], "roles": [{"name": "user", "scope": "root", "permissions": ["join-call"], "max_holders": 2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.GetRoles()[0].GetMaxHolders() != 2 {
		t.Fatalf("max_holders = %d, want 2", p.GetRoles()[0].GetMaxHolders())
	}
}

// Under the default policy, a workspace admin, who may grant any role
// within call.manage but not owner, may not grant a custom role that the
// account's owner defined to assign owner: the admin's accomplice would
// make it owner of the workspace.
func TestDefaultPolicyAdminMayNotGrantARoleThatAssignsOwner(t *testing.T) {
	data, err := os.ReadFile("policies/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	engine := applyToFreshStore(t, "default.yaml", data)
	ctx := context.Background()
	platform := authz.Author{Caller: "test"}
	by := func(actor string) authz.Author { return authz.Author{Caller: "test", Actor: actor} }
	for _, r := range []authz.Resource{{Name: "account:acme"}, {Name: "workspace:acme-sales", Parent: "account:acme"}} {
		if _, err := engine.PutResource(ctx, platform, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []authz.Grant{{Subject: "user:owner", Role: "owner", Resource: "account:acme"}, {Subject: "user:admin", Role: "admin", Resource: "workspace:acme-sales"}} {
		if _, err := engine.Grant(ctx, platform, g); err != nil {
			t.Fatal(err)
		}
	}
	delegate := authz.Role{Name: "delegate", Scope: "account:acme", Permissions: []string{"update-call-permissions", "join-call"}, AssignableRoles: []string{"owner"}}
	if _, err := engine.PutRole(ctx, by("user:owner"), delegate); err != nil {
		t.Fatalf("the owner defines delegate: %v", err)
	}
	if _, err := engine.Grant(ctx, by("user:admin"), authz.Grant{Subject: "user:x", Role: "owner", Resource: "workspace:acme-sales"}); authz.CodeOf(err) != authz.PermissionDenied {
		t.Fatalf("the admin grants owner: %v, want PERMISSION_DENIED", err)
	}
	_, err = engine.Grant(ctx, by("user:admin"), authz.Grant{Subject: "user:x", Role: "delegate", Resource: "workspace:acme-sales"})
	if authz.CodeOf(err) != authz.PermissionDenied || !strings.Contains(err.Error(), `lists "owner" in assignable_roles`) {
		t.Fatalf("the admin grants delegate, which assigns owner: %v, want PERMISSION_DENIED naming owner", err)
	}
	if d, _, _ := engine.Index().Check(authz.Query{Subject: "user:x", Permission: "update-call-permissions", Resource: "workspace:acme-sales"}); d.Allowed {
		t.Errorf("a refused grant gave user:x delegate: %+v", d)
	}
	// The owner, who may assign owner, grants it.
	if _, err := engine.Grant(ctx, by("user:owner"), authz.Grant{Subject: "user:x", Role: "delegate", Resource: "workspace:acme-sales"}); err != nil {
		t.Errorf("the owner grants delegate: %v", err)
	}
}
