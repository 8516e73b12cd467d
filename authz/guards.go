package authz

// Guard keys name what a write's plan read and what a commit changes, at the
// grain the engine's rules depend on. A write is planned against the index
// at some revision and committed only if none of the keys it read was
// touched by a commit after that revision (see Backend.Commit); otherwise it
// is planned again. Every commit touches the keys of what it changes, as
// touches says. Keys are compared for equality only.
const (
	keyCatalog = "catalog" // the permission catalog, creator roles, default quotas, admission rules
	keyRoles   = "roles"   // every role definition
	keyTree    = "tree"    // the shape of the tree: moves
	keyBlocks  = "blocks"  // which permissions any block names: every block write
)

// resourceKey covers a resource's existence, its parent and its children.
func resourceKey(name string) string { return "r\x00" + name }

// bindingsKey covers the grants and blocks on a resource.
func bindingsKey(name string) string { return "g\x00" + name }

// subjectKey covers a subject's grants and blocks.
func subjectKey(name string) string { return "s\x00" + name }

// bindingKey covers one binding: whether the subject holds the role on the
// resource, and until when.
func bindingKey(subject, resource, role string) string {
	return "b\x00" + subject + "\x00" + resource + "\x00" + role
}

// holdersKey covers which bindings of a role exist, anywhere.
func holdersKey(role string) string { return "h\x00" + role }

// quotaScopeKey covers the quotas at a resource and what counts against
// them.
func quotaScopeKey(name string) string { return "q\x00" + name }

// subtreeKey covers what lies below a resource, as a move of it carries it
// along: how many resources of each type, and how deep. A registration
// touches it on every ancestor, root included; a move guards it on the
// resource it moves, so that a resource registered below during the move's
// commit is counted against the quotas and the depth limit where it lands,
// and a policy guards it where it sets a quota that it counts its own
// resources against, as none is set there yet to be touched.
func subtreeKey(name string) string { return "t\x00" + name }

// touches returns the keys a change touches, read against x before the
// change set it belongs to is applied (a move's old parent comes from x).
func (x *Index) touches(c Change) []string {
	switch c.Op {
	case OpPutPermission, OpDeletePermission, OpPutCreatorRole, OpDeleteCreatorRole,
		OpPutDefaultQuota, OpDeleteDefaultQuota, OpPutAdmission, OpDeleteAdmission:
		return []string{keyCatalog}
	case OpPutRole, OpDeleteRole:
		return []string{keyRoles}
	case OpPutGrant, OpDeleteGrant:
		g := c.Grant
		return []string{subjectKey(g.Subject), bindingsKey(g.Resource), holdersKey(g.Role), bindingKey(g.Subject, g.Resource, g.Role)}
	case OpPutBlock, OpDeleteBlock:
		return []string{subjectKey(c.Block.Subject), bindingsKey(c.Block.Resource), keyBlocks}
	case OpPutQuota, OpDeleteQuota:
		return []string{quotaScopeKey(c.Quota.Scope)}
	case OpPutResource:
		keys := []string{resourceKey(c.Resource.Name), resourceKey(c.Resource.Parent)}
		keys = x.quotaTouches(keys, c.Resource.Parent)
		if id := x.lookupNode(c.Resource.Name); id != noNode {
			old := x.name(x.nodes[id].parent)
			keys = append(keys, keyTree, resourceKey(old), subtreeKey(c.Resource.Name))
			keys = x.quotaTouches(keys, old)
			return keys
		}
		// A parent registered in the same change set adds the rest of the
		// path with its own registration.
		for a := x.lookupNode(c.Resource.Parent); a != noNode; a = x.nodes[a].parent {
			keys = append(keys, subtreeKey(x.name(a)))
		}
		return keys
	case OpDeleteResource:
		keys := []string{resourceKey(c.Resource.Name), bindingsKey(c.Resource.Name), quotaScopeKey(c.Resource.Name)}
		if id := x.lookupNode(c.Resource.Name); id != noNode && x.nodes[id].parent != noNode {
			parent := x.name(x.nodes[id].parent)
			keys = append(keys, resourceKey(parent))
			keys = x.quotaTouches(keys, parent)
		}
		return keys
	}
	return nil
}

// quotaTouches adds the quota keys of from and its ancestors that carry
// quotas: what a resource placed or removed below them changes.
func (x *Index) quotaTouches(keys []string, from string) []string {
	for a := x.lookupNode(from); a != noNode; a = x.nodes[a].parent {
		if x.nodes[a].flags&nodeQuotas != 0 {
			keys = append(keys, quotaScopeKey(x.name(a)))
		}
	}
	return keys
}
