package policy

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// Entry is one difference between the policy in force and another: an
// entity added (+), changed (~) or removed (-), with the fields that
// differ.
type Entry struct {
	Sign byte   // '+', '~' or '-'
	Kind string // "permission", "resource", "role", "creator role", "quota", "default quota", "admission rule"
	// Name says which one: "host at root", "account:acme/call".
	Name string
	// Fields are what a change changes, or every field an addition sets.
	Fields []FieldChange
	// PruneOnly marks a removal that only an apply with prune makes; an
	// apply without it leaves the entity alone.
	PruneOnly bool
}

// FieldChange is one field of an Entry: Old and New as written in a
// policy file, "(unset)" for a time, duration, lobby or mapping that is
// not set; for a list, the members added and removed. Old is empty in an
// addition.
type FieldChange struct {
	Name     string
	Old, New string
	// Added and Removed are a list's members that differ; Old and New are
	// then empty.
	Added, Removed []string
}

// String is the entry's line: "~ role host at root".
func (e Entry) String() string {
	return fmt.Sprintf("%c %s %s", e.Sign, e.Kind, e.Name)
}

// String is the field's line: "permissions: +send-audio -screenshare",
// "max_holders: 0 -> 1", or for an addition "max_holders: 1".
func (f FieldChange) String() string {
	switch {
	case f.Added != nil || f.Removed != nil:
		var parts []string
		for _, a := range f.Added {
			parts = append(parts, "+"+a)
		}
		for _, r := range f.Removed {
			parts = append(parts, "-"+r)
		}
		return f.Name + ": " + strings.Join(parts, " ")
	case f.Old == "":
		return f.Name + ": " + f.New
	}
	return f.Name + ": " + f.Old + " -> " + f.New
}

// Detail says which entries Render writes the fields of.
type Detail int

// The details Render writes.
const (
	// NoFields writes a line per entry.
	NoFields Detail = iota
	// ChangedFields writes the fields of changes (~) only.
	ChangedFields
	// AllFields writes the fields of additions too.
	AllFields
)

// Render writes entries a line each, with the fields detail asks for
// below each, indented. A removal only prune makes says so.
func Render(w io.Writer, entries []Entry, detail Detail) {
	for _, e := range entries {
		line := e.String()
		if e.PruneOnly {
			line += " (with --prune)"
		}
		fmt.Fprintln(w, line)
		if detail == AllFields || detail == ChangedFields && e.Sign == '~' {
			for _, f := range e.Fields {
				fmt.Fprintln(w, "    "+f.String())
			}
		}
	}
}

// entity is one thing a policy defines, normalized as the engine stores
// it, so that two spellings of one definition compare equal.
type entity struct {
	kind, key, name string
	scope           string // where it is defined, for roles, quotas and rules
	msg             proto.Message
}

// The kinds, in the order a diff lists them.
var kinds = []string{"permission", "resource", "role", "creator role", "quota", "default quota", "admission rule"}

// id tells entities apart: one kind and key is one definition.
func (e entity) id() string { return e.kind + "\x00" + e.key }

// byID indexes entities by id.
func byID(es []entity) map[string]entity {
	out := make(map[string]entity, len(es))
	for _, e := range es {
		out[e.id()] = e
	}
	return out
}

func entities(p *usherv1.Policy) []entity {
	var out []entity
	out = appendEntities(out, p.GetPermissions())
	out = appendEntities(out, p.GetResources())
	out = appendEntities(out, p.GetRoles())
	out = appendEntities(out, p.GetCreatorRoles())
	out = appendEntities(out, p.GetQuotas())
	out = appendEntities(out, p.GetDefaultQuotas())
	return appendEntities(out, p.GetAdmissions())
}

func appendEntities[M proto.Message](out []entity, ms []M) []entity {
	for _, m := range ms {
		out = append(out, newEntity(m))
	}
	return out
}

