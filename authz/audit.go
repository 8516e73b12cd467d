package authz

import (
	"context"
	"errors"
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

// ListChanges returns one page of the change sets that match f, oldest
// first, and the token of the next page ("" on the last). A page reads at
// most scanBudget change sets of the log, so a filter that matches few comes
// back with a short page and a token to go on rather than reading the whole
// log in one call.
func (e *Engine) ListChanges(ctx context.Context, f ChangeFilter, size int, token string) ([]ChangeSet, string, error) {
	size, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	var after Revision
	if token != "" {
		n, err := strconv.ParseUint(token, 10, 64)
		if err != nil {
			return nil, "", errorf(Invalid, "page_token", token, "not a token this server returned")
		}
		after = Revision(n)
	}
	var page []ChangeSet
	for scanned := 0; scanned < scanBudget; {
		batch, err := e.backend.Changes(ctx, after, min(256, scanBudget-scanned))
		if errors.Is(err, ErrCompacted) {
			return nil, "", errorf(FailedPrecondition, "page_token", token,
				"the change log no longer reaches back to revision %d; it was compacted", after).as(KindPageTokenExpired)
		}
		if err != nil {
			return nil, "", &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "reading the change log: " + err.Error(), Err: err}
		}
		for _, cs := range batch {
			after = cs.Revision
			scanned++
			if !f.Matches(cs) {
				continue
			}
			page = append(page, cs)
			if len(page) == size {
				return page, strconv.FormatUint(uint64(after), 10), nil
			}
		}
		if len(batch) == 0 {
			return page, "", nil
		}
	}
	return page, strconv.FormatUint(uint64(after), 10), nil
}
