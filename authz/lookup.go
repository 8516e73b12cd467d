package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Lookups answer Check's question the other way round: every resource of a
// type where a subject holds a permission (the call list of an app), and
// every subject that holds a permission on a resource (a participant list).
// They are answered a page at a time, each page full, the last, or cut
// short once it has judged lookupScan candidates (so that no page walks a
// whole platform for a subject whose grants reach much and allow little),
// and every page of one lookup at the revision of its first page: the page token
// carries that revision, and a later page is refused when the index has
// since changed in a way that could change the answer. The token also
// carries the time the lookup's grants are judged at, so it is sealed: only
// the index that answered the first page reads it (see atRevision).

// LookupResourcesQuery asks for every resource of Type below Under (root
// when empty) where Subject holds Permission.
type LookupResourcesQuery struct {
	Subject    string
	Permission string
	Type       string
	Under      string
}

// LookupSubjectsQuery asks for every subject holding Permission on
// Resource, of Kind when set ("user").
type LookupSubjectsQuery struct {
	Resource   string
	Permission string
	Kind       string
}

// Found is one answer of a lookup: a resource or a subject, with the
// decision Check gives there (the deciding role and the scope of its grant).
type Found struct {
	Name  string
	Role  string
	Scope string
}

// maxLookupChanges is how many changes a later page of a lookup reads to
// decide whether its answer still holds at the first page's revision: those
// committed since the page before it was answered, which its token says (a
// change set counts as at least one). A client may come back with a token
// long after, so the bound holds however far back its revision is.
const maxLookupChanges = 10000

// maxLookupAge is how long after its first page a lookup's later pages are
// answered: at the first page's time, a grant that ran out since still
// counts, and no page counts one that ran out longer ago than this.
const maxLookupAge = time.Minute

// lookupScan is how many candidates (resources of the type below the
// subject's grants, or grants on the resource's path) a page judges at
// most: one that reaches it before it is full ends there, with the token of
// the next candidate. A variable for the tests.
var lookupScan = 10_000

// maxLookupBatch is the most change sets a later page reads from the log at
// once. It reads one, then twice as many each time while the budget lasts,
// judging each batch before reading the next: a page holds one batch, not
// every change set since its token's revision, and a change set as large as
// a policy apply ends the page's reading as soon as it is read.
const maxLookupBatch = 64

// LookupResources returns one page of q's answer, with the token of the next page ("" on the last) and the revision every
// page is answered at. The answer comes a subtree at a time: the resources
// below each resource where the subject holds a grant that reaches them, in
// the order of the tree, the subtrees in the index's own order, which holds
// for every page of the lookup.
func (e *Engine) LookupResources(ctx context.Context, q LookupResourcesQuery, size int, token string) ([]Found, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", 0, err
	}
	filter := filterHash("lookup-resources", q.Subject, q.Permission, q.Type, q.Under)
	var holds map[string]bool // the roles the subject holds anywhere
	relevant := func(x *Index, after *pageToken, c Change) bool {
		switch c.Op {
		case OpPutRole, OpDeleteRole:
			if holds == nil {
				holds = map[string]bool{}
				if s := x.subj.lookup(q.Subject); s != noName {
					for _, g := range x.bySubject.get(s) {
						holds[x.roleNames[g.role]] = true
					}
				}
			}
			return holds[c.Role.Name]
		case OpPutGrant, OpDeleteGrant:
			return c.Grant.Subject == q.Subject
		case OpPutBlock, OpDeleteBlock:
			return c.Block.Subject == q.Subject
		case OpPutResource, OpDeleteResource:
			// A resource of the type comes or goes or moves; or one that
			// has resources of the type below it moves. A leaf of another
			// type, registered, moved or deleted, changes nothing.
			if TypeOf(c.Resource.Name) == q.Type {
				return true
			}
			// The resource the last page walked past, whose subtree the
			// next page goes on after, wherever it is now.
			if after.text != "" && after.pos[3] == lookupWalkedPast && c.Resource.Name == after.text {
				return true
			}
			id, typ := x.lookupNode(c.Resource.Name), x.types.lookup(q.Type)
			return id != noNode && typ != noName && x.typeCounts[typeKey(id, typ)] > 0
		}
		return c.Op == OpPutPermission || c.Op == OpDeletePermission
	}
	var (
		out  []Found
		next string
		rev  Revision
	)
	err = e.atRevision(ctx, token, filter, relevant, func(x *Index, after *pageToken, at lookupAt) error {
		rev = at.rev
		out, next, err = x.lookupResources(q, size, after, filter, at)
		return err
	})
	return out, next, rev, err
}

