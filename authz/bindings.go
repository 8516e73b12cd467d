package authz

import "strings"

// Grants are kept twice: in their subject's list, sorted by resource and then
// role name, which is what Check walks; and in their resource's list, sorted
// by role name and then subject name, which is what holder counts, deletions
// and listings by resource read.

// putGrant stores g, or updates its expiry.
func (x *Index) putGrant(g Grant) {
	res := x.lookupNode(g.Resource)
	role := x.internRole(g.Role)
	exp := expiry(g.Expires)
	s := x.subj.lookup(g.Subject)
	if s != noName {
		if i, found := x.findSubjectGrant(s, res, role); found {
			x.bySubject.set(s, i, subjectGrant{res: res, role: role, exp: exp})
			j, _ := x.findResourceGrant(res, role, s)
			x.byResource.set(res, j, resourceGrant{role: role, subj: s, exp: exp})
			return
		}
	}
	s = x.refSubject(g.Subject)
	i, _ := x.findSubjectGrant(s, res, role)
	x.bySubject.insert(s, i, subjectGrant{res: res, role: role, exp: exp})
	j, _ := x.findResourceGrant(res, role, s)
	x.byResource.insert(res, j, resourceGrant{role: role, subj: s, exp: exp})
	x.roleHolders[role]++
	x.grants++
}

// deleteGrant removes g's binding, if it is there.
func (x *Index) deleteGrant(g Grant) {
	res, role, s := x.lookupNode(g.Resource), x.roleID(g.Role), x.subj.lookup(g.Subject)
	if res == noNode || role == noName || s == noName {
		return
	}
	i, found := x.findSubjectGrant(s, res, role)
	if !found {
		return
	}
	x.bySubject.remove(s, i)
	j, _ := x.findResourceGrant(res, role, s)
	x.byResource.remove(res, j)
	x.roleHolders[role]--
	x.grants--
	x.unrefSubject(s)
}

// findSubjectGrant returns the position of (res, role) in s's list, or where
// it would go.
func (x *Index) findSubjectGrant(s, res, role uint32) (int, bool) {
	list := x.bySubject.get(s)
	name := "" // before every name: no role is defined yet
	if int(role) < len(x.roleNames) {
		name = x.roleNames[role]
	}
	lo, hi := 0, len(list)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		g := list[m]
		if g.res < res || g.res == res && strings.Compare(x.roleNames[g.role], name) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(list) && list[lo].res == res && list[lo].role == role
}

// findResourceGrant returns the position of (role, s) in res's list, or
// where it would go.
func (x *Index) findResourceGrant(res, role, s uint32) (int, bool) {
	i := x.searchResourceGrants(res, x.roleNames[role], x.subj.name(s))
	list := x.byResource.get(res)
	return i, i < len(list) && list[i].role == role && list[i].subj == s
}

// searchResourceGrants returns the first position of res's list at or after
// (role, subject), by name.
func (x *Index) searchResourceGrants(res uint32, role, subject string) int {
	list := x.byResource.get(res)
	lo, hi := 0, len(list)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.compareResourceGrant(list[m], role, subject) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (x *Index) compareResourceGrant(g resourceGrant, role, subject string) int {
	if c := strings.Compare(x.roleNames[g.role], role); c != 0 {
		return c
	}
	return strings.Compare(x.subj.name(g.subj), subject)
}

// grantsOn returns the part of s's list on resource res.
func (x *Index) grantsOn(s, res uint32) []subjectGrant {
	return grantsAt(x.bySubject.get(s), res)
}

// grantsAt returns the part of a subject's list on resource res.
func grantsAt(list []subjectGrant, res uint32) []subjectGrant {
	if len(list) <= 8 {
		for i, g := range list {
			if g.res == res {
				j := i + 1
				for j < len(list) && list[j].res == res {
					j++
				}
				return list[i:j]
			}
		}
		return nil
	}
	lo, hi := 0, len(list)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if list[m].res < res {
			lo = m + 1
		} else {
			hi = m
		}
	}
	j := lo
	for j < len(list) && list[j].res == res {
		j++
	}
	return list[lo:j]
}

// holdersOf returns the part of res's list that holds role.
func (x *Index) holdersOf(res, role uint32) []resourceGrant {
	list := x.byResource.get(res)
	if len(list) == 0 {
		return nil
	}
	i := x.searchResourceGrants(res, x.roleNames[role], "")
	j := i
	for j < len(list) && list[j].role == role {
		j++
	}
	return list[i:j]
}

// holdersOfAny passes visit the grants on res of the roles in sorted, a
// sorted list whose members set holds: by looking up each role, or by
// looking at each grant on res when there are fewer of those.
func holdersOfAny[V any](x *Index, res uint32, sorted []uint32, set map[uint32]V, visit func(resourceGrant)) {
	list := x.byResource.get(res)
	if len(list) > len(sorted) {
		for _, role := range sorted {
			for _, g := range x.holdersOf(res, role) {
				visit(g)
			}
		}
		return
	}
	for _, g := range list {
		if _, ok := set[g.role]; ok {
			visit(g)
		}
	}
}

// liveHolders counts the subjects holding role on res itself, unexpired.
func (x *Index) liveHolders(res, role uint32, now int64) int {
	n := 0
	for _, g := range x.holdersOf(res, role) {
		if live(g.exp, now) {
			n++
		}
	}
	return n
}

// grantOf rebuilds a grant from its ids.
func (x *Index) grantOf(s, role, res uint32, exp int64) Grant {
	return Grant{Subject: x.subj.name(s), Role: x.roleNames[role], Resource: x.name(res), Expires: expiryTime(exp)}
}
