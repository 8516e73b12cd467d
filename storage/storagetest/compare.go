package storagetest

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Backends may return times in any zone and with empty slices as nil or not;
// comparisons normalise both away, so times compare as instants (as with
// time.Time.Equal) and everything else with reflect.DeepEqual.

func wantSnapshot(t *testing.T, got, want authz.Snapshot) {
	t.Helper()
	got, want = normalSnapshot(got), normalSnapshot(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot differs:\n got %+v\nwant %+v", got, want)
	}
}

// normalSnapshot sorts resources because backends may load them in any
// order: the index links parents after loading them all.
func normalSnapshot(s authz.Snapshot) authz.Snapshot {
	out := authz.Snapshot{Revision: s.Revision}
	for _, p := range s.Permissions {
		p.Parents = nonEmpty(p.Parents)
		out.Permissions = append(out.Permissions, p)
	}
	out.Resources = slices.Clone(s.Resources)
	slices.SortFunc(out.Resources, func(a, b authz.Resource) int { return strings.Compare(a.Name, b.Name) })
	if len(out.Resources) == 0 {
		out.Resources = nil
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
	out.Quotas = nonEmpty(s.Quotas)
	out.CreatorRoles = nonEmpty(s.CreatorRoles)
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
	var rs []string
	for _, cs := range css {
		rs = append(rs, fmt.Sprint(cs.Revision))
	}
	return "revisions [" + strings.Join(rs, " ") + "]"
}

func describe(cs authz.ChangeSet) string {
	s := fmt.Sprintf("{rev %d time %s caller %q actor %q", cs.Revision, cs.Time, cs.Caller, cs.Actor)
	for _, c := range cs.Changes {
		s += " " + c.Op.String() + ":"
		switch {
		case c.Permission != nil:
			s += fmt.Sprintf("%+v", *c.Permission)
		case c.Resource != nil:
			s += fmt.Sprintf("%+v", *c.Resource)
		case c.Role != nil:
			s += fmt.Sprintf("%+v", *c.Role)
		case c.Grant != nil:
			s += fmt.Sprintf("%+v", *c.Grant)
		case c.Block != nil:
			s += fmt.Sprintf("%+v", *c.Block)
		}
	}
	return s + "}"
}

func normalChangeSet(cs authz.ChangeSet) authz.ChangeSet {
	out := authz.ChangeSet{Revision: cs.Revision, Time: instant(cs.Time), Caller: cs.Caller, Actor: cs.Actor}
	for _, c := range cs.Changes {
		d := authz.Change{Op: c.Op}
		if c.Permission != nil {
			p := *c.Permission
			p.Parents = nonEmpty(p.Parents)
			d.Permission = &p
		}
		if c.Resource != nil {
			r := *c.Resource
			d.Resource = &r
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

func normalGrant(g authz.Grant) authz.Grant {
	g.Expires = instant(g.Expires)
	return g
}

func normalBlock(b authz.Block) authz.Block {
	b.Permissions = nonEmpty(b.Permissions)
	b.Expires = instant(b.Expires)
	return b
}

// instant drops the zone and the monotonic reading, after which two times
// are reflect.DeepEqual exactly when they are Equal.
func instant(t time.Time) time.Time { return t.UTC() }

func nonEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