// LookupSubjects returns one page of q's answer, nearest grants first, with
// the token of the next page and the revision every page is answered at.
func (e *Engine) LookupSubjects(ctx context.Context, q LookupSubjectsQuery, size int, token string) ([]Found, string, Revision, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", 0, err
	}
	filter := filterHash("lookup-subjects", q.Resource, q.Permission, q.Kind)
	var path map[string]bool // the resource and its ancestors
	relevant := func(x *Index, _ *pageToken, c Change) bool {
		if path == nil {
			path = map[string]bool{}
			if id := x.lookupNode(q.Resource); id != noNode {
				for a := id; a != noNode; a = x.nodes[a].parent {
					path[x.name(a)] = true
				}
			}
		}
		switch c.Op {
		case OpPutGrant, OpDeleteGrant:
			return path[c.Grant.Resource]
		case OpPutBlock, OpDeleteBlock:
			return path[c.Block.Resource]
		case OpPutResource, OpDeleteResource:
			// The resource or an ancestor moves or goes; the path is read
			// from the index as it is, which holds no deleted resource.
			return path[c.Resource.Name] || c.Resource.Name == q.Resource
		case OpPutRole, OpDeleteRole:
			return path[c.Role.Scope] // a definition that applies on the resource
		}
		return c.Op == OpPutPermission || c.Op == OpDeletePermission
	}
	var (
		out  []Found
		next string
		rev  Revision
	)
	err = e.atRevision(ctx, token, filter, relevant, func(x *Index, after *pageToken, at lookupAt) error {
		rev = at.rev
		out, next, err = x.lookupSubjects(q, size, after, filter, at)
		return err
	})
	return out, next, rev, err
}

// lookupAt is the revision a page of a lookup is answered at, the revision
// up to which the change sets since have been found to leave the answer as
// it was (the index's, when the page was answered), and the time whose
// unexpired grants and blocks count: the first page's, as its revision is,
// so that a grant running out between two pages neither drops an answer
// nor moves it to another page.
type lookupAt struct {
	rev, checked Revision
	now          int64  // unix nanoseconds
	token        string // of the page asked for, "" for a first page
}

