package authz

import (
	"fmt"
	"slices"
)

// MaxDepth is how deep the resource tree may grow: a resource may lie at
// most this many levels below root, and so have this many ancestors, root
// among them. Conferencing trees are a handful of
// levels deep (account > workspace > event > call type > call); the bound
// keeps every walk to root, and so every check, short.
const MaxDepth = 32

const noNode = ^uint32(0)

// lookupNode returns a registered resource's id, or noNode.
func (x *Index) lookupNode(name string) uint32 {
	return x.liveNode(x.res.lookup(name))
}

// liveNode returns id when it is a registered resource's, else noNode.
func (x *Index) liveNode(id uint32) uint32 {
	if id == noName || int(id) >= len(x.nodes) || x.nodes[id].flags&nodeLive == 0 {
		return noNode
	}
	return id
}

// addNode registers name under parent (noNode for root) and returns its id.
func (x *Index) addNode(name string, parent uint32) uint32 {
	id, _ := x.res.intern(name)
	for int(id) >= len(x.nodes) {
		x.nodes = append(x.nodes, node{})
	}
	typ := x.refType(TypeOf(name))
	x.nodes[id] = node{parent: noNode, first: noNode, next: noNode, prev: noNode, typ: typ, flags: nodeLive}
	if parent != noNode {
		x.link(id, parent)
		x.countSubtree(id, 1)
	}
	return id
}

// link makes id the first child of parent.
func (x *Index) link(id, parent uint32) {
	n, p := &x.nodes[id], &x.nodes[parent]
	n.parent, n.prev, n.next = parent, noNode, p.first
	if p.first != noNode {
		x.nodes[p.first].prev = id
	}
	p.first = id
	p.children++
}

// unlink takes id out of its parent's children.
func (x *Index) unlink(id uint32) {
	n := &x.nodes[id]
	p := &x.nodes[n.parent]
	if n.prev != noNode {
		x.nodes[n.prev].next = n.next
	} else {
		p.first = n.next
	}
	if n.next != noNode {
		x.nodes[n.next].prev = n.prev
	}
	p.children--
	n.parent, n.prev, n.next = noNode, noNode, noNode
}

// countSubtree adds delta, for every resource in id's subtree, to the type
// counts of id's ancestors: what quotas read.
func (x *Index) countSubtree(id uint32, delta int) {
	counts, created := x.subtreeTypes(id)
	if len(created) > 0 {
		x.countQuotaSubjects(id, created, delta)
	}
	for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
		for typ, n := range counts {
			k := typeKey(a, typ)
			v := int(x.typeCounts[k]) + delta*n
			if v == 0 {
				delete(x.typeCounts, k)
			} else {
				x.typeCounts[k] = uint32(v)
			}
		}
	}
}

// subtreeTypes counts the resources of id's subtree, id included, by type,
// and those with a creator by type and creator's subject id.
func (x *Index) subtreeTypes(id uint32) (map[uint32]int, map[[2]uint32]int) {
	counts := map[uint32]int{}
	var created map[[2]uint32]int
	x.walk(id, func(m uint32) bool {
		n := &x.nodes[m]
		counts[n.typ]++
		if n.creator != 0 {
			if created == nil {
				created = map[[2]uint32]int{}
			}
			created[[2]uint32{n.typ, n.creator - 1}]++
		}
		return true
	})
	return counts, created
}

// walk visits id and its descendants, parents before children, while visit
// returns true; it returns false when visit stopped it.
func (x *Index) walk(id uint32, visit func(uint32) bool) bool {
	if !visit(id) {
		return false
	}
	for c := x.nodes[id].first; c != noNode; c = x.nodes[c].next {
		if !x.walk(c, visit) {
			return false
		}
	}
	return true
}

// putResource registers r, or moves it under r.Parent.
func (x *Index) putResource(r Resource) error {
	parent := x.lookupNode(r.Parent)
	if id := x.lookupNode(r.Name); id != noNode {
		x.setStage(id, r)
		if x.nodes[id].parent == parent {
			return nil
		}
		if x.under(parent, id) {
			return fmt.Errorf("moving %q under %q would form a cycle", r.Name, r.Parent)
		}
		x.countSubtree(id, -1)
		x.unlink(id)
		x.link(id, parent)
		x.countSubtree(id, 1)
		return nil
	}
	id := x.addNode(r.Name, parent)
	x.setStage(id, r)
	if r.Creator != "" {
		s := x.refSubject(r.Creator)
		x.nodes[id].creator = s + 1
		list := x.created.get(s)
		x.created.insert(s, searchUint32(list, id), id)
		// addNode counted the resource before it had a creator.
		x.countQuotaSubjects(id, map[[2]uint32]int{{x.nodes[id].typ, s}: 1}, 1)
	}
	return nil
}