// newEntity names and normalizes one definition.
func newEntity(m proto.Message) entity {
	m = normalize(m)
	switch m := m.(type) {
	case *usherv1.Permission:
		return entity{kind: "permission", key: m.GetName(), name: m.GetName(), msg: m}
	case *usherv1.Resource:
		return entity{kind: "resource", key: m.GetName(), name: m.GetName(), msg: m}
	case *usherv1.Role:
		return entity{kind: "role", key: m.GetScope() + " " + m.GetName(), name: m.GetName() + " at " + m.GetScope(), scope: m.GetScope(), msg: m}
	case *usherv1.CreatorRole:
		return entity{kind: "creator role", key: m.GetResourceType(), name: "for " + m.GetResourceType(), msg: m}
	case *usherv1.Quota:
		name := m.GetScope() + "/" + m.GetResourceType()
		if m.GetSubject() != "" {
			name += " for " + m.GetSubject()
		}
		return entity{kind: "quota", key: name, name: name, scope: m.GetScope(), msg: m}
	case *usherv1.DefaultQuota:
		name := m.GetScopeType() + "/" + m.GetResourceType()
		return entity{kind: "default quota", key: name, name: name, msg: m}
	case *usherv1.Admission:
		return entity{kind: "admission rule", key: m.GetScope() + " " + m.GetResourceType(),
			name: "for " + m.GetResourceType() + " at " + m.GetScope(), scope: m.GetScope(), msg: m}
	}
	return entity{kind: fmt.Sprintf("%T", m), msg: m}
}

// normalize returns a copy of m as the engine keeps it: lists as sorted
// sets, root spelt out, the default lease and zero durations unset, and
// output-only fields cleared.
func normalize(m proto.Message) proto.Message {
	m = proto.Clone(m)
	sortSets(m.ProtoReflect())
	switch m := m.(type) {
	case *usherv1.Resource:
		if m.Parent == "" {
			m.Parent = authz.RootName
		}
	case *usherv1.Quota:
		m.Used = 0
	case *usherv1.Admission:
		if m.Scope == "" {
			m.Scope = authz.RootName
		}
		if d := m.GetLease().AsDuration(); d == authz.DefaultLease || d == 0 {
			m.Lease = nil
		}
		if m.GetJoinAhead().AsDuration() == 0 {
			m.JoinAhead = nil
		}
	}
	return m
}

// sortSets sorts and dedupes every list of strings in m: every such list in
// a policy is a set.
func sortSets(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			list := v.List()
			var s []string
			for i := 0; i < list.Len(); i++ {
				s = append(s, list.Get(i).String())
			}
			slices.Sort(s)
			s = slices.Compact(s)
			list.Truncate(0)
			for _, x := range s {
				list.Append(protoreflect.ValueOfString(x))
			}
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			sortSets(v.Message())
		}
		return true
	})
}

// Diff compares the policy in force, old (an export), with a policy file,
// new, as applying new would change old: the catalog becomes exactly
// new's; new's resources, roles, creator roles, quotas, default quotas and
// rules are put; and what old defines beyond new on root and on new's
// resources, and old's creator roles and default quotas beyond new's, are
// removed only with prune (PruneOnly). Resources are never removed.
func Diff(old, new *usherv1.Policy) []Entry {
	managed := map[string]bool{authz.RootName: true}
	for _, r := range new.GetResources() {
		managed[r.GetName()] = true
	}
	olds := entities(old)
	before := byID(olds)
	var out []Entry
	after := map[string]bool{}
	for _, e := range entities(new) {
		id := e.id()
		if after[id] {
			continue // listed twice: Check reports it
		}
		after[id] = true
		b, ok := before[id]
		if !ok {
			out = append(out, Entry{Sign: '+', Kind: e.kind, Name: e.name, Fields: fields(e.msg)})
			continue
		}
		if fs := compare(b.msg, e.msg, true); len(fs) > 0 {
			out = append(out, Entry{Sign: '~', Kind: e.kind, Name: e.name, Fields: fs})
		}
	}
	// A quota of a type that its scope's type has a default quota for, in
	// new, is kept by a prune whatever its limit, as apply keeps it; the
	// defaults new drops keep nothing.
	isDefault := func(e entity) bool {
		q, ok := e.msg.(*usherv1.Quota)
		given := func(d *usherv1.DefaultQuota) bool {
			return d.GetScopeType() == authz.TypeOf(q.GetScope()) && d.GetResourceType() == q.GetResourceType()
		}
		return ok && q.GetSubject() == "" && slices.ContainsFunc(new.GetDefaultQuotas(), given)
	}
	for _, e := range olds {
		id := e.id()
		if after[id] || e.kind == "resource" || (e.scope != "" && !managed[e.scope]) || isDefault(e) {
			continue
		}
		after[id] = true
		out = append(out, Entry{Sign: '-', Kind: e.kind, Name: e.name, PruneOnly: e.kind != "permission"})
	}
	slices.SortStableFunc(out, func(a, b Entry) int {
		return slices.Index(kinds, a.Kind) - slices.Index(kinds, b.Kind)
	})
	return out
}