// atRevision runs fn under the index's view lock, with the page token of
// filter (nil for a first page) and the revision a lookup's page is
// answered at: the index's own for a first page; for a later page, the
// first page's, provided no change set committed since touches what the
// lookup reads (relevant says, of the token's page). Each page's token says up to which revision
// that was found, so a page reads only the change sets committed since the
// page before it. A page whose answer may have changed is refused, for the
// lookup to start again.
//
// The token names the revision and the time the page is judged at, which
// its caller must not choose, and positions in the index's own numbering:
// it is read only if its MAC verifies under the index's key, before
// anything else but the filter it belongs to is read, and answered only by
// the index that sealed it. A token of another server, or of this one
// before it restarted or reloaded its data, is refused as one its caller
// altered; one of another request, as such.
func (e *Engine) atRevision(ctx context.Context, token string, filter uint64, relevant func(*Index, *pageToken, Change) bool, fn func(x *Index, after *pageToken, at lookupAt) error) error {
	x := e.Index()
	after, err := openPageToken(token, x.sealKey, filter, 8)
	if err != nil {
		return err
	}
	if after == nil {
		x.view.RLock()
		defer x.view.RUnlock()
		return fn(x, nil, lookupAt{rev: x.rev, checked: x.rev, now: x.now()})
	}
	at := Revision(uint64(after.pos[0])<<32 | uint64(after.pos[1]))
	checked := max(at, Revision(uint64(after.pos[4])<<32|uint64(after.pos[5])))
	when := int64(uint64(after.pos[6])<<32 | uint64(after.pos[7]))
	if age := time.Duration(x.now() - when); age > maxLookupAge {
		return errorf(FailedPrecondition, "page_token", token,
			"the lookup's first page was answered %s ago, and its later pages are answered at its time for at most %s; start the lookup again", age.Round(time.Second), maxLookupAge).as(KindPageTokenExpired)
	}
	for tries := 0; ; tries++ {
		if e.Index() != x {
			// A resync replaced the index that sealed the token.
			return anotherIndex(token)
		}
		x.view.RLock()
		now := x.rev
		if checked == now {
			err := fn(x, after, lookupAt{rev: at, checked: now, now: when, token: token})
			x.view.RUnlock()
			return err
		}
		x.view.RUnlock()
		if checked > now || now-checked > maxLookupChanges || tries == 3 {
			return lookupMoved(token, at, now)
		}
		read, n := 0, 1
		for from := checked; from < now; n = min(2*n, maxLookupBatch) {
			limit := int(min(now-from, Revision(n)))
			// A client may come back with a token from before a policy's
			// change set of a hundred thousand changes: learn that it
			// does not fit without decoding it.
			rctx, cancel := e.LogRead(ctx)
			counts, err := e.backend.ChangeCounts(rctx, from, limit)
			cancel()
			if err != nil {
				return logUnread(ctx, err, token, at, now)
			}
			if len(counts) == 0 {
				return lookupMoved(token, at, now)
			}
			next := read
			for _, k := range counts {
				next += max(1, k)
			}
			if next > maxLookupChanges {
				return lookupMoved(token, at, now)
			}
			rctx, cancel = e.LogRead(ctx)
			batch, err := e.backend.Changes(rctx, from, limit)
			cancel()
			if err != nil {
				return logUnread(ctx, err, token, at, now)
			}
			if len(batch) == 0 {
				return lookupMoved(token, at, now)
			}
			for _, cs := range batch {
				read += max(1, len(cs.Changes))
			}
			if read > maxLookupChanges {
				return lookupMoved(token, at, now)
			}
			// relevant reads the index, which writes change in place: under
			// its view lock, as pages are answered.
			x.view.RLock()
			moved := slices.IndexFunc(batch, func(cs ChangeSet) bool {
				return cs.Revision <= now && slices.ContainsFunc(cs.Changes, func(c Change) bool { return relevant(x, after, c) })
			})
			x.view.RUnlock()
			if moved >= 0 {
				return lookupMoved(token, at, batch[moved].Revision)
			}
			from = batch[len(batch)-1].Revision
		}
		// Nothing relevant changed up to now: answer at now, and call it
		// the first page's revision, which gives the same answer.
		checked = now
	}
}

// logUnread is what a lookup's page answers when it cannot read the change
// log since at: a log compacted past it, in which the answer may have
// changed; its caller's own end; or the backend out of reach.
func logUnread(ctx context.Context, err error, token string, at, now Revision) error {
	switch {
	case errors.Is(err, ErrCompacted):
		return lookupMoved(token, at, now)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "reading the change log: " + err.Error(), Err: err}
}

// lookupMoved refuses the page of token, answered at, as one whose answer
// may have changed by now.
func lookupMoved(token string, at, now Revision) error {
	return errorf(FailedPrecondition, "page_token", token,
		"the answer may have changed since revision %d, which the lookup's first page was answered at (revision %d changed it); start the lookup again", at, now).as(KindPageTokenExpired)
}

// lookupToken is the token of a lookup's next page, sealed with the index's
// key: the revision of its answer, a position (two numbers), the revision
// up to which the answer is known to hold, the time it is judged at, and a
// name.
func (x *Index) lookupToken(filter uint64, at lookupAt, a, b uint32, text string) string {
	return pageToken{filter: filter, pos: []uint32{uint32(at.rev >> 32), uint32(at.rev), a, b, uint32(at.checked >> 32), uint32(at.checked),
		uint32(uint64(at.now) >> 32), uint32(uint64(at.now))}, text: text}.seal(x.sealKey)
}

