package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	recordv1 "github.com/usher-authz/usher/gen/usher/storage/v1"
)

// This file is the record format, the one place where domain values become
// bytes and back. Every backend stores an entity under a key of its Kind and
// a value that starts with a format byte; what follows is a
// usher.storage.v1 message (grants: an 8-byte expiry, since their key holds
// everything else). A value with an unknown format byte is refused, never
// guessed at.

// Kind is a kind of stored entity; each has its own keyspace.
type Kind uint8

// The kinds of stored entities, in the order a snapshot loads them.
const (
	KindPermission Kind = iota + 1
	KindResource
	KindRole
	KindGrant
	KindBlock
	KindQuota
	KindCreatorRole
	KindDefaultQuota
	KindAdmission
)

// Kinds lists every kind in load order.
var Kinds = []Kind{KindPermission, KindResource, KindRole, KindGrant, KindBlock, KindQuota, KindCreatorRole, KindDefaultQuota, KindAdmission}

var kindNames = map[Kind]string{
	KindPermission: "permissions", KindResource: "resources", KindRole: "roles", KindGrant: "grants",
	KindBlock: "blocks", KindQuota: "quotas", KindCreatorRole: "creator_roles", KindDefaultQuota: "default_quotas",
	KindAdmission: "admissions",
}

// String is the kind's keyspace name: a bbolt bucket, an etcd key prefix.
func (k Kind) String() string { return kindNames[k] }

// formatV1 starts every value written by this version of Usher.
const formatV1 byte = 1

// keySep joins the parts of composite keys. Names never contain it, and it
// sorts before every printable byte, so all keys that share a leading part
// (a subject's grants, a scope's roles) are adjacent in key order.
const keySep = "\x00"

// Entry is one stored entity as a backend writes it: its kind, its key and,
// for a put, its value (nil for a deletion).
type Entry struct {
	Kind  Kind
	Key   []byte
	Value []byte
}

// EntryOf returns what a change writes: its kind and key, and the encoded
// entity for a put.
func EntryOf(c authz.Change) (Entry, error) {
	if err := c.Check(); err != nil {
		return Entry{}, err
	}
	var (
		e   Entry
		msg proto.Message
		err error
	)
	switch c.Op {
	case authz.OpPutPermission, authz.OpDeletePermission:
		p := c.Permission
		e.Kind = KindPermission
		e.Key, err = compositeKey(p.Name)
		msg = &recordv1.Permission{Name: p.Name, Parents: p.Parents, Description: p.Description}
	case authz.OpPutResource, authz.OpDeleteResource:
		r := c.Resource
		e.Kind = KindResource
		e.Key, err = compositeKey(r.Name)
		var starts int64
		if err == nil && c.Op.Put() {
			starts, err = encodeExpiry(r.StartsAt)
		}
		msg = &recordv1.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator, StartsAt: starts, Live: r.Live}
	case authz.OpPutRole, authz.OpDeleteRole:
		r := c.Role
		e.Kind = KindRole
		e.Key, err = compositeKey(r.Scope, r.Name)
		msg = roleRecord(r)
	case authz.OpPutGrant, authz.OpDeleteGrant:
		g := c.Grant
		e.Kind = KindGrant
		e.Key, err = compositeKey(g.Subject, g.Resource, g.Role)
		if err == nil && c.Op.Put() {
			e.Value, err = encodeGrantValue(g.Expires)
		}
		return e, err
	case authz.OpPutBlock, authz.OpDeleteBlock:
		b := c.Block
		e.Kind = KindBlock
		e.Key, err = compositeKey(b.Subject, b.Resource, b.ID)
		var exp int64
		if err == nil && c.Op.Put() {
			exp, err = encodeExpiry(b.Expires)
		}
		msg = &recordv1.Block{Subject: b.Subject, Resource: b.Resource, Id: b.ID, Permissions: b.Permissions, Expires: exp, Reason: b.Reason}
	case authz.OpPutQuota, authz.OpDeleteQuota:
		q := c.Quota
		e.Kind = KindQuota
		e.Key, err = compositeKey(q.Scope, q.ResourceType, q.Subject)
		msg = &recordv1.Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject, Limit: q.Limit}
	case authz.OpPutCreatorRole, authz.OpDeleteCreatorRole:
		cr := c.CreatorRole
		e.Kind = KindCreatorRole
		e.Key, err = compositeKey(cr.ResourceType)
		msg = &recordv1.CreatorRole{ResourceType: cr.ResourceType, Role: cr.Role}
	case authz.OpPutDefaultQuota, authz.OpDeleteDefaultQuota:
		d := c.DefaultQuota
		e.Kind = KindDefaultQuota
		e.Key, err = compositeKey(d.ScopeType, d.ResourceType)
		msg = &recordv1.DefaultQuota{ScopeType: d.ScopeType, ResourceType: d.ResourceType, Limit: d.Limit}
	case authz.OpPutAdmission, authz.OpDeleteAdmission:
		a := c.Admission
		e.Kind = KindAdmission
		e.Key, err = compositeKey(scopeOf(a.Scope), a.ResourceType)
		msg = admissionRecord(a)
	}
	if err != nil || !c.Op.Put() {
		return e, err
	}
	e.Value, err = encodeRecord(msg)
	return e, err
}

