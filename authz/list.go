package authz

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
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

// MaxPageBytes bounds, roughly, the bytes of a page of ListRoles,
// ListChanges or ExportPolicy but for its first role, change set or
// resource, which comes whole: a tenant's roles may list a thousand
// assignable roles and its blocks a thousand permissions, some 130 KB each,
// and a page of a thousand of them would be built whole in memory and be
// refused by every client that accepts gRPC's default of 4 MiB. A page
// that reaches it ends there, short, with the token of the next.
const MaxPageBytes = 2 << 20

// approxBytes is about the bytes of the strings of a list, as encoded.
func approxBytes(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + 2
	}
	return n
}

// approxBytes is about the bytes of r, as encoded.
func (r Role) approxBytes() int {
	return 16 + len(r.Name) + len(r.Scope) + len(r.Description) +
		approxBytes(r.Permissions) + approxBytes(r.AssignableRoles) + approxBytes(r.BindableOn)
}

// approxBytes is about the bytes of q, as encoded: its scope and subject
// may be some 290 bytes each.
func (q Quota) approxBytes() int {
	return 16 + len(q.Scope) + len(q.ResourceType) + len(q.Subject)
}

// approxBytes is about the bytes of p, as encoded.
func (p Permission) approxBytes() int {
	return 8 + len(p.Name) + len(p.Description) + approxBytes(p.Parents)
}

// approxBytes is about the bytes of c, as encoded.
func (c CreatorRole) approxBytes() int { return 8 + len(c.ResourceType) + len(c.Role) }

// approxBytes is about the bytes of d, as encoded.
func (d DefaultQuota) approxBytes() int { return 16 + len(d.ScopeType) + len(d.ResourceType) }

// approxBytes is about the bytes of g, as encoded.
func (g Grant) approxBytes() int { return 16 + len(g.Subject) + len(g.Role) + len(g.Resource) }

// approxBytes is about the bytes of b, as encoded.
func (b Block) approxBytes() int {
	return 32 + len(b.Subject) + len(b.Resource) + len(b.ID) + len(b.Reason) + approxBytes(b.Permissions)
}

// approxBytes is about the bytes of r, as encoded.
func (r Resource) approxBytes() int { return 32 + len(r.Name) + len(r.Parent) + len(r.Creator) }

// approxBytes is an admission rule's bytes at most but for its longest
// lists, which only the platform writes.
func (Admission) approxBytes() int { return 1 << 10 }

// approxBytes is about the bytes of cs, as encoded: each change by its
// entity's.
func (cs ChangeSet) approxBytes() int {
	n := cs.headerBytes()
	for _, c := range cs.Changes {
		n += c.approxBytes()
	}
	return n
}

// headerBytes is about the bytes of cs without its changes.
func (cs ChangeSet) headerBytes() int { return 32 + len(cs.Caller) + len(cs.Actor) }

// approxBytes is about the bytes of c, as encoded.
func (c Change) approxBytes() int {
	if e, ok := c.entity().(interface{ approxBytes() int }); ok {
		return 8 + e.approxBytes()
	}
	return 8
}

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

// encode writes t followed by a checksum of it, so that a token cut
// short or mangled on its way back is refused, not read as another
// position. (It is no seal: a caller may still make any token it could
// have been given, as a sealed one, for a lookup, it may not.)
func (t pageToken) encode() string {
	b := t.bytes()
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b)))
}

// checksumSize is how many bytes of checksum end an encoded page token.
const checksumSize = 4

func (t pageToken) bytes() []byte {
	b := binary.BigEndian.AppendUint64(nil, t.filter)
	for _, p := range t.pos {
		b = binary.BigEndian.AppendUint32(b, p)
	}
	return append(b, t.text...)
}

// sealSize is how many bytes of HMAC-SHA256 end a sealed page token.
const sealSize = 16

// newSealKey makes the key an index seals its page tokens with. It lives
// only in the index: no other index, on this server or another, has it.
func newSealKey() []byte {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return key
}

