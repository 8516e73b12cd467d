package authz

import (
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
	switch {
	case c.Grant != nil:
		return c.Grant.Subject, []string{c.Grant.Resource}
	case c.Block != nil:
		return c.Block.Subject, []string{c.Block.Resource}
	case c.Quota != nil:
		return c.Quota.Subject, []string{c.Quota.Scope}
	case c.Resource != nil:
		return c.Resource.Creator, []string{c.Resource.Name, c.Resource.Parent}
	case c.Role != nil:
		return "", []string{c.Role.Scope}
	}
	return "", nil
}

// ListChanges returns one page of the change sets that match f, oldest
// first, and the token of the next page ("" on the last).
func (e *Engine) ListChanges(f ChangeFilter, pageSize int, pageToken string) ([]ChangeSet, string, error) {
	if pageSize < 0 || pageSize > MaxPageSize {
		return nil, "", errorf(Invalid, "page_size", fmt.Sprint(pageSize), "page size must be between 0 and %d", MaxPageSize)
	}
	if pageSize == 0 {
		pageSize = DefaultPageSize
	}
	var after Revision
	if pageToken != "" {
		n, err := strconv.ParseUint(pageToken, 10, 64)
		if err != nil {
			return nil, "", errorf(Invalid, "page_token", pageToken, "not a token this server returned")
		}
		after = Revision(n)
	}
	var page []ChangeSet
	for {
		batch, err := e.backend.Changes(after, 256)
		if err != nil {
			return nil, "", &Error{Code: Unavailable, Reason: "reading the change log: " + err.Error(), Err: err}
		}
		for _, cs := range batch {
			after = cs.Revision
			if !f.Matches(cs) {
				continue
			}
			page = append(page, cs)
			if len(page) == pageSize {
				return page, strconv.FormatUint(uint64(after), 10), nil
			}
		}
		if len(batch) < 256 {
			return page, "", nil
		}
	}
}
