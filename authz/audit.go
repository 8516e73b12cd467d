package authz

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// ChangeFilter selects change sets from the log; empty fields match all, and
// set ones combine with AND.
type ChangeFilter struct {
	Subject  string // a change to the subject's grants, blocks or quotas
	Resource string // a change on, of or under the resource's definitions
	Actor    string
	Caller   string
}

// Matches reports whether cs passes f.
func (f ChangeFilter) Matches(cs ChangeSet) bool {
	if f.Actor != "" && cs.Actor != f.Actor || f.Caller != "" && cs.Caller != f.Caller {
		return false
	}
	if f.Subject == "" && f.Resource == "" {
		return true
	}
	for _, c := range cs.Changes {
		subject, resources := c.touches()
		if (f.Subject == "" || subject == f.Subject) && (f.Resource == "" || contains(resources, f.Resource)) {
			return true
		}
	}
	return false
}

// touches names the subject and the resources a change is about.
func (c Change) touches() (subject string, resources []string) {
	switch e := c.entity().(type) {
	case *Grant:
		return e.Subject, []string{e.Resource}
	case *Block:
		return e.Subject, []string{e.Resource}
	case *Quota:
		return e.Subject, []string{e.Scope}
	case *Resource:
		return e.Creator, []string{e.Name, e.Parent}
	case *Role:
		return "", []string{e.Scope}
	}
	return "", nil
}

// ListChanges returns one page of the change sets after revision after that
// match f, oldest first, and the token of the next page ("" on the last). A
// token belongs to f and after: it is refused with other filters. A page
// reads at most scanBudget change sets of the log, and of changes in them
// (but for one change set that holds more), counted before they are
// decoded, so a filter that matches few comes back with a short page and a
// token to go on rather than reading the whole log in one call, however
// large its change sets; and it holds at most MaxPageChanges changes and
// about MaxPageBytes, read some at a time, so that a log of large policies
// is not read, nor answered, gigabytes at once. A change set of more (the
// deletion of a resource with a crowd's grants) comes in parts, each a
// page of its own, every part but the last Continued.
func (e *Engine) ListChanges(ctx context.Context, f ChangeFilter, after Revision, size int, token string) ([]ChangeSet, string, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	filter := filterHash("changes", f.Subject, f.Resource, f.Actor, f.Caller, strconv.FormatUint(uint64(after), 10))
	t, err := decodePageToken(token, filter, 2)
	if err != nil {
		return nil, "", err
	}
	field, value := "after_revision", strconv.FormatUint(uint64(after), 10)
	skip := 0 // the changes of the next change set sent already, in parts
	if t != nil {
		after = Revision(uint64(t.pos[0])<<32 | uint64(t.pos[1]))
		field, value = "page_token", token
		if t.text != "" {
			if skip, err = strconv.Atoi(t.text); err != nil || skip <= 0 {
				return nil, "", notAPageToken(token)
			}
		}
	}
	next := func() string {
		return pageToken{filter: filter, pos: []uint32{uint32(after >> 32), uint32(after)}}.encode()
	}
	var page []ChangeSet
	changes, bytes := 0, 0 // in page
	// batch is how many change sets to read next: one at first, more
	// while they are small, fewer once they are large.
	batch := 1
	fromStart := t == nil && after == 0
	readAll := 0 // changes read, matched or not
	for scanned := 0; scanned < scanBudget && readAll < scanBudget; {
		rctx, cancel := e.LogRead(ctx)
		// Counted before they are decoded: as many as fit what is left of
		// the budget, and at least one, however large the change sets
		// that follow small ones are.
		counts, err := e.backend.ChangeCounts(rctx, after, min(batch, scanBudget-scanned))
		var sets []ChangeSet
		if err == nil {
			n, c := 0, readAll
			for _, k := range counts {
				if n > 0 && c+k > scanBudget {
					break
				}
				n, c = n+1, c+k
			}
			sets, err = e.backend.Changes(rctx, after, max(n, 1))
		}
		if errors.Is(err, ErrCompacted) && fromStart {
			// Asked for the whole log: it begins where compaction left it.
			if start, err := e.LogStart(rctx); err == nil && start > after {
				cancel()
				after, fromStart = start, false
				continue
			}
		}
		cancel()
		if errors.Is(err, ErrCompacted) {
			where := ""
			if start, err := e.LogStart(ctx); err == nil && start > after {
				where = fmt.Sprintf(": it begins after revision %d", start)
			}
			return nil, "", errorf(FailedPrecondition, field, value,
				"the change log no longer reaches back to revision %d; it was compacted%s", after, where).as(KindPageTokenExpired)
		}
		if err != nil {
			return nil, "", &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "reading the change log: " + err.Error(), Err: err}
		}
		read := 0 // changes in sets
		for _, cs := range sets {
			read += len(cs.Changes)
			readAll += len(cs.Changes)
			matches := f.Matches(cs)
			if skip > 0 {
				// The token's change set, the first read, goes on from
				// its part sent last.
				if cs.Revision != after+1 || skip >= len(cs.Changes) {
					return nil, "", notAPageToken(token)
				}
				cs.Changes = cs.Changes[skip:]
			}
			setBytes := 0
			if matches {
				setBytes = cs.approxBytes()
			}
			if matches && len(page) > 0 && (changes+len(cs.Changes) > MaxPageChanges || bytes+setBytes > MaxPageBytes) {
				return page, next(), nil // cs begins the next page
			}
			if matches && (len(cs.Changes) > MaxPageChanges || setBytes > MaxPageBytes) {
				// Too large for a page: it comes in parts, this one
				// alone in its page.
				n := partOf(cs)
				at := pageToken{filter: filter, pos: []uint32{uint32((cs.Revision - 1) >> 32), uint32(cs.Revision - 1)},
					text: strconv.Itoa(skip + n)}
				cs.Changes, cs.Continued = cs.Changes[:n], true
				return []ChangeSet{cs}, at.encode(), nil
			}
			skip = 0
			after = cs.Revision
			scanned++
			if !matches {
				continue
			}
			page = append(page, cs)
			changes += len(cs.Changes)
			bytes += setBytes
			if len(page) == size || changes >= MaxPageChanges || bytes >= MaxPageBytes {
				return page, next(), nil
			}
		}
		if len(sets) == 0 {
			if latest, err := e.Latest(ctx); err == nil && after > latest {
				// Nothing is read past the latest revision, but the
				// revision is of another history: a client that went on
				// from it would miss what this one commits up to it.
				refusal := errorf(FailedPrecondition, field, value,
					"revision %d is past the latest committed revision, %d, so not of this change log's history (a data file restored from an older backup?): read again from a revision read here, or from the start", after, latest).as(KindFutureRevision)
				refusal.Meta = map[string]string{"latest_revision": fmt.Sprint(latest)}
				return nil, "", refusal
			}
			return page, "", nil
		}
		batch = max(1, min(256, 2*batch, MaxPageChanges*len(sets)/max(1, read)))
	}
	return page, next(), nil
}

// MaxPageChanges is the most changes a page of ListChanges, or a message
// of Watch, holds.
const MaxPageChanges = 10_000

// partOf is how many of cs's changes, from its first, make a part of it:
// as many as a page holds, one at least.
func partOf(cs ChangeSet) int {
	bytes := cs.headerBytes()
	for i, c := range cs.Changes {
		if bytes += c.approxBytes(); i > 0 && (i == MaxPageChanges || bytes > MaxPageBytes) {
			return i
		}
	}
	return len(cs.Changes)
}
