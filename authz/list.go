package authz

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Page sizes of list calls.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// GrantFilter selects grants: of Subject, on Resource (that very resource),
// or both; at least one is set.
type GrantFilter struct {
	Subject  string
	Resource string
}

// ListGrants returns one page of the unexpired grants that match f, ordered
// by resource, subject and role, and the token of the next page ("" on the
// last).
func (x *Index) ListGrants(f GrantFilter, pageSize int, pageToken string) ([]Grant, string, Revision, error) {
	if pageSize < 0 || pageSize > MaxPageSize {
		return nil, "", 0, errorf(Invalid, "page_size", fmt.Sprint(pageSize), "page size must be between 0 and %d", MaxPageSize)
	}
	if pageSize == 0 {
		pageSize = DefaultPageSize
	}
	after, err := decodePageToken(pageToken)
	if err != nil {
		return nil, "", 0, err
	}
	now := time.Now().UnixNano()
	x.mu.RLock()
	defer x.mu.RUnlock()
	if f.Resource != "" {
		if _, err := x.registered("resource", f.Resource); err != nil {
			return nil, "", x.rev, err
		}
	}
	var all []Grant
	switch {
	case f.Subject != "":
		si := x.subjects[f.Subject]
		if si == nil {
			break
		}
		for n, list := range si.grants {
			if f.Resource != "" && n.name != f.Resource {
				continue
			}
			for _, b := range list {
				if live(b.expires, now) {
					all = append(all, x.grant(f.Subject, b.role, n, b.expires))
				}
			}
		}
	case f.Resource != "":
		n := x.nodes[f.Resource]
		for h, exp := range n.grants {
			if live(exp, now) {
				all = append(all, x.grant(h.subject, h.role, n, exp))
			}
		}
	default:
		return nil, "", x.rev, errorf(Invalid, "subject", "", "name a subject, a resource or both")
	}
	slices.SortFunc(all, compareGrants)
	start := 0
	if after != nil {
		start, _ = slices.BinarySearchFunc(all, *after, compareGrants)
		for start < len(all) && compareGrants(all[start], *after) <= 0 {
			start++
		}
	}
	page := all[start:min(start+pageSize, len(all))]
	next := ""
	if start+len(page) < len(all) {
		next = encodePageToken(page[len(page)-1])
	}
	return page, next, x.rev, nil
}

func (x *Index) grant(subject string, role int32, n *node, exp int64) Grant {
	g := Grant{Subject: subject, Role: x.roleNames[role], Resource: n.name}
	if exp != 0 {
		g.Expires = time.Unix(0, exp).UTC()
	}
	return g
}

// grantsOn returns every grant made on n, expired or not, ordered.
func (x *Index) grantsOn(n *node) []Grant {
	out := make([]Grant, 0, len(n.grants))
	for h, exp := range n.grants {
		out = append(out, x.grant(h.subject, h.role, n, exp))
	}
	slices.SortFunc(out, compareGrants)
	return out
}

func compareGrants(a, b Grant) int {
	return cmp.Or(strings.Compare(a.Resource, b.Resource), strings.Compare(a.Subject, b.Subject), strings.Compare(a.Role, b.Role))
}

func encodePageToken(g Grant) string {
	return base64.RawURLEncoding.EncodeToString([]byte(g.Resource + "\x00" + g.Subject + "\x00" + g.Role))
}

func decodePageToken(token string) (*Grant, error) {
	if token == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != 3 {
		return nil, errorf(Invalid, "page_token", token, "not a token this server returned")
	}
	return &Grant{Resource: parts[0], Subject: parts[1], Role: parts[2]}, nil
}
