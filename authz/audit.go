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
	Resource string // a change on, of or under the resource's definitions, or of what is registered under it
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
		// A resource registered under a parent, moved from one to another,
		// or deleted from one, changes what is registered under each.
		return e.Creator, []string{e.Name, e.Parent, c.PreviousParent}
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
	// goOn is the token of the page that goes on with cs's changes after
	// the first sent of them.
	goOn := func(cs ChangeSet, sent int) string {
		return pageToken{filter: filter, pos: []uint32{uint32((cs.Revision - 1) >> 32), uint32(cs.Revision - 1)}, text: strconv.Itoa(sent)}.encode()
	}
	var page []ChangeSet
	changes, bytes := 0, 0 // in page
	if skip > 0 {
		// The token's change set goes on from its part sent last.
		part, err := e.changePart(ctx, after, skip, field, value)
		if err != nil {
			return nil, "", err
		}
		if part.Continued {
			return []ChangeSet{part}, goOn(part, skip+len(part.Changes)), nil
		}
		page, after, changes, bytes = append(page, part), part.Revision, len(part.Changes), part.approxBytes()
		if len(page) == size {
			return page, next(), nil
		}
	}
	// release gives back largeRead, once what it let be read is done with.
	release := func() {}
	defer func() { release() }()
	// batch is how many change sets to read next: one at first, more
	// while they are small, fewer once they are large.
	batch := 1
	fromStart := t == nil && after == 0
	moved := 0   // times the start of the whole log was moved past
	readAll := 0 // changes read, matched or not
	for scanned := 0; scanned < scanBudget && readAll < scanBudget; {
		release()
		release = func() {}
		rctx, cancel := e.LogRead(ctx)
		// Counted before they are decoded: as many as fit what is left of
		// the budget, and at least one, however large the change sets
		// that follow small ones are.
		counts, err := e.backend.ChangeCounts(rctx, after, min(batch, scanBudget-scanned))
		var sets []ChangeSet
		if err == nil && len(page) > 0 && len(counts) > 0 && counts[0] > MaxPageChanges {
			cancel()
			return page, next(), nil // it begins the next page, in parts
		}
		if _, parts := e.backend.(PartReader); err == nil && parts && len(page) == 0 && len(counts) > 0 && counts[0] > MaxPageChanges && f.Subject == "" && f.Resource == "" {
			// Too large for a page, and matched by who wrote it: its
			// first part is read alone.
			cancel()
			part, err := e.changePart(ctx, after, 0, field, value)
			if err != nil {
				return nil, "", err
			}
			if f.Matches(ChangeSet{Caller: part.Caller, Actor: part.Actor}) {
				return []ChangeSet{part}, goOn(part, len(part.Changes)), nil
			}
			after, scanned, readAll = part.Revision, scanned+1, readAll+counts[0]
			continue
		}
		if err == nil {
			n, c := 0, readAll
			for _, k := range counts {
				if n > 0 && c+k > scanBudget {
					break
				}
				n, c = n+1, c+k
			}
			if len(counts) > 0 && counts[0] > MaxPageChanges {
				// Read whole, for its filters: in its turn.
				select {
				case e.largeRead <- struct{}{}:
					release = func() { <-e.largeRead }
				case <-rctx.Done():
					err = rctx.Err()
				}
			}
			if err == nil {
				sets, err = e.backend.Changes(rctx, after, max(n, 1))
			}
		}
		if errors.Is(err, ErrCompacted) && fromStart && moved < maxStartMoves {
			// Asked for the whole log: it begins where compaction left it,
			// which a compaction under way (another replica's) may move
			// on again before it is read.
			if start, err := e.LogStart(rctx); err == nil && start > after {
				cancel()
				after, moved = start, moved+1
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
		if len(sets) > 0 {
			// From here on the log is read from a change set sent.
			fromStart = false
		}
		read := 0 // changes in sets
		for _, cs := range sets {
			read += len(cs.Changes)
			readAll += len(cs.Changes)
			matches := f.Matches(cs)
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
				cs.Changes, cs.Continued = cs.Changes[:partOf(cs)], true
				return []ChangeSet{cs}, goOn(cs, len(cs.Changes)), nil
			}
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

// changePart is the part of the first change set after after that a page
// holds, from its from-th change: read alone where the backend can, or
// else cut from the change set read whole. It is Continued when more of
// the change set follows. field and value name what after came from.
func (e *Engine) changePart(ctx context.Context, after Revision, from int, field, value string) (ChangeSet, error) {
	ctx, cancel := e.LogRead(ctx)
	defer cancel()
	var (
		part  ChangeSet
		total int
		err   error
	)
	if r, ok := e.backend.(PartReader); ok {
		part, total, err = r.ChangePart(ctx, after, from, MaxPageChanges)
	} else {
		var sets []ChangeSet
		if sets, err = e.backend.Changes(ctx, after, 1); err == nil && len(sets) == 1 {
			part, total = sets[0], len(sets[0].Changes)
			part.Changes = part.Changes[min(from, total):min(from+MaxPageChanges, total)]
		}
	}
	switch {
	case errors.Is(err, ErrCompacted):
		return ChangeSet{}, errorf(FailedPrecondition, field, value,
			"the change log no longer reaches back to revision %d; it was compacted", after).as(KindPageTokenExpired)
	case err != nil:
		return ChangeSet{}, &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "reading the change log: " + err.Error(), Err: err}
	case from >= total:
		// Only a token made up, or of another log, goes on past a change
		// set's end, or after the last.
		return ChangeSet{}, notAPageToken(value)
	}
	part.Changes = part.Changes[:partOf(part)]
	part.Continued = from+len(part.Changes) < total
	return part, nil
}

// maxStartMoves bounds how often a read of the whole log follows a
// compaction that moves its start on while it reads.
const maxStartMoves = 64

// MaxPageChanges is the most changes a page of ListChanges, or a message
// of Watch, holds.
const MaxPageChanges = 10_000

// partOf is how many of cs's changes, from its first, make a part of it:
// as many as a page holds, one at least.
func partOf(cs ChangeSet) int {
	return PartLen(len(cs.Changes), cs.headerBytes(), func(i int) int { return cs.Changes[i].approxBytes() })
}

// PartLen is how many of n changes, from the first, make a part of a
// change set too large for a page or a message: at most MaxPageChanges,
// and as many as fit about MaxPageBytes after header bytes, by size, each
// change's; one at least.
func PartLen(n, header int, size func(i int) int) int {
	bytes := header
	for i := range n {
		if bytes += size(i); i > 0 && (i == MaxPageChanges || bytes > MaxPageBytes) {
			return i
		}
	}
	return n
}