func roleRecord(r *authz.Role) *recordv1.Role {
	return &recordv1.Role{Name: r.Name, Scope: r.Scope, Permissions: r.Permissions, AssignableRoles: r.AssignableRoles,
		BindableOn: r.BindableOn, MaxHolders: r.MaxHolders, Description: r.Description}
}

func encodeRecord(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte{formatV1}, b...), nil
}

// decodeRecord reads a value written by encodeRecord into m.
func decodeRecord(v []byte, m proto.Message) error {
	if len(v) == 0 || v[0] != formatV1 {
		return errFormat(v)
	}
	return proto.Unmarshal(v[1:], m)
}

func errFormat(v []byte) error {
	if len(v) == 0 {
		return fmt.Errorf("empty value")
	}
	return fmt.Errorf("value in record format %d, which this version of Usher does not read", v[0])
}

// Decode sends the entity stored under key and value to sink. The strings a
// grant carries alias key: sink must copy what it keeps, as authz.Sink
// says.
func Decode(kind Kind, key, value []byte, sink authz.Sink) error {
	if kind == KindGrant {
		g, err := decodeGrant(key, value)
		if err != nil {
			return err
		}
		return sink.Grant(g)
	}
	var err error
	switch kind {
	case KindPermission:
		var r recordv1.Permission
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Permission(authz.Permission{Name: r.Name, Parents: r.Parents, Description: r.Description})
		}
	case KindResource:
		var r recordv1.Resource
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Resource(fromResourceRecord(&r))
		}
	case KindRole:
		var r recordv1.Role
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Role(fromRoleRecord(&r))
		}
	case KindBlock:
		var r recordv1.Block
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Block(fromBlockRecord(&r))
		}
	case KindQuota:
		var r recordv1.Quota
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Quota(authz.Quota{Scope: r.Scope, ResourceType: r.ResourceType, Subject: r.Subject, Limit: r.Limit})
		}
	case KindCreatorRole:
		var r recordv1.CreatorRole
		if err = decodeRecord(value, &r); err == nil {
			err = sink.CreatorRole(authz.CreatorRole{ResourceType: r.ResourceType, Role: r.Role})
		}
	case KindDefaultQuota:
		var r recordv1.DefaultQuota
		if err = decodeRecord(value, &r); err == nil {
			err = sink.DefaultQuota(authz.DefaultQuota{ScopeType: r.ScopeType, ResourceType: r.ResourceType, Limit: r.Limit})
		}
	case KindAdmission:
		var r recordv1.Admission
		if err = decodeRecord(value, &r); err == nil {
			err = sink.Admission(fromAdmissionRecord(&r))
		}
	default:
		err = fmt.Errorf("unknown kind %d", kind)
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", kind, key, err)
	}
	return nil
}

func fromRoleRecord(r *recordv1.Role) authz.Role {
	return authz.Role{Name: r.Name, Scope: r.Scope, Permissions: r.Permissions, AssignableRoles: r.AssignableRoles,
		BindableOn: r.BindableOn, MaxHolders: r.MaxHolders, Description: r.Description}
}

func fromResourceRecord(r *recordv1.Resource) authz.Resource {
	return authz.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator, StartsAt: decodeExpiry(r.StartsAt), Live: r.Live}
}

// scopeOf keys a rule at root and one with an empty scope alike.
func scopeOf(scope string) string {
	if scope == "" {
		return authz.RootName
	}
	return scope
}

