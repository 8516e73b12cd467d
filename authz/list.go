package authz

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Page sizes of list calls.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// scanBudget bounds how many entries one page of an admin list may look at,
// so that a page costs at most this much whatever the filter matches; a page
// that runs out of budget is returned short, with a token to go on.
const scanBudget = 10_000

// pageSize checks and defaults a requested page size.
func pageSize(n int) (int, error) {
	if n < 0 || n > MaxPageSize {
		return 0, errorf(Invalid, "page_size", fmt.Sprint(n), "page size must be between 0 and %d", MaxPageSize)
	}
	if n == 0 {
		n = DefaultPageSize
	}
	return n, nil
}

// pageToken is where a list goes on: the request it belongs to (a hash of
// the filter) and a position in the list's own order.
type pageToken struct {
	filter uint64
	pos    []uint32
	text   string
}

func filterHash(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func (t pageToken) encode() string {
	b := binary.BigEndian.AppendUint64(nil, t.filter)
	for _, p := range t.pos {
		b = binary.BigEndian.AppendUint32(b, p)
	}
	b = append(b, t.text...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken reads a token of a request with the given filter hash and
// n positions; "" is the first page (nil).
func decodePageToken(token string, filter uint64, n int) (*pageToken, error) {
	if token == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 8+4*n {
		return nil, errorf(Invalid, "page_token", token, "not a token this server returned")
	}
	t := &pageToken{filter: binary.BigEndian.Uint64(raw)}
	if t.filter != filter {
		return nil, errorf(Invalid, "page_token", token, "the token belongs to a request with other filters; start again without it")
	}
	for i := range n {
		t.pos = append(t.pos, binary.BigEndian.Uint32(raw[8+4*i:]))
	}
	t.text = string(raw[8+4*n:])
	return t, nil
}

// GrantFilter selects grants: of Subject, on Resource (that very resource),
// or both; at least one is set.
type GrantFilter struct {
	Subject  string
	Resource string
}

// ListGrants returns one page of the unexpired grants that match f and the
// token of the next page ("" on the last). A resource's grants come by role
// name and then subject name; a subject's by resource, in an order that
// stays put between pages. A page looks at no more than scanBudget grants, so one may come
// back short of page_size, with a token, when many grants have expired.
func (x *Index) ListGrants(f GrantFilter, size int, token string) ([]Grant, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", 0, err
	}
	filter := filterHash("grants", f.Subject, f.Resource)
	after, err := decodePageToken(token, filter, 2)
	if err != nil {
		return nil, "", 0, err
	}
	now := x.now()
	x.view.RLock()
	defer x.view.RUnlock()
	res := noNode
	if f.Resource != "" {
		if res, err = x.registered("resource", f.Resource); err != nil {
			return nil, "", x.rev, err
		}
	}
	var out []Grant
	next := ""
	switch {
	case f.Subject != "":
		s := x.subj.lookup(f.Subject)
		if s == noName {
			break
		}
		list := x.bySubject.get(s)
		i := 0
		if res != noNode {
			i, _ = x.findSubjectGrant(s, res, 0)
			for i > 0 && list[i-1].res == res {
				i--
			}
		}
		if after != nil && int(after.pos[1]) < len(x.roleNames) {
			var found bool
			if i, found = x.findSubjectGrant(s, after.pos[0], after.pos[1]); found {
				i++
			}
		}
		for scanned := 0; i < len(list) && (res == noNode || list[i].res == res); i++ {
			g := list[i]
			if len(out) == size || scanned == scanBudget {
				last := list[i-1]
				next = pageToken{filter: filter, pos: []uint32{last.res, last.role}}.encode()
				break
			}
			scanned++
			if live(g.exp, now) {
				out = append(out, x.grantOf(s, g.role, g.res, g.exp))
			}
		}
	case res != noNode:
		list := x.byResource.get(res)
		i := 0
		if after != nil {
			role, subject, _ := strings.Cut(after.text, "\x00")
			i = x.searchResourceGrants(res, role, subject)
			if i < len(list) && x.compareResourceGrant(list[i], role, subject) == 0 {
				i++
			}
		}
		for scanned := 0; i < len(list); i++ {
			g := list[i]
			if len(out) == size || scanned == scanBudget {
				last := list[i-1]
				next = pageToken{filter: filter, pos: []uint32{0, 0}, text: x.roleNames[last.role] + "\x00" + x.subj.name(last.subj)}.encode()
				break
			}
			scanned++
			if live(g.exp, now) {
				out = append(out, x.grantOf(g.subj, g.role, res, g.exp))
			}
		}
	default:
		return nil, "", x.rev, errorf(Invalid, "subject", "", "name a subject, a resource or both")
	}
	return out, next, x.rev, nil
}

// pageOf returns the page of a list sorted by key that starts after the
// token's key, with the token of the next page.
func pageOf[T any](list []T, key func(T) string, size int, token string, filter uint64) ([]T, string, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	after, err := decodePageToken(token, filter, 0)
	if err != nil {
		return nil, "", err
	}
	i := 0
	if after != nil {
		i, _ = slices.BinarySearchFunc(list, after.text, func(v T, k string) int { return strings.Compare(key(v), k) })
		if i < len(list) && key(list[i]) == after.text {
			i++
		}
	}
	page := list[i:min(i+size, len(list))]
	next := ""
	if i+len(page) < len(list) {
		next = pageToken{filter: filter, text: key(page[len(page)-1])}.encode()
	}
	return page, next, nil
}

// ListRolesPage is ListRoles (or, with assignableBy, AssignableRoles) a
// page at a time, by name.
func (x *Index) ListRolesPage(resource, assignableBy string, size int, token string) ([]Role, string, Revision, error) {
	list, rev, err := x.ListRoles(resource)
	if assignableBy != "" {
		list, rev, err = x.AssignableRoles(resource, assignableBy)
	}
	if err != nil {
		return nil, "", rev, err
	}
	page, next, err := pageOf(list, func(r Role) string { return r.Name }, size, token, filterHash("roles", resource, assignableBy))
	return page, next, rev, err
}

// ListQuotasPage is ListQuotas a page at a time, nearest scope first.
func (x *Index) ListQuotasPage(resource string, size int, token string) ([]QuotaUse, string, Revision, error) {
	list, rev, err := x.ListQuotas(resource)
	if err != nil {
		return nil, "", rev, err
	}
	keys := make([]string, len(list))
	for i, q := range list {
		keys[i] = fmt.Sprintf("%04d\x00%s\x00%s", i, q.ResourceType, q.Subject)
	}
	indexed := make([]int, len(list))
	for i := range indexed {
		indexed[i] = i
	}
	page, next, err := pageOf(indexed, func(i int) string { return keys[i] }, size, token, filterHash("quotas", resource))
	out := make([]QuotaUse, len(page))
	for i, j := range page {
		out[i] = list[j]
	}
	return out, next, rev, err
}

// ExportPolicy returns one page of the policy in force: the first page
// carries the catalog, creator roles and default quotas; every page carries
// up to size resources, parents before children, with the roles, quotas and
// admission rules defined on them. The pages merged into one policy, applied
// to an empty store, rebuild the same tree, roles, quotas and rules.
func (x *Index) ExportPolicy(size int, token string) (Policy, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return Policy{}, "", 0, err
	}
	filter := filterHash("export")
	after, err := decodePageToken(token, filter, 0)
	if err != nil {
		return Policy{}, "", 0, err
	}
	x.view.RLock()
	defer x.view.RUnlock()
	var p Policy
	start := x.root
	if after == nil {
		p.Permissions = slices.Clone(x.cat.perms)
		for i := range p.Permissions {
			p.Permissions[i].Parents = slices.Clone(p.Permissions[i].Parents)
		}
		for _, typ := range sortedKeys(x.creators) {
			p.CreatorRoles = append(p.CreatorRoles, CreatorRole{ResourceType: typ, Role: x.creators[typ]})
		}
		for _, typ := range sortedKeys(x.defaultQuotas) {
			p.DefaultQuotas = append(p.DefaultQuotas, x.defaultQuotas[typ]...)
		}
	} else {
		if start = x.lookupNode(after.text); start == noNode {
			return Policy{}, "", x.rev, errorf(FailedPrecondition, "page_token", token,
				"resource %q, where the export stopped, was deleted since; export again from the first page", after.text).as(KindPageTokenExpired)
		}
		start = x.nextPreorder(start, x.root)
	}
	last := noNode
	for n := start; n != noNode && len(p.Resources) < size; n = x.nextPreorder(n, x.root) {
		if n != x.root {
			p.Resources = append(p.Resources, x.withStage(n, Resource{Name: x.name(n), Parent: x.name(x.nodes[n].parent), Creator: x.creatorName(n)}))
		}
		p.Roles = append(p.Roles, x.definedAt(n)...)
		p.Quotas = append(p.Quotas, x.quotas[n]...)
		p.Admissions = append(p.Admissions, x.admissionsAt(n)...)
		last = n
	}
	next := ""
	if last != noNode && x.nextPreorder(last, x.root) != noNode {
		next = pageToken{filter: filter, text: x.name(last)}.encode()
	}
	return p, next, x.rev, nil
}

// nextPreorder is the resource after n in a preorder walk of top's subtree,
// or noNode.
func (x *Index) nextPreorder(n, top uint32) uint32 {
	if c := x.nodes[n].first; c != noNode {
		return c
	}
	for ; n != top && n != noNode; n = x.nodes[n].parent {
		if s := x.nodes[n].next; s != noNode {
			return s
		}
	}
	return noNode
}

func (x *Index) creatorName(id uint32) string {
	if c := x.nodes[id].creator; c != 0 {
		return x.subj.name(c - 1)
	}
	return ""
}