// seal encodes t followed by a MAC of it under key, for a list whose token
// holds what its caller must not choose (a lookup's revision and time):
// openPageToken reads back only what seal made under the same key.
func (t pageToken) seal(key []byte) string {
	b := t.bytes()
	return base64.RawURLEncoding.EncodeToString(append(b, sealOf(key, b)...))
}

func sealOf(key, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(nil)[:sealSize]
}

// anotherIndex refuses a page token made by another index of the same
// data, whose internal numbers the token holds: another replica's, or this
// server's before it restarted or reloaded its data.
func anotherIndex(token string) error {
	return errorf(FailedPrecondition, "page_token", token,
		"the token was made by another server, or by this one before it restarted or reloaded its data; start again without it").as(KindPageTokenExpired)
}

// notSealedHere refuses a sealed page token whose MAC the index's key does
// not verify: made by another index (as anotherIndex's are) or altered by
// its caller, which no one can tell apart.
func notSealedHere(token string) error {
	return errorf(FailedPrecondition, "page_token", token,
		"the token was made by another server, or by this one before it restarted or reloaded its data, or it was altered; start again without it").as(KindPageTokenExpired)
}

// decodePageToken reads a token of a request with the given filter hash and
// n positions; "" is the first page (nil).
func decodePageToken(token string, filter uint64, n int) (*pageToken, error) {
	if token == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 8+4*n+checksumSize {
		return nil, notAPageToken(token)
	}
	body, sum := raw[:len(raw)-checksumSize], raw[len(raw)-checksumSize:]
	if binary.BigEndian.Uint32(sum) != crc32.ChecksumIEEE(body) {
		return nil, notAPageToken(token)
	}
	return readPageToken(token, body, filter, n)
}

// openPageToken reads a token that seal made under key, as decodePageToken
// reads one that encode made. Its MAC is verified before anything else of
// it is read, but for its filter hash: a token of another request (another
// list's, or the lookup's with other filters) is refused as such, whoever
// made it.
func openPageToken(token string, key []byte, filter uint64, n int) (*pageToken, error) {
	if token == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 8+4*n+sealSize {
		return nil, notAPageToken(token)
	}
	body, mac := raw[:len(raw)-sealSize], raw[len(raw)-sealSize:]
	if binary.BigEndian.Uint64(body) != filter {
		return nil, otherFilters(token)
	}
	if !hmac.Equal(mac, sealOf(key, body)) {
		return nil, notSealedHere(token)
	}
	return readPageToken(token, body, filter, n)
}

// otherFilters refuses a token of another request.
func otherFilters(token string) error {
	return errorf(Invalid, "page_token", token, "the token belongs to a request with other filters; start again without it")
}

func notAPageToken(token string) error {
	return errorf(Invalid, "page_token", token, "not a token this server returned")
}

