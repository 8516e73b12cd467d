package server

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// validator collects the first shape error of a request; the engine then
// judges meaning (is it declared, registered, visible).
type validator struct{ err error }

func (v *validator) add(err error) {
	if v.err != nil || err == nil {
		return
	}
	var e *authz.Error
	if errors.As(err, &e) && len(e.Value) > maxEchoedValue {
		c := *e
		c.Value = clip(e.Value)
		err = &c
	}
	v.err = err
}

func (v *validator) subject(field, value string)  { v.add(authz.ValidateSubject(field, value)) }
func (v *validator) resource(field, value string) { v.add(authz.ValidateResource(field, value)) }
func (v *validator) permission(field, value string) {
	v.add(authz.ValidatePermission(field, value))
}
func (v *validator) role(field, value string) { v.add(authz.ValidateRoleName(field, value)) }

// optionalResource allows empty, for a parent that defaults to root.
func (v *validator) optionalResource(field, value string) {
	if value != "" {
		v.resource(field, value)
	}
}

// actor checks the optional actor of a write.
func (v *validator) actor(value string) {
	if value != "" {
		v.subject("actor", value)
	}
}

// permissions checks each entry; "*" is allowed where wildcard is.
func (v *validator) permissions(field string, values []string, wildcard bool) {
	for i, p := range values {
		if v.err != nil {
			return
		}
		if wildcard && p == authz.Wildcard {
			continue
		}
		v.permission(fmt.Sprintf("%s[%d]", field, i), p)
	}
}

func (v *validator) roleDef(prefix string, r *authz.Role) {
	v.roleHead(prefix, r.Name, r.Scope, len(r.Permissions), len(r.AssignableRoles), len(r.BindableOn))
	v.text(prefix+"description", r.Description)
	if v.err != nil {
		return // the lists may be too long to walk
	}
	v.permissions(prefix+"permissions", r.Permissions, true)
	for i, a := range r.AssignableRoles {
		if a != authz.Wildcard {
			v.role(fmt.Sprintf("%sassignable_roles[%d]", prefix, i), a)
		}
	}
	for i, t := range r.BindableOn {
		v.add(authz.ValidateType(fmt.Sprintf("%sbindable_on[%d]", prefix, i), t))
	}
}

// roleHead checks what roleDef checks first, a role's name and scope and
// how long its lists are: what PutRole's screen can tell before the role
// is decoded.
func (v *validator) roleHead(prefix, name, scope string, permissions, assignable, bindableOn int) {
	v.role(prefix+"name", name)
	v.resource(prefix+"scope", scope)
	v.count(prefix+"permissions", permissions, MaxRolePermissions, "permissions in a role")
	v.count(prefix+"assignable_roles", assignable, MaxRoleAssignableRoles, "assignable roles in a role")
	v.count(prefix+"bindable_on", bindableOn, MaxRoleBindableOn, "resource types in a role's bindable_on")
}

// blockHead checks what Block checks first, a block's subject and
// resource and how many permissions it lists: what Block's screen can tell
// before the request is decoded.
func (v *validator) blockHead(subject, resource string, permissions int) {
	v.subject("subject", subject)
	v.resource("resource", resource)
	v.count("permissions", permissions, MaxBlockPermissions, "permissions in a block")
}

// policyLists refuses a policy whose lists, n by field number, hold more
// than policyLists allow.
func (v *validator) policyLists(n [8]int) {
	for _, l := range policyLists {
		v.count(l.field, n[l.num], l.limit, l.what)
	}
}