func admissionRecord(a *authz.Admission) *recordv1.Admission {
	r := &recordv1.Admission{Scope: scopeOf(a.Scope), ResourceType: a.ResourceType, Join: a.Join, Backstage: a.Backstage,
		RequireLive: a.RequireLive, JoinAhead: int64(a.JoinAhead), Stage: a.Stage, MaxParticipants: a.MaxParticipants,
		UncountedRoles: a.UncountedRoles, ExclusiveRoles: a.ExclusiveRoles, ExclusivePermissions: a.ExclusivePermissions,
		Lease: int64(a.Lease)}
	if l := a.Lobby; l != nil {
		r.Lobby = &recordv1.Lobby{Admit: l.Admit, Role: l.Role, Bypass: l.Bypass}
	}
	if m := a.Media; m != nil {
		r.Media = &recordv1.MediaMapping{RoomJoin: m.RoomJoin, CanPublish: m.CanPublish, CanPublishSources: m.CanPublishSources,
			CanSubscribe: m.CanSubscribe, CanPublishData: m.CanPublishData, RoomAdmin: m.RoomAdmin, RoomRecord: m.RoomRecord, Hidden: m.Hidden}
	}
	return r
}

func fromAdmissionRecord(r *recordv1.Admission) authz.Admission {
	a := authz.Admission{Scope: r.Scope, ResourceType: r.ResourceType, Join: r.Join, Backstage: r.Backstage,
		RequireLive: r.RequireLive, JoinAhead: time.Duration(r.JoinAhead), Stage: r.Stage, MaxParticipants: r.MaxParticipants,
		UncountedRoles: r.UncountedRoles, ExclusiveRoles: r.ExclusiveRoles, ExclusivePermissions: r.ExclusivePermissions,
		Lease: time.Duration(r.Lease)}
	if l := r.Lobby; l != nil {
		a.Lobby = &authz.Lobby{Admit: l.Admit, Role: l.Role, Bypass: l.Bypass}
	}
	if m := r.Media; m != nil {
		a.Media = &authz.MediaMapping{RoomJoin: m.RoomJoin, CanPublish: m.CanPublish, CanPublishSources: m.CanPublishSources,
			CanSubscribe: m.CanSubscribe, CanPublishData: m.CanPublishData, RoomAdmin: m.RoomAdmin, RoomRecord: m.RoomRecord, Hidden: m.Hidden}
	}
	return a
}

func fromBlockRecord(r *recordv1.Block) authz.Block {
	return authz.Block{Subject: r.Subject, Resource: r.Resource, ID: r.Id, Permissions: r.Permissions,
		Expires: decodeExpiry(r.Expires), Reason: r.Reason}
}

// EncodeChangeSet is the change log's value for cs.
func EncodeChangeSet(cs authz.ChangeSet) ([]byte, error) {
	m := &recordv1.ChangeSet{Revision: uint64(cs.Revision), Time: cs.Time.UnixNano(), Caller: cs.Caller, Actor: cs.Actor}
	for i, c := range cs.Changes {
		if err := c.Check(); err != nil {
			return nil, fmt.Errorf("change %d: %w", i, err)
		}
		rc := &recordv1.Change{Op: recordv1.Op(c.Op), PreviousParent: c.PreviousParent}
		switch c.Op {
		case authz.OpPutPermission, authz.OpDeletePermission:
			p := c.Permission
			rc.Entity = &recordv1.Change_Permission{Permission: &recordv1.Permission{Name: p.Name, Parents: p.Parents, Description: p.Description}}
		case authz.OpPutResource, authz.OpDeleteResource:
			r := c.Resource
			starts, err := encodeExpiry(r.StartsAt)
			if err != nil {
				return nil, fmt.Errorf("change %d: %w", i, err)
			}
			rc.Entity = &recordv1.Change_Resource{Resource: &recordv1.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator, StartsAt: starts, Live: r.Live}}
		case authz.OpPutRole, authz.OpDeleteRole:
			rc.Entity = &recordv1.Change_Role{Role: roleRecord(c.Role)}
		case authz.OpPutGrant, authz.OpDeleteGrant:
			g := c.Grant
			exp, err := encodeExpiry(g.Expires)
			if err != nil {
				return nil, fmt.Errorf("change %d: %w", i, err)
			}
			rc.Entity = &recordv1.Change_Grant{Grant: &recordv1.Grant{Subject: g.Subject, Role: g.Role, Resource: g.Resource, Expires: exp}}
		case authz.OpPutBlock, authz.OpDeleteBlock:
			b := c.Block
			exp, err := encodeExpiry(b.Expires)
			if err != nil {
				return nil, fmt.Errorf("change %d: %w", i, err)
			}
			rc.Entity = &recordv1.Change_Block{Block: &recordv1.Block{Subject: b.Subject, Resource: b.Resource, Id: b.ID,
				Permissions: b.Permissions, Expires: exp, Reason: b.Reason}}
		case authz.OpPutQuota, authz.OpDeleteQuota:
			q := c.Quota
			rc.Entity = &recordv1.Change_Quota{Quota: &recordv1.Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject, Limit: q.Limit}}
		case authz.OpPutCreatorRole, authz.OpDeleteCreatorRole:
			cr := c.CreatorRole
			rc.Entity = &recordv1.Change_CreatorRole{CreatorRole: &recordv1.CreatorRole{ResourceType: cr.ResourceType, Role: cr.Role}}
		case authz.OpPutDefaultQuota, authz.OpDeleteDefaultQuota:
			d := c.DefaultQuota
			rc.Entity = &recordv1.Change_DefaultQuota{DefaultQuota: &recordv1.DefaultQuota{ScopeType: d.ScopeType, ResourceType: d.ResourceType, Limit: d.Limit}}
		case authz.OpPutAdmission, authz.OpDeleteAdmission:
			rc.Entity = &recordv1.Change_Admission{Admission: admissionRecord(c.Admission)}
		}
		m.Changes = append(m.Changes, rc)
	}
	return encodeRecord(m)
}

