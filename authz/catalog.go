package authz

import (
	"maps"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// bitset is a set of interned permissions.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int32) bool {
	w := int(i >> 6)
	return w < len(b) && b[w]&(1<<(uint(i)&63)) != 0
}

func (b bitset) set(i int32) { b[i>>6] |= 1 << (uint(i) & 63) }

func (b bitset) union(o bitset) {
	for i := range o {
		b[i] |= o[i]
	}
}

func (b bitset) subtract(o bitset) {
	for i := range o {
		b[i] &^= o[i]
	}
}

// minus returns a new set of b's members that are not in o.
func (b bitset) minus(o bitset) bitset {
	out := slices.Clone(b)
	out.subtract(o)
	return out
}

func (b bitset) equal(o bitset) bool {
	for i := range max(len(b), len(o)) {
		var x, y uint64
		if i < len(b) {
			x = b[i]
		}
		if i < len(o) {
			y = o[i]
		}
		if x != y {
			return false
		}
	}
	return true
}

// intersects reports whether b and o share a member.
func (b bitset) intersects(o bitset) bool {
	for i := range min(len(b), len(o)) {
		if b[i]&o[i] != 0 {
			return true
		}
	}
	return false
}

func (b bitset) empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

func (b bitset) subsetOf(o bitset) bool {
	for i := range b {
		if i >= len(o) {
			if b[i] != 0 {
				return false
			}
			continue
		}
		if b[i]&^o[i] != 0 {
			return false
		}
	}
	return true
}

func (b bitset) each(fn func(int32)) {
	for w, word := range b {
		for word != 0 {
			t := bits.TrailingZeros64(word)
			fn(int32(w*64 + t))
			word &^= 1 << uint(t)
		}
	}
}

// catalog is the permission tree, interned: permission i is the i-th name in
// sorted order, and implied[i] holds i with everything it implies.
type catalog struct {
	perms    []Permission // sorted by name
	ids      map[string]int32
	implied  []bitset
	all      bitset
	reserved bitset // Usher's own permissions, usher.*

	// lists is names' cache, copied on write under listsMu.
	lists   atomic.Pointer[map[namesKey][]string]
	listsMu sync.Mutex
}

