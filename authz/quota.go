package authz

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
)

// QuotaUse is a quota with how many resources count against it now.
type QuotaUse struct {
	Quota
	Used int
}

func (x *Index) putQuota(q Quota) { x.placeQuota(q, true) }

// placeQuota puts q; a quota naming a subject gets its count now when
// count says so, else later, with every other (see countSubjectQuotas).
func (x *Index) placeQuota(q Quota, count bool) {
	scope := x.lookupNode(q.Scope)
	list := x.quotas[scope]
	i, found := slices.BinarySearchFunc(list, q, compareQuotaKeys)
	if found {
		list[i] = q
		return
	}
	if q.Subject != "" {
		s := x.refSubject(q.Subject)
		n := 0
		if count {
			n = x.countCreated(s, scope, q.ResourceType)
		}
		x.subjectUse[subjectQuotaKey{scope, s, q.ResourceType}] = n
	}
	x.quotas[scope] = slices.Insert(list, i, q)
	x.nodes[scope].flags |= nodeQuotas
}

func (x *Index) deleteQuota(q Quota) {
	scope := x.lookupNode(q.Scope)
	if scope == noNode {
		return
	}
	list := x.quotas[scope]
	i, found := slices.BinarySearchFunc(list, q, compareQuotaKeys)
	if !found {
		return
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(x.quotas, scope)
		x.nodes[scope].flags &^= nodeQuotas
	} else {
		x.quotas[scope] = list
	}
	if q.Subject != "" {
		s := x.subj.lookup(q.Subject)
		delete(x.subjectUse, subjectQuotaKey{scope, s, q.ResourceType})
		x.unrefSubject(s)
	}
}

// subjectQuotaKey names the count of a quota that names a subject: its
// scope, its subject's id (which the quota keeps interned) and its type.
type subjectQuotaKey struct {
	scope, subject uint32
	typ            string
}

// countCreated counts the resources of typ strictly below scope that s
// registered. It runs once when a quota naming s is set (and at load);
// from then on the count is kept as resources come and go (countSubtree).
//
// It runs as the quota is applied, under the lock Check takes, so it costs
// what lies below scope or what s registered, whichever is less: a quota
// on an account's few rooms that names a subject who registered a million
// resources elsewhere does not go through the million.
func (x *Index) countCreated(s, scope uint32, typ string) int {
	t := x.types.lookup(typ)
	if t == noName || x.typeCounts[typeKey(scope, t)] == 0 {
		return 0
	}
	created := x.created.get(s)
	if n, ok := x.countCreatedBelow(s, scope, t, len(created)); ok {
		return n
	}
	n := 0
	for _, id := range created {
		if id != scope && x.nodes[id].typ == t && x.under(id, scope) {
			n++
		}
	}
	return n
}

// countCreatedBelow counts the resources of type t strictly below id that
// s registered, going down only where resources of t are; ok is false, and
// the count unfinished, once it has looked at more than limit resources.
func (x *Index) countCreatedBelow(s, id, t uint32, limit int) (n int, ok bool) {
	looked := 0
	var below func(id uint32) bool
	below = func(id uint32) bool {
		for c := x.nodes[id].first; c != noNode; c = x.nodes[c].next {
			if looked++; looked > limit {
				return false
			}
			if x.nodes[c].typ == t && x.nodes[c].creator == s+1 {
				n++
			}
			if x.typeCounts[typeKey(c, t)] > 0 && !below(c) {
				return false
			}
		}
		return true
	}
	return n, below(id)
}

// countSubjectQuotas counts, for every quota naming a subject, the
// resources of its type below its scope that the subject registered:
// each such subject's registrations once, each up its ancestors, however
// many quotas name it.
func (x *Index) countSubjectQuotas() {
	subjects := map[uint32]bool{}
	for k := range x.subjectUse {
		x.subjectUse[k] = 0
		subjects[k.subject] = true
	}
	for s := range subjects {
		for _, id := range x.created.get(s) {
			typ := x.types.name(x.nodes[id].typ)
			for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
				if x.nodes[a].flags&nodeQuotas == 0 {
					continue
				}
				key := subjectQuotaKey{a, s, typ}
				if _, ok := x.subjectUse[key]; ok {
					x.subjectUse[key]++
				}
			}
		}
	}
}