// readPageToken reads the filter hash, n positions and text of raw, at
// least 8+4n bytes of token.
func readPageToken(token string, raw []byte, filter uint64, n int) (*pageToken, error) {
	t := &pageToken{filter: binary.BigEndian.Uint64(raw)}
	if t.filter != filter {
		return nil, otherFilters(token)
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
		if after != nil && after.text != x.epoch {
			return nil, "", x.rev, anotherIndex(token)
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
				next = pageToken{filter: filter, pos: []uint32{last.res, last.role}, text: x.epoch}.encode()
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

// assignableBudget is how many roles, per role asked for, one page of the
// roles an actor may assign looks at: each costs a Grant rule's judgement,
// so a page that runs out of budget is returned short, with a token to go on.
const assignableBudget = 4

// ListRolesPage is ListRoles (or, with assignableBy, AssignableRoles) a
// page at a time, by name. A page looks at one entry per ancestor for each
// role it returns, not at every role visible; a page of the roles an actor
// may assign looks at no more than assignableBudget times its size, and
// ends once its judgements have weighed scanBudget resources below (each
// role through "*" weighs those where the actor holds less), so it may come
// back short of page_size, with a token, and the last page may be empty. A
// page ends too once its roles reach MaxPageBytes.
func (x *Index) ListRolesPage(resource, assignableBy string, size int, token string) ([]Role, string, Revision, error) {
	roles, next, rev, _, err := x.listRolesPage(resource, assignableBy, size, token)
	return roles, next, rev, err
}

// listRolesPage is ListRolesPage, and how many resources its judgements
// weighed.
func (x *Index) listRolesPage(resource, assignableBy string, size int, token string) ([]Role, string, Revision, int, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", 0, 0, err
	}
	filter := filterHash("roles", resource, assignableBy)
	after, err := decodePageToken(token, filter, 0)
	if err != nil {
		return nil, "", 0, 0, err
	}
	now := x.now()
	x.view.RLock()
	defer x.view.RUnlock()
	id, err := x.registered("resource", resource)
	if err != nil {
		return nil, "", x.rev, 0, err
	}
	var p *plan
	budget := size
	if assignableBy != "" {
		p = &plan{ctx: context.Background(), x: x, by: Author{Actor: assignableBy}, limits: Limits{}.withDefaults(), now: now}
		budget = assignableBudget * size
	}
	typ := x.typeName(id)
	var out []Role
	next, last, looked, bytes := "", "", 0, 0
	x.visibleRolesAfter(id, after, func(d *roleDef) bool {
		if len(out) == size || looked == budget || bytes >= MaxPageBytes || p != nil && p.weighed >= scanBudget {
			next = pageToken{filter: filter, text: last}.encode()
			return false
		}
		looked++
		last = d.Name
		if p == nil || d.bindableOn(typ) && p.mayGrant(d.Name, id, "grant") == nil {
			out = append(out, cloneRole(d.Role))
			bytes += d.Role.approxBytes()
		}
		return true
	})
	weighed := 0
	if p != nil {
		weighed = p.weighed
	}
	return out, next, x.rev, weighed, nil
}

// visibleRolesAfter calls visit with the definitions that apply at id, by
// name, from the first after the token's name (from the first of all with
// no token), while visit returns true. The definitions made on each
// ancestor are merged in name order, the nearest winning, so each one
// visited costs a look at one entry per ancestor.
func (x *Index) visibleRolesAfter(id uint32, after *pageToken, visit func(*roleDef) bool) {
	var buf [MaxDepth + 1]uint32
	path := x.path(id, buf[:0])
	heads := make([][]uint32, len(path))
	for i, a := range path {
		list := x.rolesAt[a]
		if after != nil {
			j, found := x.searchRolesAt(list, after.text)
			if found {
				j++
			}
			list = list[j:]
		}
		heads[i] = list
	}
	for {
		best := -1
		for i, h := range heads {
			if len(h) > 0 && (best < 0 || x.roleNames[h[0]] < x.roleNames[heads[best][0]]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		role := heads[best][0]
		d := x.roleDefs[roleKey(path[best], role)]
		for i, h := range heads {
			if len(h) > 0 && h[0] == role {
				heads[i] = h[1:]
			}
		}
		if !visit(d) {
			return
		}
	}
}

// ListQuotasPage is ListQuotas a page at a time, nearest scope first and on
// each scope by type and subject. A page looks at the quotas it returns and
// at each ancestor once, and counts the use of only the quotas it returns.
// The token names the last quota's scope, so that a move above resource
// between pages, which puts the scope nearer or further, neither leaves out
// nor repeats any quota still above it; one whose scope is no longer above
// resource is refused.
func (x *Index) ListQuotasPage(resource string, size int, token string) ([]QuotaUse, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", 0, err
	}
	filter := filterHash("quotas", resource)
	after, err := decodePageToken(token, filter, 0)
	if err != nil {
		return nil, "", 0, err
	}
	x.view.RLock()
	defer x.view.RUnlock()
	id, err := x.registered("resource", resource)
	if err != nil {
		return nil, "", x.rev, err
	}
	// The token holds the last quota's scope and key.
	a, i := id, 0
	if after != nil {
		scope, key, _ := strings.Cut(after.text, "\x00")
		for a != noNode && x.name(a) != scope {
			a = x.nodes[a].parent
		}
		if a == noNode {
			return nil, "", x.rev, errorf(FailedPrecondition, "page_token", token,
				"scope %q, where the list stopped, is no longer above %q; list again from the first page", scope, resource).as(KindPageTokenExpired)
		}
		typ, subject, _ := strings.Cut(key, "\x00")
		var found bool
		i, found = slices.BinarySearchFunc(x.quotas[a], Quota{ResourceType: typ, Subject: subject}, compareQuotaKeys)
		if found {
			i++
		}
	}
	var out []QuotaUse
	next := ""
	for ; a != noNode && next == ""; a, i = x.nodes[a].parent, 0 {
		if x.nodes[a].flags&nodeQuotas == 0 {
			continue
		}
		for list := x.quotas[a]; i < len(list); i++ {
			if len(out) == size {
				last := out[len(out)-1]
				next = pageToken{filter: filter, text: last.Scope + "\x00" + last.ResourceType + "\x00" + last.Subject}.encode()
				break
			}
			out = append(out, QuotaUse{Quota: list[i], Used: x.used(list[i])})
		}
	}
	return out, next, x.rev, nil
}

// ExportPolicy returns one page of the policy in force: the first page
// carries the catalog, creator roles and default quotas; every page carries
// up to size resources, parents before children, with the roles, quotas and
// admission rules defined on them, and ends, maybe short, once these reach
// scanBudget, the resource that reaches it whole, or MaxPageBytes, the
// catalog of the first page counted in, the quotas or roles of the
// resource that reaches it going on in the next page (a resource may carry
// a thousand roles of 130 KB, and ten thousand quotas of 2 KB). The pages
// merged into one
// policy, applied to an empty store, rebuild the same tree, roles, quotas
// and rules. Siblings come in the order this index keeps them, so a token
// is good only on the index that made it (as ListGrants' of a subject is),
// and only while the resource it ended at is where it was.
func (x *Index) ExportPolicy(size int, token string) (Policy, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return Policy{}, "", 0, err
	}
	filter := filterHash("export")
	after, err := decodePageToken(token, filter, 2)
	if err != nil {
		return Policy{}, "", 0, err
	}
	x.view.RLock()
	defer x.view.RUnlock()
	var p Policy
	start := x.root
	// midway is set when the page before ended among start's quotas or
	// roles. Its quotas go on after afterQuota, when inQuotas, its rules
	// and roles after them; or its roles go on after role afterRole ("":
	// before the first), its resource, quotas and rules sent.
	midway, afterRole := false, ""
	inQuotas, afterQuota := false, Quota{}
	// bytes counts the page's, the first page's catalog among them: the
	// roles that follow make way for it.
	last, bytes := noNode, 0
	if after == nil {
		p.Permissions = slices.Clone(x.cat.perms)
		for i := range p.Permissions {
			p.Permissions[i].Parents = slices.Clone(p.Permissions[i].Parents)
			bytes += p.Permissions[i].approxBytes()
		}
		for _, typ := range sortedKeys(x.creators) {
			c := CreatorRole{ResourceType: typ, Role: x.creators[typ]}
			p.CreatorRoles = append(p.CreatorRoles, c)
			bytes += c.approxBytes()
		}
		for _, typ := range sortedKeys(x.defaultQuotas) {
			for _, d := range x.defaultQuotas[typ] {
				p.DefaultQuotas = append(p.DefaultQuotas, d)
				bytes += d.approxBytes()
			}
		}
	} else {
		// Siblings come in the order of this index's tree, which another
		// index of the same data keeps otherwise: the token is this one's.
		epoch, rest, _ := strings.Cut(after.text, "\x00")
		if epoch != x.epoch {
			return Policy{}, "", x.rev, anotherIndex(token)
		}
		var name string
		name, afterRole, midway = strings.Cut(rest, "\x00")
		if key, ok := strings.CutPrefix(afterRole, quotaMark); ok && midway {
			inQuotas, afterRole = true, ""
			afterQuota.ResourceType, afterQuota.Subject, _ = strings.Cut(key, "\x00")
		}
		if start = x.lookupNode(name); start == noNode {
			return Policy{}, "", x.rev, errorf(FailedPrecondition, "page_token", token,
				"resource %q, where the export stopped, was deleted since; export again from the first page", name).as(KindPageTokenExpired)
		}
		// The walk goes on from where the resource is: moved, or under
		// an ancestor moved, it would leave out resources not yet sent.
		if h := x.pathHash(start); uint32(h>>32) != after.pos[0] || uint32(h) != after.pos[1] {
			return Policy{}, "", x.rev, errorf(FailedPrecondition, "page_token", token,
				"resource %q, where the export stopped, or one above it, was moved since; export again from the first page", name).as(KindPageTokenExpired)
		}
		if !midway {
			start = x.nextPreorder(start, x.root)
		}
	}
	// The page ends among last's quotas or roles, after cutAt: a role's
	// name, or quotaMark and a quota's key.
	cut, cutAt := false, ""
	// The first resource comes however long the catalog before it: its
	// quotas and roles go on in the next page.
	for n := start; n != noNode && !cut && len(p.Resources) < size && len(p.Roles)+len(p.Quotas)+len(p.Admissions) < scanBudget && (n == start || bytes < MaxPageBytes); n = x.nextPreorder(n, x.root) {
		quotas, rules, roles := x.quotas[n], true, x.rolesAt[n]
		switch {
		case midway && n == start && inQuotas:
			i, found := slices.BinarySearchFunc(quotas, afterQuota, compareQuotaKeys)
			if found {
				i++
			}
			quotas = quotas[i:]
		case midway && n == start:
			quotas, rules = nil, false
			if afterRole != "" {
				i, found := x.searchRolesAt(roles, afterRole)
				if found {
					i++
				}
				roles = roles[i:]
			}
		case n != x.root:
			r := x.resourceAt(n)
			p.Resources = append(p.Resources, r)
			bytes += r.approxBytes()
		}
		last = n
		for i, q := range quotas {
			if bytes >= MaxPageBytes {
				cut, cutAt = true, quotaMark+"\x00" // before the first
				if i > 0 {
					cutAt = quotaMark + quotas[i-1].ResourceType + "\x00" + quotas[i-1].Subject
				}
				break
			}
			p.Quotas = append(p.Quotas, q)
			bytes += q.approxBytes()
		}
		if cut {
			break
		}
		if rules {
			for _, a := range x.admissionsAt(n) {
				p.Admissions = append(p.Admissions, a)
				bytes += a.approxBytes()
			}
		}
		for i, role := range roles {
			if bytes >= MaxPageBytes {
				cut = true
				if i > 0 {
					cutAt = x.roleNames[roles[i-1]]
				} else if midway && n == start {
					cutAt = afterRole
				}
				break
			}
			r := cloneRole(x.roleDefs[roleKey(n, role)].Role)
			p.Roles = append(p.Roles, r)
			bytes += r.approxBytes()
		}
	}
	at := func(text string) string {
		h := x.pathHash(last)
		return pageToken{filter: filter, pos: []uint32{uint32(h >> 32), uint32(h)}, text: x.epoch + "\x00" + x.name(last) + text}.encode()
	}
	next := ""
	switch {
	case cut:
		next = at("\x00" + cutAt)
	case last != noNode && x.nextPreorder(last, x.root) != noNode:
		next = at("")
	}
	return p, next, x.rev, nil
}

// quotaMark begins an export token's place among a resource's quotas,
// where a role's name would be: no role's begins so.
const quotaMark = "\x01"

// pathHash is a hash of where id is in the tree: the resources from it up
// to root, in this index's numbers.
func (x *Index) pathHash(id uint32) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for ; id != noNode; id = x.nodes[id].parent {
		binary.BigEndian.PutUint32(b[:], id)
		h.Write(b[:])
	}
	return h.Sum64()
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