// DecodeChangeSet reads a change log value.
func DecodeChangeSet(v []byte) (authz.ChangeSet, error) {
	var m recordv1.ChangeSet
	if err := decodeRecord(v, &m); err != nil {
		return authz.ChangeSet{}, err
	}
	cs := authz.ChangeSet{Revision: authz.Revision(m.Revision), Time: time.Unix(0, m.Time).UTC(), Caller: m.Caller, Actor: m.Actor}
	for i, rc := range m.Changes {
		c := authz.Change{Op: authz.Op(rc.Op), PreviousParent: rc.PreviousParent}
		switch e := rc.Entity.(type) {
		case *recordv1.Change_Permission:
			c.Permission = &authz.Permission{Name: e.Permission.Name, Parents: e.Permission.Parents, Description: e.Permission.Description}
		case *recordv1.Change_Resource:
			r := fromResourceRecord(e.Resource)
			c.Resource = &r
		case *recordv1.Change_Role:
			r := fromRoleRecord(e.Role)
			c.Role = &r
		case *recordv1.Change_Grant:
			c.Grant = &authz.Grant{Subject: e.Grant.Subject, Role: e.Grant.Role, Resource: e.Grant.Resource, Expires: decodeExpiry(e.Grant.Expires)}
		case *recordv1.Change_Block:
			b := fromBlockRecord(e.Block)
			c.Block = &b
		case *recordv1.Change_Quota:
			c.Quota = &authz.Quota{Scope: e.Quota.Scope, ResourceType: e.Quota.ResourceType, Subject: e.Quota.Subject, Limit: e.Quota.Limit}
		case *recordv1.Change_CreatorRole:
			c.CreatorRole = &authz.CreatorRole{ResourceType: e.CreatorRole.ResourceType, Role: e.CreatorRole.Role}
		case *recordv1.Change_DefaultQuota:
			c.DefaultQuota = &authz.DefaultQuota{ScopeType: e.DefaultQuota.ScopeType, ResourceType: e.DefaultQuota.ResourceType, Limit: e.DefaultQuota.Limit}
		case *recordv1.Change_Admission:
			a := fromAdmissionRecord(e.Admission)
			c.Admission = &a
		}
		if err := c.Check(); err != nil {
			return authz.ChangeSet{}, fmt.Errorf("change set %d, change %d: %w", m.Revision, i, err)
		}
		cs.Changes = append(cs.Changes, c)
	}
	return cs, nil
}

// The fields of a change log value that ChangeSetTime and ChangeSetLen
// read, numbered as the record's schema numbers them.
var (
	changeSetFields = (&recordv1.ChangeSet{}).ProtoReflect().Descriptor().Fields()
	changeSetTime   = changeSetFields.ByName("time").Number()
	changeSetChange = changeSetFields.ByName("changes").Number()
)