// deleteResource removes a resource and everything on it: grants, blocks,
// role definitions, quotas. The engine deletes only resources without
// children; a feed that says otherwise has the children re-parented to
// root, so that the tree stays whole.
func (x *Index) deleteResource(name string) {
	id := x.lookupNode(name)
	if id == noNode {
		return
	}
	for x.nodes[id].first != noNode {
		c := x.nodes[id].first
		x.countSubtree(c, -1)
		x.unlink(c)
		x.link(c, x.root)
		x.countSubtree(c, 1)
	}
	for x.byResource.count(id) > 0 {
		g := x.byResource.get(id)[0]
		x.deleteGrant(Grant{Subject: x.subj.name(g.subj), Role: x.roleNames[g.role], Resource: name})
	}
	for _, s := range append([]uint32(nil), x.blockedOn[id]...) {
		// deleteBlock shortens the list in place.
		for _, b := range slices.Clone(x.blocks[pairKey(s, id)]) {
			x.deleteBlock(b.Block)
		}
	}
	for _, role := range append([]uint32(nil), x.rolesAt[id]...) {
		x.deleteRole(name, x.roleNames[role])
	}
	for _, q := range append([]Quota(nil), x.quotas[id]...) {
		x.deleteQuota(q)
	}
	for _, a := range x.admissionsAt(id) {
		x.deleteAdmission(name, a.ResourceType)
	}
	delete(x.stages, id)
	x.countSubtree(id, -1)
	x.unlink(id)
	if c := x.nodes[id].creator; c != 0 {
		s := c - 1
		list := x.created.get(s)
		if i := searchUint32(list, id); i < len(list) && list[i] == id {
			x.created.remove(s, i)
		}
		x.unrefSubject(s)
	}
	x.unrefType(x.nodes[id].typ)
	x.nodes[id] = node{}
	x.res.release(id)
}

// refType returns a resource type's id, counting one more resource of it.
func (x *Index) refType(typ string) uint32 { return ref(x.types, &x.typeRefs, typ) }

func (x *Index) unrefType(id uint32) { unref(x.types, x.typeRefs, id) }

// under reports whether n is anc or one of its descendants.
func (x *Index) under(n, anc uint32) bool {
	for ; n != noNode; n = x.nodes[n].parent {
		if n == anc {
			return true
		}
	}
	return false
}

// path appends id and its ancestors up to root, nearest first, to buf.
func (x *Index) path(id uint32, buf []uint32) []uint32 {
	for ; id != noNode; id = x.nodes[id].parent {
		buf = append(buf, id)
	}
	return buf
}

// pathFlags is path, with the flags of the resources on it together.
func (x *Index) pathFlags(id uint32, buf []uint32) ([]uint32, uint8) {
	var flags uint8
	for ; id != noNode; id = x.nodes[id].parent {
		buf = append(buf, id)
		flags |= x.nodes[id].flags
	}
	return buf, flags
}

// depth is how many ancestors id has: 0 for root, 1 for the resources right
// below it.
func (x *Index) depth(id uint32) int {
	d := 0
	for n := x.nodes[id].parent; n != noNode; n = x.nodes[n].parent {
		d++
	}
	return d
}

// height is how many levels id's subtree spans below id.
func (x *Index) height(id uint32) int {
	h := 0
	for c := x.nodes[id].first; c != noNode; c = x.nodes[c].next {
		h = max(h, 1+x.height(c))
	}
	return h
}

// name returns a resource's name.
func (x *Index) name(id uint32) string { return x.res.name(id) }

// typeName returns a resource's type.
func (x *Index) typeName(id uint32) string { return x.types.name(x.nodes[id].typ) }

func searchUint32(list []uint32, v uint32) int {
	lo, hi := 0, len(list)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if list[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// registered returns the id of a resource a write names, or NotFound.
func (x *Index) registered(field, name string) (uint32, error) {
	id := x.lookupNode(name)
	if id == noNode {
		return noNode, errorf(NotFound, field, name, "resource is not registered").as(KindResourceNotFound)
	}
	return id, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
