package storage

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/usher-authz/usher/authz"
)

// Puts returns the changes that store every entity of snap, kind by kind:
// what an import writes into an empty backend.
func Puts(snap authz.Snapshot) []authz.Change {
	var out []authz.Change
	for i := range snap.Permissions {
		out = append(out, authz.Change{Op: authz.OpPutPermission, Permission: &snap.Permissions[i]})
	}
	for i := range snap.Resources {
		out = append(out, authz.Change{Op: authz.OpPutResource, Resource: &snap.Resources[i]})
	}
	for i := range snap.Roles {
		out = append(out, authz.Change{Op: authz.OpPutRole, Role: &snap.Roles[i]})
	}
	for i := range snap.Grants {
		out = append(out, authz.Change{Op: authz.OpPutGrant, Grant: &snap.Grants[i]})
	}
	for i := range snap.Blocks {
		out = append(out, authz.Change{Op: authz.OpPutBlock, Block: &snap.Blocks[i]})
	}
	for i := range snap.Quotas {
		out = append(out, authz.Change{Op: authz.OpPutQuota, Quota: &snap.Quotas[i]})
	}
	for i := range snap.CreatorRoles {
		out = append(out, authz.Change{Op: authz.OpPutCreatorRole, CreatorRole: &snap.CreatorRoles[i]})
	}
	for i := range snap.DefaultQuotas {
		out = append(out, authz.Change{Op: authz.OpPutDefaultQuota, DefaultQuota: &snap.DefaultQuotas[i]})
	}
	for i := range snap.Admissions {
		out = append(out, authz.Change{Op: authz.OpPutAdmission, Admission: &snap.Admissions[i]})
	}
	return out
}

// CompareSnapshots returns nil when a and b are at the same revision and
// hold the same entities, every field as a backend stores it, and otherwise
// an error that names the first entity that differs and counts the others.
// Entities are compared in their stored form, by kind and key, so the order
// a backend loads them in does not matter.
func CompareSnapshots(a, b authz.Snapshot) error {
	ea, err := storedForm(a)
	if err != nil {
		return fmt.Errorf("the first snapshot: %w", err)
	}
	eb, err := storedForm(b)
	if err != nil {
		return fmt.Errorf("the second snapshot: %w", err)
	}
	var differ []string
	for _, k := range sortedKeys(ea, eb) {
		va, inA := ea[k]
		vb, inB := eb[k]
		switch {
		case !inB:
			differ = append(differ, fmt.Sprintf("%s %q is only in the first", k.kind, k.text()))
		case !inA:
			differ = append(differ, fmt.Sprintf("%s %q is only in the second", k.kind, k.text()))
		case !bytes.Equal(va, vb):
			differ = append(differ, fmt.Sprintf("%s %q differs", k.kind, k.text()))
		}
	}
	switch {
	case len(differ) > 0:
		return fmt.Errorf("the snapshots differ in %d entities, the first: %s", len(differ), differ[0])
	case a.Revision != b.Revision:
		return fmt.Errorf("the snapshots hold the same entities at different revisions, %d and %d", a.Revision, b.Revision)
	}
	return nil
}

type storedKey struct {
	kind Kind
	key  string
}

// text is the key's parts, readable: "user:alice account:acme owner".
func (k storedKey) text() string { return strings.ReplaceAll(k.key, keySep, " ") }

// sortedKeys is every key of a and b once, by kind and key.
func sortedKeys(a, b map[storedKey][]byte) []storedKey {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y storedKey) int {
		return cmp.Or(cmp.Compare(x.kind, y.kind), strings.Compare(x.key, y.key))
	})
	return keys
}

// storedForm is every entity of snap by kind and key, as its stored value.
func storedForm(snap authz.Snapshot) (map[storedKey][]byte, error) {
	out := map[storedKey][]byte{}
	for _, c := range Puts(snap) {
		e, err := EntryOf(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Op, err)
		}
		k := storedKey{e.Kind, string(e.Key)}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s %q appears twice", e.Kind, e.Key)
		}
		out[k] = e.Value
	}
	return out, nil
}
