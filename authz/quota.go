package authz

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

type quotaKey struct {
	typ     string
	subject string
}

type quotaEntry struct {
	Quota
	used int
}

// QuotaUse is a quota with how many resources count against it now.
type QuotaUse struct {
	Quota
	Used int
}

// count adds delta to the use of every quota above n that n counts against.
func (x *Index) count(n *node, delta int) {
	for a := n.parent; a != nil; a = a.parent {
		if a.quotas == nil {
			continue
		}
		if e := a.quotas[quotaKey{n.typ, ""}]; e != nil {
			e.used += delta
		}
		if n.creator != "" {
			if e := a.quotas[quotaKey{n.typ, n.creator}]; e != nil {
				e.used += delta
			}
		}
	}
}

func (x *Index) putQuota(q Quota) {
	n := x.nodes[q.Scope]
	if n.quotas == nil {
		n.quotas = make(map[quotaKey]*quotaEntry)
	}
	key := quotaKey{q.ResourceType, q.Subject}
	if e := n.quotas[key]; e != nil {
		e.Quota = q
		return
	}
	e := &quotaEntry{Quota: q}
	for _, m := range x.subtree(n) {
		if m != n && m.typ == q.ResourceType && (q.Subject == "" || m.creator == q.Subject) {
			e.used++
		}
	}
	n.quotas[key] = e
}

func (x *Index) deleteQuota(q Quota) {
	if n := x.nodes[q.Scope]; n != nil {
		delete(n.quotas, quotaKey{q.ResourceType, q.Subject})
	}
}

// checkQuotas refuses placing resources under parent when that would take
// any quota on parent or above past its limit. add counts what is placed, by
// type and by type and creator. For a move, moved is the subtree's root:
// quotas above it that already count it are not charged twice.
func (x *Index) checkQuotas(add map[quotaKey]int, moved, parent *node) error {
	for a := parent; a != nil; a = a.parent {
		if a.quotas == nil || (moved != nil && isUnder(moved, a)) {
			continue
		}
		for key, n := range add {
			e := a.quotas[key]
			if e == nil || e.used+n <= int(e.Limit) {
				continue
			}
			whose := ""
			if key.subject != "" {
				whose = fmt.Sprintf(" registered by %q", key.subject)
			}
			return errorf(ResourceExhausted, "quota", fmt.Sprintf("%s/%s", a.name, key.typ),
				"at most %d %s resources%s may exist below %q; %d do, and this write adds %d",
				e.Limit, key.typ, whose, a.name, e.used, n)
		}
	}
	return nil
}

// placing counts resources by quota key, as checkQuotas takes them.
func placing(nodes ...*node) map[quotaKey]int {
	add := map[quotaKey]int{}
	for _, m := range nodes {
		add[quotaKey{m.typ, ""}]++
		if m.creator != "" {
			add[quotaKey{m.typ, m.creator}]++
		}
	}
	return add
}

// PutQuota sets a quota's limit. Lowering a limit below the current use is
// allowed: it only stops further registrations.
func (e *Engine) PutQuota(ctx context.Context, by Author, q Quota) (Revision, error) {
	return e.write(ctx, by, func(now time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("quota.scope", q.Scope)
		if err != nil {
			return nil, err
		}
		if err := x.requirePermission(by, n, PermQuotasWrite, "setting a quota on it"); err != nil {
			return nil, err
		}
		if old := n.quotas[quotaKey{q.ResourceType, q.Subject}]; old != nil && old.Quota == q {
			return nil, nil
		}
		return []Change{{Op: OpPutQuota, Quota: &q}}, nil
	})
}

// DeleteQuota removes a quota; NotFound when there is none.
func (e *Engine) DeleteQuota(ctx context.Context, by Author, q Quota) (Revision, error) {
	return e.write(ctx, by, func(now time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("scope", q.Scope)
		if err != nil {
			return nil, err
		}
		if err := x.requirePermission(by, n, PermQuotasWrite, "removing a quota from it"); err != nil {
			return nil, err
		}
		if n.quotas[quotaKey{q.ResourceType, q.Subject}] == nil {
			return nil, errorf(NotFound, "resource_type", q.ResourceType, "no such quota on %q (subject %q)", q.Scope, q.Subject)
		}
		return []Change{{Op: OpDeleteQuota, Quota: &Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject}}}, nil
	})
}

// ListQuotas returns the quotas on resource and its ancestors, nearest
// first, with their use.
func (x *Index) ListQuotas(resource string) ([]QuotaUse, Revision, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	var out []QuotaUse
	for a := n; a != nil; a = a.parent {
		out = append(out, x.quotasAt(a)...)
	}
	return out, x.rev, nil
}

// quotasAt returns the quotas on n itself, ordered.
func (x *Index) quotasAt(n *node) []QuotaUse {
	var out []QuotaUse
	for _, e := range n.quotas {
		out = append(out, QuotaUse{Quota: e.Quota, Used: e.used})
	}
	slices.SortFunc(out, compareQuotas)
	return out
}

func compareQuotas(a, b QuotaUse) int {
	return cmp.Or(strings.Compare(a.ResourceType, b.ResourceType), strings.Compare(a.Subject, b.Subject))
}
