package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Bucket names are part of the file format: renaming one orphans its data.
var (
	bucketMeta        = []byte("meta")
	bucketPermissions = []byte("permissions")
	bucketResources   = []byte("resources")
	bucketRoles       = []byte("roles")
	bucketGrants      = []byte("grants")
	bucketBlocks      = []byte("blocks")
	bucketChanges     = []byte("changes")
	bucketQuotas      = []byte("quotas")
	bucketCreators    = []byte("creator_roles")

	allBuckets = [][]byte{
		bucketMeta, bucketPermissions, bucketResources, bucketRoles,
		bucketGrants, bucketBlocks, bucketChanges, bucketQuotas, bucketCreators,
	}

	keyRevision = []byte("revision")
)

// keySep joins the parts of composite keys. Names never contain it, and it
// sorts before every printable byte, so all keys that share a leading part
// (a subject's grants, a scope's roles) are adjacent in bbolt order.
const keySep = "\x00"

// The range of instants whose Unix nanoseconds fit an int64; an expiry
// outside it cannot be stored in a grant's 8 bytes.
var (
	minExpiry = time.Unix(0, math.MinInt64)
	maxExpiry = time.Unix(0, math.MaxInt64)
)

// encodeRevision is big-endian so that bbolt's byte order is revision order,
// which Changes relies on to seek and scan.
func encodeRevision(r authz.Revision) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(r))
}

func decodeRevision(b []byte) (authz.Revision, error) {
	if b == nil {
		return 0, nil
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("revision value has %d bytes, want 8", len(b))
	}
	return authz.Revision(binary.BigEndian.Uint64(b)), nil
}

// compositeKey refuses parts containing keySep because such a part would
// silently read back as a different key.
func compositeKey(parts ...string) ([]byte, error) {
	n := len(parts) - 1
	for _, p := range parts {
		if strings.Contains(p, keySep) {
			return nil, fmt.Errorf("name %q contains a NUL byte", p)
		}
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, keySep...)
		}
		k = append(k, p...)
	}
	return k, nil
}

func permissionKey(p *authz.Permission) ([]byte, error) { return compositeKey(p.Name) }
func resourceKey(r *authz.Resource) ([]byte, error)     { return compositeKey(r.Name) }
func roleKey(r *authz.Role) ([]byte, error)             { return compositeKey(r.Scope, r.Name) }
func blockKey(b *authz.Block) ([]byte, error)           { return compositeKey(b.Subject, b.Resource) }
func quotaKey(q *authz.Quota) ([]byte, error) {
	return compositeKey(q.Scope, q.ResourceType, q.Subject)
}
func creatorRoleKey(c *authz.CreatorRole) ([]byte, error) {
	return compositeKey(c.ResourceType)
}

func grantKey(g *authz.Grant) ([]byte, error) {
	return compositeKey(g.Subject, g.Resource, g.Role)
}

// decodeGrant rebuilds a grant from its key and value. The key is converted to
// one string and sliced, so a grant costs a single allocation when a million
// of them are loaded at start-up.
func decodeGrant(k, v []byte) (authz.Grant, error) {
	if bytes.Count(k, []byte(keySep)) != 2 {
		return authz.Grant{}, fmt.Errorf("grant key %q: want subject, resource and role", k)
	}
	s := string(k)
	i := strings.IndexByte(s, 0)
	j := i + 1 + strings.IndexByte(s[i+1:], 0)
	expires, err := decodeExpiry(v)
	if err != nil {
		return authz.Grant{}, fmt.Errorf("grant key %q: %w", k, err)
	}
	return authz.Grant{Subject: s[:i], Resource: s[i+1 : j], Role: s[j+1:], Expires: expires}, nil
}

// encodeExpiry maps "never" (the zero time) to 0. An expiry at the Unix epoch
// itself would read back as "never", turning an expired grant into a
// permanent one, so it is refused along with instants that do not fit.
func encodeExpiry(t time.Time) ([]byte, error) {
	var n int64
	if !t.IsZero() {
		if t.Before(minExpiry) || t.After(maxExpiry) {
			return nil, fmt.Errorf("expiry %s is outside the storable range %s to %s", t, minExpiry.UTC(), maxExpiry.UTC())
		}
		if n = t.UnixNano(); n == 0 {
			return nil, fmt.Errorf("expiry %s is the Unix epoch, which is stored as never", t.UTC())
		}
	}
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(n)), nil
}

func decodeExpiry(b []byte) (time.Time, error) {
	if len(b) != 8 {
		return time.Time{}, fmt.Errorf("expiry value has %d bytes, want 8", len(b))
	}
	n := int64(binary.BigEndian.Uint64(b))
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, n).UTC(), nil
}

// committedCopies copies a batch as committedCopy does, stamping those
// without a time with now.
func committedCopies(css []authz.ChangeSet, now time.Time) []authz.ChangeSet {
	out := make([]authz.ChangeSet, len(css))
	for i, cs := range css {
		out[i] = committedCopy(cs)
		if out[i].Time.IsZero() {
			out[i].Time = now
		}
	}
	return out
}

// committedCopy is what the store writes and hands to watchers: a copy the
// caller can no longer mutate, with every time in UTC and without monotonic
// readings, so that the watchers see exactly what Changes later reads back.
func committedCopy(cs authz.ChangeSet) authz.ChangeSet {
	out := authz.ChangeSet{Time: cs.Time.UTC(), Caller: cs.Caller, Actor: cs.Actor}
	if len(cs.Changes) == 0 {
		return out
	}
	out.Changes = make([]authz.Change, len(cs.Changes))
	for i, c := range cs.Changes {
		d := authz.Change{Op: c.Op}
		if c.Permission != nil {
			p := *c.Permission
			p.Parents = cloneStrings(p.Parents)
			d.Permission = &p
		}
		if c.Resource != nil {
			r := *c.Resource
			d.Resource = &r
		}
		if c.Role != nil {
			r := *c.Role
			r.Permissions = cloneStrings(r.Permissions)
			r.AssignableRoles = cloneStrings(r.AssignableRoles)
			r.BindableOn = cloneStrings(r.BindableOn)
			d.Role = &r
		}
		if c.Grant != nil {
			g := *c.Grant
			g.Expires = g.Expires.UTC()
			d.Grant = &g
		}
		if c.Block != nil {
			b := *c.Block
			b.Permissions = cloneStrings(b.Permissions)
			b.Expires = b.Expires.UTC()
			d.Block = &b
		}
		if c.Quota != nil {
			q := *c.Quota
			d.Quota = &q
		}
		if c.CreatorRole != nil {
			cr := *c.CreatorRole
			d.CreatorRole = &cr
		}
		out.Changes[i] = d
	}
	return out
}

// cloneStrings turns empty into nil, as a JSON round trip with omitempty does.
func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}