// policy checks p's shape; sent, when p was converted from it, for the
// times and durations as the client sent them.
func (v *validator) policy(p authz.Policy, sent *usherv1.Policy) {
	v.policyLists([8]int{1: len(p.Permissions), 2: len(p.Resources), 3: len(p.Roles), 4: len(p.CreatorRoles),
		5: len(p.Quotas), 6: len(p.DefaultQuotas), 7: len(p.Admissions)})
	if v.err != nil {
		return // the lists may be too long to walk
	}
	if sent != nil {
		v.policyTimes(sent)
	}
	for i, perm := range p.Permissions {
		prefix := fmt.Sprintf("policy.permissions[%d].", i)
		v.permission(prefix+"name", perm.Name)
		v.count(prefix+"parents", len(perm.Parents), MaxPermissionParents, "parents of a permission")
		v.text(prefix+"description", perm.Description)
		if v.err != nil {
			return
		}
		v.permissions(prefix+"parents", perm.Parents, false)
	}
	for i, r := range p.Resources {
		v.resource(fmt.Sprintf("policy.resources[%d].name", i), r.Name)
		v.optionalResource(fmt.Sprintf("policy.resources[%d].parent", i), r.Parent)
		if r.Creator != "" {
			v.subject(fmt.Sprintf("policy.resources[%d].creator", i), r.Creator)
		}
	}
	for i := range p.Roles {
		if v.roleDef(fmt.Sprintf("policy.roles[%d].", i), &p.Roles[i]); v.err != nil {
			return
		}
	}
	for i, c := range p.CreatorRoles {
		v.add(authz.ValidateType(fmt.Sprintf("policy.creator_roles[%d].resource_type", i), c.ResourceType))
		v.role(fmt.Sprintf("policy.creator_roles[%d].role", i), c.Role)
	}
	for i, q := range p.Quotas {
		v.quota(fmt.Sprintf("policy.quotas[%d].", i), q)
	}
	for i, d := range p.DefaultQuotas {
		v.add(authz.ValidateType(fmt.Sprintf("policy.default_quotas[%d].scope_type", i), d.ScopeType))
		v.add(authz.ValidateType(fmt.Sprintf("policy.default_quotas[%d].resource_type", i), d.ResourceType))
	}
	for i, a := range p.Admissions {
		v.add(authz.ValidateAdmission(fmt.Sprintf("policy.admissions[%d]", i), a))
	}
}

func (v *validator) quota(prefix string, q authz.Quota) {
	v.resource(prefix+"scope", q.Scope)
	v.add(authz.ValidateType(prefix+"resource_type", q.ResourceType))
	if q.Subject != "" {
		v.subject(prefix+"subject", q.Subject)
	}
}

// maxBlockIDLen is the longest block id a request may name.
const maxBlockIDLen = 64

// blockID checks the form of an optional block id: letters, digits, '.',
// '_' and '-', at most maxBlockIDLen of them.
func (v *validator) blockID(field, value string) {
	if len(value) > maxBlockIDLen {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value,
			Reason: fmt.Sprintf("is %d bytes long; at most %d are allowed", len(value), maxBlockIDLen)})
		return
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value, Reason: "a block id is made of letters, digits, '.', '_' and '-'"})
			return
		}
	}
}

// timestamp converts an optional expiry: unset is never; a set one must be
// a valid Timestamp (nanos within a second) after the Unix epoch, for the
// zero instant of year 1 would otherwise read as never.
func (v *validator) timestamp(field string, ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	value := fmt.Sprintf("%ds %dns", ts.GetSeconds(), ts.GetNanos())
	if err := ts.CheckValid(); err != nil {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value, Reason: "not a valid timestamp: " + err.Error()})
		return time.Time{}
	}
	t := ts.AsTime()
	if !t.After(time.Unix(0, 0)) {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: t.Format(time.RFC3339Nano),
			Reason: "a time must be after the Unix epoch; leave it unset for none"})
		return time.Time{}
	}
	return t
}

// duration refuses a Duration that is none (its seconds and nanos out of
// range or of opposite signs), or longer either way than a time.Duration
// holds, which converted would read as some 292 years: quoting it as sent.
func (v *validator) duration(field string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	value := fmt.Sprintf("%ds %dns", d.GetSeconds(), d.GetNanos())
	if err := d.CheckValid(); err != nil {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value, Reason: "not a valid duration: " + err.Error()})
		return
	}
	const maxS, maxN = math.MaxInt64 / int64(time.Second), math.MaxInt64 % int64(time.Second)
	const minS, minN = math.MinInt64 / int64(time.Second), math.MinInt64 % int64(time.Second)
	if s, n := d.GetSeconds(), int64(d.GetNanos()); s > maxS || s == maxS && n > maxN || s < minS || s == minS && n < minN {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value,
			Reason: fmt.Sprintf("a duration is at most %s either way", time.Duration(math.MaxInt64).Truncate(time.Second))})
	}
}

// admissionTimes refuses an admission rule's durations that are none, as
// sent: converted, they are no longer what the client sent.
func (v *validator) admissionTimes(prefix string, a *usherv1.Admission) {
	v.duration(prefix+"join_ahead", a.GetJoinAhead())
	v.duration(prefix+"lease", a.GetLease())
}

// policyTimes refuses a policy's times and durations that are none, as
// sent: a resource's start time, its admission rules' durations.
func (v *validator) policyTimes(p *usherv1.Policy) {
	for i, r := range p.GetResources() {
		v.timestamp(fmt.Sprintf("policy.resources[%d].start_time", i), r.GetStartTime())
	}
	for i, a := range p.GetAdmissions() {
		v.admissionTimes(fmt.Sprintf("policy.admissions[%d].", i), a)
	}
}