func (x *Index) lookupResources(q LookupResourcesQuery, size int, after *pageToken, filter uint64, at lookupAt) ([]Found, string, error) {
	perm := x.cat.id(q.Permission)
	if perm < 0 {
		return nil, "", errorf(Invalid, "permission", q.Permission, "permission is not declared in the catalog").as(KindUndeclaredPermission)
	}
	under := x.root
	if q.Under != "" {
		var err error
		if under, err = x.registered("under", q.Under); err != nil {
			return nil, "", err
		}
	}
	typ := x.types.lookup(q.Type)
	s := x.subj.lookup(q.Subject)
	if typ == noName || s == noName {
		return nil, "", nil
	}
	now := at.now
	// The lookup's roots are the disjoint subtrees below under that s's
	// live grants reach, in the order of their ids: under alone when s
	// holds a grant on it or above it. The token names the root its next
	// answer is below and that answer, or, with no answer named, the grant
	// the search for the next root goes on from, when the page ran out of
	// grants to read before it found one.
	whole := false
	for a := under; a != noNode && !whole; a = x.nodes[a].parent {
		whole = x.liveGrantOn(s, a, now)
	}
	top, n, past, from, role := noNode, noNode, noNode, uint32(0), noName
	if after != nil {
		if after.text == "" {
			from, role = after.pos[2], after.pos[3]
		} else {
			// The roots are in the order of this index's numbers: the
			// token is this index's (atRevision).
			top = x.liveNode(after.pos[2])
			if n = x.lookupNode(after.text); top == noNode || n == noNode || !x.under(n, top) {
				return nil, "", lookupMoved(at.token, at.rev, at.checked)
			}
			from = top + 1
		}
	}
	var out []Found
	var buf [MaxDepth + 1]uint32
	judged, grants, walked := 0, lookupScan, lookupScan
	if after != nil && after.text != "" && after.pos[3] == lookupWalkedPast {
		// The token names the resource the last page walked past.
		n, past = x.nextOfType(n, top, typ, true, &walked)
	}
	for {
		if top == noNode {
			if whole {
				if from > under {
					return out, "", nil
				}
				top = under
			} else {
				var next subjectGrant
				if top, next = x.nextRoot(s, under, from, role, now, &grants); top == noNode {
					if next.res == noNode {
						return out, "", nil
					}
					return out, x.lookupToken(filter, at, next.res, next.role, ""), nil
				}
			}
			from, role, n, past = top+1, noName, top, noNode
			if x.nodes[top].typ != typ {
				n, past = x.nextOfType(top, top, typ, false, &walked)
			}
		}
		for ; ; n, past = x.nextOfType(n, top, typ, false, &walked) {
			if n == noNode {
				if past == noNode {
					break
				}
				return out, x.lookupToken(filter, at, top, lookupWalkedPast, x.name(past)), nil
			}
			if judged++; judged > lookupScan {
				return out, x.lookupToken(filter, at, top, 0, x.name(n)), nil
			}
			path := x.path(n, buf[:0])
			if b, _ := x.blocking(s, path, perm, now); b != nil {
				continue
			}
			g, ok := x.granting(s, path, perm, now)
			if !ok {
				continue
			}
			if len(out) == size {
				return out, x.lookupToken(filter, at, top, 0, x.name(n)), nil
			}
			out = append(out, Found{Name: x.name(n), Role: x.roleNames[g.role], Scope: x.name(g.res)})
		}
		top = noNode
	}
}

// lookupWalkedPast marks a lookup's token that names the resource its page
// walked past last, when it ran out of resources to walk past before it
// found its next candidate: the walk goes on after that resource's subtree.
const lookupWalkedPast = 1

// liveGrantOn reports whether s holds a live grant on a.
func (x *Index) liveGrantOn(s, a uint32, now int64) bool {
	for _, g := range x.grantsOn(s, a) {
		if live(g.exp, now) {
			return true
		}
	}
	return false
}

// nextRoot returns the first of the disjoint subtrees strictly below under
// that s's live grants reach, none below another, whose top's id is at
// least from, when s holds no grant on under or above it: from its grant
// of role on from, or its first on from when role is noName. It reads no
// more than *budget of s's grants, less each it reads; when the budget runs
// out first it returns noNode and the grant to go on from, and noNode and a
// grant on noNode when no root is left.
func (x *Index) nextRoot(s, under, from, role uint32, now int64, budget *int) (root uint32, next subjectGrant) {
	list := x.bySubject.get(s)
	i, _ := slices.BinarySearchFunc(list, from, func(g subjectGrant, id uint32) int { return cmpUint32(g.res, id) })
	if role != noName {
		i, _ = x.findSubjectGrant(s, from, role)
	}
	for ; i < len(list); i++ {
		g := list[i]
		if *budget <= 0 {
			return noNode, g
		}
		*budget--
		if !live(g.exp, now) || g.res == under || !x.under(g.res, under) {
			continue
		}
		covered := false
		for a := x.nodes[g.res].parent; a != under && !covered; a = x.nodes[a].parent {
			covered = x.liveGrantOn(s, a, now)
		}
		if !covered {
			return g.res, subjectGrant{}
		}
	}
	return noNode, subjectGrant{res: noNode}
}