// newCatalog interns perms. It reports the first undeclared parent or cycle
// as an Invalid error on field (e.g. "policy.permissions").
func newCatalog(perms []Permission, field string) (*catalog, error) {
	c := &catalog{perms: slices.Clone(perms), ids: make(map[string]int32, len(perms))}
	slices.SortFunc(c.perms, func(a, b Permission) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range c.perms {
		if _, dup := c.ids[p.Name]; dup {
			return nil, errorf(Invalid, field, p.Name, "permission is declared twice")
		}
		c.ids[p.Name] = int32(i)
	}
	children := make([][]int32, len(c.perms))
	for i, p := range c.perms {
		for _, parent := range p.Parents {
			pi, ok := c.ids[parent]
			if !ok {
				return nil, errorf(Invalid, field, p.Name, "parent %q is not a declared permission", parent)
			}
			children[pi] = append(children[pi], int32(i))
		}
	}
	// Depth-first closure with cycle detection: 0 unvisited, 1 on the stack,
	// 2 done.
	state := make([]uint8, len(c.perms))
	c.implied = make([]bitset, len(c.perms))
	var visit func(i int32) error
	visit = func(i int32) error {
		switch state[i] {
		case 1:
			return errorf(Invalid, field, c.perms[i].Name, "permission implies itself through its children (a cycle)")
		case 2:
			return nil
		}
		state[i] = 1
		set := newBitset(len(c.perms))
		set.set(i)
		for _, ch := range children[i] {
			if err := visit(ch); err != nil {
				return err
			}
			set.union(c.implied[ch])
		}
		c.implied[i] = set
		state[i] = 2
		return nil
	}
	c.all = newBitset(len(c.perms))
	c.reserved = newBitset(len(c.perms))
	for i := range c.perms {
		if err := visit(int32(i)); err != nil {
			return nil, err
		}
		c.all.set(int32(i))
		if IsReserved(c.perms[i].Name) {
			c.reserved.set(int32(i))
		}
	}
	return c, nil
}

// id returns the interned permission, or -1 when it is not declared.
func (c *catalog) id(name string) int32 {
	if i, ok := c.ids[name]; ok {
		return i
	}
	return -1
}

// closure is the set of permissions that holding names implies; "*" is all.
// Undeclared names are skipped: callers validate first.
func (c *catalog) closure(names []string) bitset {
	set := newBitset(len(c.perms))
	for _, n := range names {
		if n == Wildcard {
			set.union(c.all)
			continue
		}
		if i := c.id(n); i >= 0 {
			set.union(c.implied[i])
		}
	}
	return set
}

// undeclared returns the index of the first name that is neither declared
// nor, when wildcard is true, "*"; -1 if all are.
func (c *catalog) undeclared(names []string, wildcard bool) int {
	for i, n := range names {
		if n == Wildcard && wildcard {
			continue
		}
		if c.id(n) < 0 {
			return i
		}
	}
	return -1
}

// top names the permission of set that says most about it, for messages:
// the one that implies the most of set's members (a domain permission over a
// reserved one when they tie); "" for an empty set. "account.manage" says
// more than one of the reserved permissions it implies.
func (c *catalog) top(set bitset) string {
	best, most := -1, 0
	set.each(func(i int32) {
		n := 0
		c.implied[i].each(func(j int32) {
			if set.has(j) {
				n++
			}
		})
		if n > most || n == most && best >= 0 && IsReserved(c.perms[best].Name) && !IsReserved(c.perms[i].Name) {
			best, most = int(i), n
		}
	})
	if best < 0 {
		return ""
	}
	return c.perms[best].Name
}

// missing names a permission of role that have lacks, or "": preferably one
// the role lists by name, so that a refusal says "company.manage-settings"
// as the role's author wrote it.
func (c *catalog) missing(role *roleDef, have bitset) string {
	for _, name := range role.Permissions {
		if name != Wildcard && !c.closure([]string{name}).subsetOf(have) {
			if i := c.id(name); i >= 0 && !have.has(i) {
				return name
			}
			return c.top(c.closure([]string{name}).minus(have))
		}
	}
	return c.top(role.perms.minus(have))
}

// names is the names of set's permissions, sorted. The subjects who hold
// the same permissions, a role's holders, share one list: a Join's or
// ListPermissions' answer is then no list made anew, and the sessions
// that keep theirs keep one between them. Callers do not write the list;
// it has no room to append in place.
func (c *catalog) names(set bitset) []string {
	var key namesKey
	if len(set) > len(key) {
		return c.namesOf(set)
	}
	copy(key[:], set)
	if lists := c.lists.Load(); lists != nil {
		if out, ok := (*lists)[key]; ok {
			return out
		}
		if len(*lists) >= maxNameLists {
			return c.namesOf(set) // and no lock to find the cache full
		}
	}
	out := c.namesOf(set)
	c.listsMu.Lock()
	defer c.listsMu.Unlock()
	var old map[namesKey][]string
	if p := c.lists.Load(); p != nil {
		old = *p
	}
	if kept, ok := old[key]; ok {
		return kept
	}
	if len(old) >= maxNameLists {
		return out
	}
	lists := make(map[namesKey][]string, len(old)+1)
	maps.Copy(lists, old)
	lists[key] = out
	c.lists.Store(&lists)
	return out
}

// namesKey is a set of up to 256 permissions, as names' cache knows it.
type namesKey [4]uint64

// maxNameLists bounds the lists names keeps: a set past them is made for
// its caller alone. Each list added copies those before it, so the cache
// costs at most maxNameLists²/2 copies of a map entry a catalog.
const maxNameLists = 1024

func (c *catalog) namesOf(set bitset) []string {
	out := make([]string, 0, 8)
	set.each(func(i int32) { out = append(out, c.perms[i].Name) })
	return slices.Clip(out)
}

// ReservedPrefix starts the names of Usher's own permissions, which govern
// its data rather than a platform's domain.
const ReservedPrefix = "usher."

// IsReserved reports whether a permission is one of Usher's own.
func IsReserved(perm string) bool { return strings.HasPrefix(perm, ReservedPrefix) }

// ReservedNames are the permissions Usher checks itself. The resource ones
// may be narrowed to a resource type (usher.resources.create.room), and
// usher.blocks.write to a permission the catalog declares
// (usher.blocks.write.send-audio).
var ReservedNames = []string{PermGrantsWrite, PermBlocksWrite, PermRolesWrite, PermQuotasWrite,
	PermResourcesCreate, PermResourcesMove, PermResourcesDelete}

// NarrowedType is the resource type a resource permission is narrowed to
// (room for usher.resources.create.room), if perm is one so narrowed.
func NarrowedType(perm string) (string, bool) {
	for _, p := range []string{PermResourcesCreate, PermResourcesMove, PermResourcesDelete} {
		if typ, ok := strings.CutPrefix(perm, p+"."); ok && ValidateType("", typ) == nil {
			return typ, true
		}
	}
	return "", false
}

// checkedByUsher reports whether perm, declared in a catalog of which
// declared says what else it declares, is a name Usher may find in it: one
// not of the reserved prefix, or one of Usher's own, as ReservedNames says.
// Any other usher.* name would be a permission nothing checks, and hidden
// with Usher's own from the lists of capabilities: a typo, most likely, of
// one that is checked.
func checkedByUsher(perm string, declared func(string) bool) bool {
	if !IsReserved(perm) || slices.Contains(ReservedNames, perm) {
		return true
	}
	if narrowed, ok := strings.CutPrefix(perm, PermBlocksWrite+"."); ok {
		return declared(narrowed) && !IsReserved(narrowed)
	}
	_, ok := NarrowedType(perm)
	return ok
}