// Changes describes the changes an apply made (or, dry, would make),
// against old, the policy in force before it (at least the entities the
// changes touch): a put of something old lacks is an addition, of
// something old has a change with the fields that differ.
func Changes(old *usherv1.Policy, changes []*usherv1.Change) []Entry {
	before := byID(entities(old))
	var out []Entry
	for _, c := range changes {
		m := changeEntity(c)
		if m == nil {
			continue
		}
		e := newEntity(m)
		b, existed := before[e.id()]
		switch {
		case strings.HasPrefix(c.GetOp().String(), "OP_DELETE_"):
			out = append(out, Entry{Sign: '-', Kind: e.kind, Name: e.name})
		case !existed:
			out = append(out, Entry{Sign: '+', Kind: e.kind, Name: e.name, Fields: fields(e.msg)})
		default:
			out = append(out, Entry{Sign: '~', Kind: e.kind, Name: e.name, Fields: compare(b.msg, e.msg, false)})
		}
	}
	return out
}

// changeEntity is the definition a change puts or deletes.
func changeEntity(c *usherv1.Change) proto.Message {
	switch e := c.GetEntity().(type) {
	case *usherv1.Change_Permission:
		return e.Permission
	case *usherv1.Change_Resource:
		return e.Resource
	case *usherv1.Change_Role:
		return e.Role
	case *usherv1.Change_CreatorRole:
		return e.CreatorRole
	case *usherv1.Change_Quota:
		return e.Quota
	case *usherv1.Change_DefaultQuota:
		return e.DefaultQuota
	case *usherv1.Change_Admission:
		return e.Admission
	}
	return nil
}

// keyFields name an entity rather than describe it; they are in its Name.
var keyFields = map[string]bool{"name": true, "scope": true, "resource_type": true, "scope_type": true, "subject": true}

// fields lists what an added entity sets.
func fields(m proto.Message) []FieldChange {
	var out []FieldChange
	each(m.ProtoReflect(), "", func(name string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		if !keyFields[name] {
			out = append(out, FieldChange{Name: name, New: format(fd, v)})
		}
	})
	return out
}

// compare lists the fields that differ between two definitions of one
// entity. With fromFile, new is a policy file's, in which a resource's
// creator, start time and liveness are left alone when unset.
func compare(old, new proto.Message, fromFile bool) []FieldChange {
	ov, nv := values(old.ProtoReflect()), values(new.ProtoReflect())
	_, isResource := new.(*usherv1.Resource)
	var names []string
	for n := range ov {
		names = append(names, n)
	}
	for n := range nv {
		if _, ok := ov[n]; !ok {
			names = append(names, n)
		}
	}
	order := fieldOrder(new.ProtoReflect().Descriptor())
	slices.SortFunc(names, func(a, b string) int { return order(a) - order(b) })
	var out []FieldChange
	for _, n := range names {
		if keyFields[n] || isResource && n == "creator" {
			continue
		}
		if isResource && fromFile && (n == "start_time" || n == "live") && nv["start_time"].s == "" && nv["live"].s == "" {
			continue
		}
		o, nw := ov[n], nv[n]
		if o.s == nw.s {
			continue
		}
		if o.list || nw.list {
			out = append(out, FieldChange{Name: n, Added: minus(nw.items, o.items), Removed: minus(o.items, nw.items)})
			continue
		}
		out = append(out, FieldChange{Name: n, Old: or(o.text(nw), unset), New: or(nw.text(o), unset)})
	}
	return out
}

