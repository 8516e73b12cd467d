package storage_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

func snapshot() authz.Snapshot {
	return authz.Snapshot{
		Revision:    7,
		Permissions: []authz.Permission{{Name: "rooms.join"}, {Name: "rooms.manage"}},
		Resources:   []authz.Resource{{Name: "account:acme", Parent: "root"}, {Name: "room:r1", Parent: "account:acme"}},
		Roles:       []authz.Role{{Name: "guest", Scope: "root", Permissions: []string{"rooms.join"}}},
		Grants: []authz.Grant{
			{Subject: "user:ann", Role: "guest", Resource: "room:r1"},
			{Subject: "user:bob", Role: "guest", Resource: "room:r1", Expires: time.Unix(1900000000, 0)},
		},
		Blocks: []authz.Block{{Subject: "user:eve", Resource: "account:acme", ID: "b1", Reason: "spam"}},
		Quotas: []authz.Quota{{Scope: "account:acme", ResourceType: "room", Limit: 3}},
	}
}

func TestCompareSnapshots(t *testing.T) {
	same := snapshot()
	slices.Reverse(same.Grants)
	slices.Reverse(same.Resources)
	same.Grants[0].Expires = same.Grants[0].Expires.In(time.FixedZone("elsewhere", 3600))
	if err := storage.CompareSnapshots(snapshot(), same); err != nil {
		t.Errorf("the same entities in another order and zone: %v", err)
	}
	cases := []struct {
		name   string
		change func(*authz.Snapshot)
		says   string
	}{
		{"a field differs", func(s *authz.Snapshot) { s.Blocks[0].Reason = "abuse" }, `blocks "user:eve account:acme b1" differs`},
		{"an expiry differs", func(s *authz.Snapshot) { s.Grants[1].Expires = s.Grants[1].Expires.Add(time.Second) }, `grants "user:bob room:r1 guest" differs`},
		{"an entity is missing", func(s *authz.Snapshot) { s.Quotas = nil }, `quotas "account:acme room " is only in the first`},
		{"an entity is extra", func(s *authz.Snapshot) {
			s.Roles = append(s.Roles, authz.Role{Name: "host", Scope: "root", Permissions: []string{"rooms.manage"}})
		}, `roles "root host" is only in the second`},
		{"the revision differs", func(s *authz.Snapshot) { s.Revision++ }, "different revisions, 7 and 8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			other := snapshot()
			c.change(&other)
			err := storage.CompareSnapshots(snapshot(), other)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("CompareSnapshots = %v; want an error saying %s", err, c.says)
			}
		})
	}
}