// countQuotaSubjects adds delta times the counts of created, by type and
// creator, to the quotas naming a subject on id's ancestors.
func (x *Index) countQuotaSubjects(id uint32, created map[[2]uint32]int, delta int) {
	for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
		if x.nodes[a].flags&nodeQuotas == 0 {
			continue
		}
		for k, n := range created {
			key := subjectQuotaKey{a, k[1], x.types.name(k[0])}
			if v, ok := x.subjectUse[key]; ok {
				x.subjectUse[key] = v + delta*n
			}
		}
	}
}

func (x *Index) putDefaultQuota(d DefaultQuota) {
	list := x.defaultQuotas[d.ScopeType]
	i, found := slices.BinarySearchFunc(list, d.ResourceType, func(e DefaultQuota, t string) int { return strings.Compare(e.ResourceType, t) })
	if found {
		list[i] = d
		return
	}
	x.defaultQuotas[d.ScopeType] = slices.Insert(list, i, d)
}

func (x *Index) deleteDefaultQuota(d DefaultQuota) {
	list := x.defaultQuotas[d.ScopeType]
	i, found := slices.BinarySearchFunc(list, d.ResourceType, func(e DefaultQuota, t string) int { return strings.Compare(e.ResourceType, t) })
	if !found {
		return
	}
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(x.defaultQuotas, d.ScopeType)
	} else {
		x.defaultQuotas[d.ScopeType] = list
	}
}

// quotaAt returns the quota at scope for typ and subject, if there is one.
func (x *Index) quotaAt(scope uint32, typ, subject string) (Quota, bool) {
	if x.nodes[scope].flags&nodeQuotas == 0 {
		return Quota{}, false
	}
	list := x.quotas[scope]
	i, found := slices.BinarySearchFunc(list, Quota{ResourceType: typ, Subject: subject}, compareQuotaKeys)
	if !found {
		return Quota{}, false
	}
	return list[i], true
}

// used counts the resources below q's scope that count against it: of its
// type, and registered by its subject when it names one. Both counts are
// kept as resources come and go, so a quota that is set costs a lookup.
func (x *Index) used(q Quota) int {
	scope := x.lookupNode(q.Scope)
	typ := x.types.lookup(q.ResourceType)
	if scope == noNode || typ == noName {
		return 0
	}
	if q.Subject == "" {
		return int(x.typeCounts[typeKey(scope, typ)])
	}
	s := x.subj.lookup(q.Subject)
	if s == noName {
		return 0
	}
	if n, ok := x.subjectUse[subjectQuotaKey{scope, s, q.ResourceType}]; ok {
		return n
	}
	// No such quota is set (a policy being planned asks): count.
	return x.countCreated(s, scope, q.ResourceType)
}

// placement counts resources by type, and by type and creator, as quotas
// count them.
type placement map[[2]string]int

func (p placement) add(typ, creator string) {
	p[[2]string{typ, ""}]++
	if creator != "" {
		p[[2]string{typ, creator}]++
	}
}

// placementOf counts id's subtree, id included.
func (x *Index) placementOf(id uint32) placement {
	p := placement{}
	x.walk(id, func(m uint32) bool {
		creator := ""
		if c := x.nodes[m].creator; c != 0 {
			creator = x.subj.name(c - 1)
		}
		p.add(x.typeName(m), creator)
		return true
	})
	return p
}