// fieldOrder ranks a dotted field name by its top-level field's number.
func fieldOrder(md protoreflect.MessageDescriptor) func(string) int {
	return func(name string) int {
		top, _, _ := strings.Cut(name, ".")
		if fd := md.Fields().ByName(protoreflect.Name(top)); fd != nil {
			return int(fd.Number())
		}
		return 1 << 20
	}
}

const unset = "(unset)"

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// minus lists the members of a that b lacks, in a's order: a set
// difference in time linear in both, for lists as long as a file makes them.
func minus(a, b []string) []string {
	inB := make(map[string]bool, len(b))
	for _, x := range b {
		inB[x] = true
	}
	var out []string
	for _, x := range a {
		if !inB[x] {
			out = append(out, x)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}

// value is one field as text: a list also as its members.
type value struct {
	s     string
	list  bool
	items []string
	fd    protoreflect.FieldDescriptor
}

// text is the value as a change shows it: an unset number, flag or name
// as its zero value, an unset time or duration as empty.
func (v value) text(other value) string {
	if v.s != "" {
		return v.s
	}
	fd := other.fd
	if fd == nil || fd.Message() != nil || fd.IsList() {
		return ""
	}
	return format(fd, fd.Default())
}

// values flattens m to its set fields by dotted name.
func values(m protoreflect.Message) map[string]value {
	out := map[string]value{}
	each(m, "", func(name string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		val := value{s: format(fd, v), fd: fd}
		if fd.IsList() {
			val.list = true
			for i := 0; i < v.List().Len(); i++ {
				val.items = append(val.items, v.List().Get(i).String())
			}
		}
		out[name] = val
	})
	return out
}

// each visits the set fields of m, descending into nested messages (a
// lobby, a LiveKit mapping) and maps with dotted names.
func each(m protoreflect.Message, prefix string, visit func(string, protoreflect.FieldDescriptor, protoreflect.Value)) {
	fds := m.Descriptor().Fields()
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if !m.Has(fd) {
			continue
		}
		name, v := prefix+string(fd.Name()), m.Get(fd)
		switch {
		case fd.IsMap():
			var keys []string
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k.String())
				return true
			})
			slices.Sort(keys)
			for _, k := range keys {
				visit(name+"."+k, fd.MapValue(), v.Map().Get(protoreflect.ValueOfString(k).MapKey()))
			}
		case isMessage(fd) && !fd.IsList():
			each(v.Message(), name+".", visit)
		default:
			visit(name, fd, v)
		}
	}
}

// format writes a value as a policy file would.
func format(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if fd.IsList() {
		items := make([]string, v.List().Len())
		for i := range items {
			items[i] = format1(fd, v.List().Get(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return format1(fd, v)
}

func format1(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if md := fd.Message(); md != nil {
		switch md.FullName() {
		case timestampName:
			ts := v.Message().Interface().(*timestamppb.Timestamp)
			return ts.AsTime().Format(time.RFC3339Nano)
		case durationName:
			return v.Message().Interface().(*durationpb.Duration).AsDuration().String()
		}
	}
	if fd.Kind() == protoreflect.StringKind {
		s := v.String()
		if s == "" || strings.ContainsAny(s, " ,[]\"") {
			return fmt.Sprintf("%q", s)
		}
		return s
	}
	return fmt.Sprint(v.Interface())
}