// nextOfType is the first resource of type typ after n in a preorder walk of
// top's subtree, skipping subtrees that hold none; after n's own subtree
// when done. It walks past no more than *budget resources that hold none,
// less each one: when the budget runs out first it returns noNode and the
// last it walked past, whose subtree the walk is done with; at the end of
// top's subtree, noNode twice.
func (x *Index) nextOfType(n, top, typ uint32, done bool, budget *int) (next, past uint32) {
	for {
		// Down into n's children while a child may hold typ, else across
		// and up.
		next := noNode
		if !done {
			for c := x.nodes[n].first; c != noNode; c = x.nodes[c].next {
				if x.nodes[c].typ == typ || x.typeCounts[typeKey(c, typ)] > 0 {
					next = c
					break
				}
				if *budget--; *budget <= 0 {
					return noNode, c
				}
			}
		}
		for next == noNode && n != top {
			for c := x.nodes[n].next; c != noNode; c = x.nodes[c].next {
				if x.nodes[c].typ == typ || x.typeCounts[typeKey(c, typ)] > 0 {
					next = c
					break
				}
				if *budget--; *budget <= 0 {
					return noNode, c
				}
			}
			if next == noNode {
				n = x.nodes[n].parent
			}
		}
		if next == noNode {
			return noNode, noNode
		}
		if x.nodes[next].typ == typ {
			return next, noNode
		}
		n, done = next, false
	}
}

func (x *Index) lookupSubjects(q LookupSubjectsQuery, size int, after *pageToken, filter uint64, at lookupAt) ([]Found, string, error) {
	perm := x.cat.id(q.Permission)
	if perm < 0 {
		return nil, "", errorf(Invalid, "permission", q.Permission, "permission is not declared in the catalog").as(KindUndeclaredPermission)
	}
	res, err := x.registered("resource", q.Resource)
	if err != nil {
		return nil, "", err
	}
	now := at.now
	var buf [MaxDepth + 1]uint32
	path := x.path(res, buf[:0])
	level, role, subject := 0, "", ""
	if after != nil {
		level = int(after.pos[2])
		role, subject, _ = strings.Cut(after.text, "\x00")
	}
	var out []Found
	judged := 0
	for ; level < len(path); level++ {
		a := path[level]
		list := x.byResource.get(a)
		i := 0
		if after != nil && level == int(after.pos[2]) {
			// The token names the next answer, which the page resumes at.
			i = x.searchResourceGrants(a, role, subject)
		}
		for ; i < len(list); i++ {
			g := list[i]
			if judged++; judged > lookupScan {
				return out, x.lookupToken(filter, at, uint32(level), 0, x.roleNames[g.role]+"\x00"+x.subj.name(g.subj)), nil
			}
			if !live(g.exp, now) {
				continue
			}
			name := x.subj.name(g.subj)
			if q.Kind != "" && TypeOf(name) != q.Kind {
				continue
			}
			// A subject is answered at its nearest grant, once.
			if x.earlierGrant(g.subj, path[:level], now) || x.earlierRole(g.subj, a, g.role, now) {
				continue
			}
			if b, _ := x.blocking(g.subj, path, perm, now); b != nil {
				continue
			}
			d, ok := x.granting(g.subj, path, perm, now)
			if !ok {
				continue
			}
			if len(out) == size {
				return out, x.lookupToken(filter, at, uint32(level), 0, x.roleNames[g.role]+"\x00"+name), nil
			}
			out = append(out, Found{Name: name, Role: x.roleNames[d.role], Scope: x.name(d.res)})
		}
	}
	return out, "", nil
}

// earlierGrant reports whether s holds a live grant on one of levels.
func (x *Index) earlierGrant(s uint32, levels []uint32, now int64) bool {
	for _, a := range levels {
		for _, g := range x.grantsOn(s, a) {
			if live(g.exp, now) {
				return true
			}
		}
	}
	return false
}

// earlierRole reports whether s holds a live grant on a of a role that
// sorts before role: where a resource's list, ordered by role name, meets s
// first.
func (x *Index) earlierRole(s, a, role uint32, now int64) bool {
	name := x.roleNames[role]
	for _, g := range x.grantsOn(s, a) {
		if live(g.exp, now) && strings.Compare(x.roleNames[g.role], name) < 0 {
			return true
		}
	}
	return false
}