// checkQuotas refuses placing resources under parent when that would take
// any quota on parent or above past its limit. For a move, moved is the
// subtree's root: quotas above it that already count it are not charged
// twice. It returns the scopes whose quotas it read, for guards.
func (x *Index) checkQuotas(add placement, moved, parent uint32) ([]uint32, error) {
	var scopes []uint32
	for a := parent; a != noNode; a = x.nodes[a].parent {
		if moved != noNode && x.under(moved, a) {
			continue
		}
		scopes = append(scopes, a)
		if x.nodes[a].flags&nodeQuotas == 0 {
			continue
		}
		keys := make([][2]string, 0, len(add))
		for k := range add {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1])) })
		for _, key := range keys {
			q, ok := x.quotaAt(a, key[0], key[1])
			if !ok {
				continue
			}
			used, n := x.used(q), add[key]
			if used+n <= int(q.Limit) {
				continue
			}
			whose := ""
			if key[1] != "" {
				whose = fmt.Sprintf(" registered by %q", key[1])
			}
			e := errorf(ResourceExhausted, "quota", fmt.Sprintf("%s/%s", x.name(a), key[0]),
				"at most %d %s resources%s may exist below %q; %d do, and this write adds %d",
				q.Limit, key[0], whose, x.name(a), used, n).as(KindQuotaExceeded)
			e.Meta = map[string]string{"scope": x.name(a), "resource_type": key[0], "limit": fmt.Sprint(q.Limit), "used": fmt.Sprint(used)}
			if key[1] != "" {
				e.Meta["subject"] = key[1]
			}
			return scopes, e
		}
	}
	return scopes, nil
}

// PutQuota sets a quota's limit. Lowering a limit below the current use is
// allowed: it only stops further registrations.
func (e *Engine) PutQuota(ctx context.Context, by Author, q Quota) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		scope, err := x.registered("quota.scope", q.Scope)
		if err != nil {
			return err
		}
		p.guard(resourceKey(q.Scope), quotaScopeKey(q.Scope))
		if err := p.require(scope, PermQuotasWrite, "setting a quota on it"); err != nil {
			return err
		}
		if old, ok := x.quotaAt(scope, q.ResourceType, q.Subject); ok && old == q {
			return nil
		}
		p.change(Change{Op: OpPutQuota, Quota: &q})
		return nil
	})
}

// DeleteQuota removes a quota; NotFound when there is none.
func (e *Engine) DeleteQuota(ctx context.Context, by Author, q Quota) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		scope, err := x.registered("scope", q.Scope)
		if err != nil {
			return err
		}
		p.guard(resourceKey(q.Scope), quotaScopeKey(q.Scope))
		if err := p.require(scope, PermQuotasWrite, "removing a quota from it"); err != nil {
			return err
		}
		if _, ok := x.quotaAt(scope, q.ResourceType, q.Subject); !ok {
			return errorf(NotFound, "resource_type", q.ResourceType, "no such quota on %q (subject %q)", q.Scope, q.Subject).as(KindQuotaNotFound)
		}
		p.change(Change{Op: OpDeleteQuota, Quota: &Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject}})
		return nil
	})
}

// ListQuotas returns the quotas on resource and its ancestors, nearest
// first, with their use.
func (x *Index) ListQuotas(resource string) ([]QuotaUse, Revision, error) {
	x.view.RLock()
	defer x.view.RUnlock()
	id, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	var out []QuotaUse
	for a := id; a != noNode; a = x.nodes[a].parent {
		out = append(out, x.quotasAt(a)...)
	}
	return out, x.rev, nil
}

// quotasAt returns the quotas on id itself with their use, ordered.
func (x *Index) quotasAt(id uint32) []QuotaUse {
	var out []QuotaUse
	for _, q := range x.quotas[id] {
		out = append(out, QuotaUse{Quota: q, Used: x.used(q)})
	}
	return out
}

func compareQuotaKeys(a, b Quota) int {
	return cmp.Or(strings.Compare(a.ResourceType, b.ResourceType), strings.Compare(a.Subject, b.Subject))
}