// ChangeSetTime reads only the commit time of a change log value, without
// decoding its changes: a policy's change set may hold a hundred thousand,
// which take many times their bytes once decoded, and a reader that wants
// to know when a revision was committed (a WatchCall resuming from it)
// should not pay for them.
func ChangeSetTime(v []byte) (time.Time, error) {
	var nanos int64
	err := eachChangeSetField(v, func(num protowire.Number, typ protowire.Type, value []byte) error {
		if num != changeSetTime || typ != protowire.VarintType {
			return nil
		}
		// The last one stands, as proto.Unmarshal reads it.
		x, n := protowire.ConsumeVarint(value)
		if n < 0 {
			return fmt.Errorf("change set time: %w", protowire.ParseError(n))
		}
		nanos = int64(x)
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, nanos).UTC(), nil
}

// ChangeSetLen counts the changes of a change log value without decoding
// them, for a reader that reads change sets only while they fit a budget.
func ChangeSetLen(v []byte) (int, error) {
	n := 0
	err := eachChangeSetField(v, func(num protowire.Number, _ protowire.Type, _ []byte) error {
		if num == changeSetChange {
			n++
		}
		return nil
	})
	return n, err
}

// DecodeChangeSetPart decodes a change log value with only n of its
// changes, from the from-th: the others are skipped undecoded, so that a
// part of a change set of a million changes costs its own changes' bytes
// to decode, not the million's. total is how many changes it holds.
func DecodeChangeSetPart(v []byte, from, n int) (part authz.ChangeSet, total int, err error) {
	b := []byte{formatV1}
	err = eachChangeSetField(v, func(num protowire.Number, typ protowire.Type, value []byte) error {
		if num == changeSetChange {
			i := total
			if total++; i < from || i-from >= n {
				return nil
			}
		}
		b = append(protowire.AppendTag(b, num, typ), value...)
		return nil
	})
	if err != nil {
		return authz.ChangeSet{}, 0, err
	}
	part, err = DecodeChangeSet(b)
	return part, total, err
}

// eachChangeSetField calls each with the number, wire type and undecoded
// value of every top-level field of a change log value, in order.
func eachChangeSetField(v []byte, each func(num protowire.Number, typ protowire.Type, value []byte) error) error {
	if len(v) == 0 || v[0] != formatV1 {
		return errFormat(v)
	}
	for b := v[1:]; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("change set: %w", protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("change set: %w", protowire.ParseError(m))
		}
		if err := each(num, typ, b[:m]); err != nil {
			return err
		}
		b = b[m:]
	}
	return nil
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

// DecodeGrant reads the grant stored under key and value, as Decode would
// hand it to a sink: its strings alias key.
func DecodeGrant(key, value []byte) (authz.Grant, error) { return decodeGrant(key, value) }

// decodeGrant rebuilds a grant from its key and value without copying: its
// strings alias key.
func decodeGrant(k, v []byte) (authz.Grant, error) {
	if bytes.Count(k, []byte(keySep)) != 2 {
		return authz.Grant{}, fmt.Errorf("grant key %q: want subject, resource and role", k)
	}
	if len(v) != 9 || v[0] != formatV1 {
		return authz.Grant{}, fmt.Errorf("grant key %q: %w", k, errGrantValue(v))
	}
	s := unsafe.String(unsafe.SliceData(k), len(k))
	i := strings.IndexByte(s, 0)
	j := i + 1 + strings.IndexByte(s[i+1:], 0)
	exp := decodeExpiry(int64(binary.BigEndian.Uint64(v[1:])))
	return authz.Grant{Subject: s[:i], Resource: s[i+1 : j], Role: s[j+1:], Expires: exp}, nil
}

func errGrantValue(v []byte) error {
	if len(v) > 0 && v[0] != formatV1 {
		return errFormat(v)
	}
	return fmt.Errorf("grant value has %d bytes, want 9", len(v))
}

func encodeGrantValue(t time.Time) ([]byte, error) {
	n, err := encodeExpiry(t)
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint64([]byte{formatV1}, uint64(n)), nil
}

// encodeExpiry maps "never" (the zero time) to 0 and refuses what cannot be
// told apart from it or does not fit: the Unix epoch and instants before it,
// and instants past 2262.
func encodeExpiry(t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, nil
	}
	if !t.After(time.Unix(0, 0)) || t.After(time.Unix(0, 1<<63-1)) {
		return 0, fmt.Errorf("expiry %s is outside the storable range: after the Unix epoch and before 2262", t.UTC())
	}
	return t.UnixNano(), nil
}

func decodeExpiry(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// EncodeRevision encodes a revision as a change log key. It is big-endian so that byte order is revision order, which
// the change log relies on to seek and scan.
func EncodeRevision(r authz.Revision) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(r))
}

// DecodeRevision reads EncodeRevision's bytes; nil is revision 0.
func DecodeRevision(b []byte) (authz.Revision, error) {
	if b == nil {
		return 0, nil
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("revision value has %d bytes, want 8", len(b))
	}
	return authz.Revision(binary.BigEndian.Uint64(b)), nil
}
