package storagetest

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Backends may return entities in any order, times in any zone and empty
// slices as nil or not; comparisons normalise those away and compare
// everything else whole, with reflect.DeepEqual, so that a backend that drops
// a field fails.

func wantSnapshot(t *testing.T, got, want authz.Snapshot) {
	t.Helper()
	got, want = normalSnapshot(got), normalSnapshot(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot differs:\n got %+v\nwant %+v", got, want)
	}
}

func normalSnapshot(s authz.Snapshot) authz.Snapshot {
	out := authz.Snapshot{Revision: s.Revision}
	for _, p := range s.Permissions {
		p.Parents = nonEmpty(p.Parents)
		out.Permissions = append(out.Permissions, p)
	}
	for _, r := range s.Resources {
		out.Resources = append(out.Resources, normalResource(r))
	}
	for _, r := range s.Roles {
		out.Roles = append(out.Roles, normalRole(r))
	}
	for _, g := range s.Grants {
		out.Grants = append(out.Grants, normalGrant(g))
	}
	for _, b := range s.Blocks {
		out.Blocks = append(out.Blocks, normalBlock(b))
	}
	out.Quotas = nonEmpty(slices.Clone(s.Quotas))
	out.CreatorRoles = nonEmpty(slices.Clone(s.CreatorRoles))
	out.DefaultQuotas = nonEmpty(slices.Clone(s.DefaultQuotas))
	for _, a := range s.Admissions {
		out.Admissions = append(out.Admissions, normalAdmission(a))
	}
	slices.SortFunc(out.Permissions, func(a, b authz.Permission) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Resources, func(a, b authz.Resource) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Roles, func(a, b authz.Role) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.Name, b.Name))
	})
	slices.SortFunc(out.Grants, func(a, b authz.Grant) int {
		return cmp.Or(strings.Compare(a.Subject, b.Subject), strings.Compare(a.Resource, b.Resource), strings.Compare(a.Role, b.Role))
	})
	slices.SortFunc(out.Blocks, func(a, b authz.Block) int {
		return cmp.Or(strings.Compare(a.Subject, b.Subject), strings.Compare(a.Resource, b.Resource), strings.Compare(a.ID, b.ID))
	})
	slices.SortFunc(out.Quotas, func(a, b authz.Quota) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType), strings.Compare(a.Subject, b.Subject))
	})
	slices.SortFunc(out.CreatorRoles, func(a, b authz.CreatorRole) int { return strings.Compare(a.ResourceType, b.ResourceType) })
	slices.SortFunc(out.DefaultQuotas, func(a, b authz.DefaultQuota) int {
		return cmp.Or(strings.Compare(a.ScopeType, b.ScopeType), strings.Compare(a.ResourceType, b.ResourceType))
	})
	slices.SortFunc(out.Admissions, func(a, b authz.Admission) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType))
	})
	return out
}

func diffChangeSets(got, want []authz.ChangeSet) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d change sets (%s), want %d (%s)", len(got), revisions(got), len(want), revisions(want))
	}
	for i := range got {
		g, w := normalChangeSet(got[i]), normalChangeSet(want[i])
		if !reflect.DeepEqual(g, w) {
			return fmt.Sprintf("change set %d:\n got %s\nwant %s", i, describe(g), describe(w))
		}
	}
	return ""
}

func revisions(css []authz.ChangeSet) string {
	var revs []string
	for _, cs := range css {
		revs = append(revs, fmt.Sprint(cs.Revision))
	}
	return strings.Join(revs, ",")
}

func describe(cs authz.ChangeSet) string {
	s := fmt.Sprintf("rev %d at %s by %q for %q:", cs.Revision, cs.Time.Format(time.RFC3339Nano), cs.Caller, cs.Actor)
	for _, c := range cs.Changes {
		s += fmt.Sprintf(" %s%+v", c.Op, entity(c))
	}
	return s
}

func entity(c authz.Change) any {
	switch {
	case c.Permission != nil:
		return *c.Permission
	case c.Resource != nil:
		return *c.Resource
	case c.Role != nil:
		return *c.Role
	case c.Grant != nil:
		return *c.Grant
	case c.Block != nil:
		return *c.Block
	case c.Quota != nil:
		return *c.Quota
	case c.CreatorRole != nil:
		return *c.CreatorRole
	case c.DefaultQuota != nil:
		return *c.DefaultQuota
	case c.Admission != nil:
		return *c.Admission
	}
	return nil
}

func normalChangeSet(cs authz.ChangeSet) authz.ChangeSet {
	out := cs
	out.Time = cs.Time.UTC()
	out.Changes = nil
	for _, c := range cs.Changes {
		d := c
		if c.Permission != nil {
			p := *c.Permission
			p.Parents = nonEmpty(p.Parents)
			d.Permission = &p
		}
		if c.Role != nil {
			r := normalRole(*c.Role)
			d.Role = &r
		}
		if c.Grant != nil {
			g := normalGrant(*c.Grant)
			d.Grant = &g
		}
		if c.Block != nil {
			b := normalBlock(*c.Block)
			d.Block = &b
		}
		if c.Resource != nil {
			r := normalResource(*c.Resource)
			d.Resource = &r
		}
		if c.Admission != nil {
			a := normalAdmission(*c.Admission)
			d.Admission = &a
		}
		out.Changes = append(out.Changes, d)
	}
	return out
}

func normalRole(r authz.Role) authz.Role {
	r.Permissions = nonEmpty(r.Permissions)
	r.AssignableRoles = nonEmpty(r.AssignableRoles)
	r.BindableOn = nonEmpty(r.BindableOn)
	return r
}

func normalResource(r authz.Resource) authz.Resource {
	r.StartsAt = instant(r.StartsAt)
	return r
}

func normalAdmission(a authz.Admission) authz.Admission {
	a.UncountedRoles = nonEmpty(a.UncountedRoles)
	a.ExclusiveRoles = nonEmpty(a.ExclusiveRoles)
	a.ExclusivePermissions = nonEmpty(a.ExclusivePermissions)
	if a.Media != nil {
		m := *a.Media
		if len(m.CanPublishSources) == 0 {
			m.CanPublishSources = nil
		}
		a.Media = &m
	}
	return a
}

func normalGrant(g authz.Grant) authz.Grant {
	g.Expires = instant(g.Expires)
	return g
}

func normalBlock(b authz.Block) authz.Block {
	b.Permissions = nonEmpty(b.Permissions)
	b.Expires = instant(b.Expires)
	return b
}

func instant(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

func nonEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
