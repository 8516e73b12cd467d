package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage/memory"
)

// Validate returns every finding about a document: the schema errors Read
// found, what Check finds, and then, when there is no error, an apply of the
// policy to an empty in-memory engine, which judges what only applying
// shows (the depth of the tree, the quotas the policy's own resources use,
// the shape of admission rules). So a policy Validate passes applies to an
// empty server; resources the policy names but does not list are
// registered there first, under root, as they would be on the server the
// policy is meant for.
func Validate(d *Document) Diagnostics {
	diags := append(slices.Clone(d.read), Check(d)...)
	if diags.Errors() > 0 {
		return diags
	}
	if err := tryApply(d.Policy); err != nil {
		diags = append(diags, d.FromError(err))
	}
	return diags
}

func tryApply(p *usherv1.Policy) error {
	ctx := context.Background()
	engine, err := authz.Start(ctx, memory.New(), authz.Options{})
	if err != nil {
		return err
	}
	defer engine.Close()
	by := authz.Author{Caller: "usher policy validate"}
	for _, name := range unlistedScopes(p) {
		if _, err := engine.PutResource(ctx, by, authz.Resource{Name: name}); err != nil {
			return err
		}
	}
	_, _, err = engine.ApplyPolicy(ctx, by, ToAuthz(p), authz.ApplyOptions{})
	return err
}

// unlistedScopes are the resources p names as a scope or a parent without
// listing them.
func unlistedScopes(p *usherv1.Policy) []string {
	listed := map[string]bool{authz.RootName: true, "": true}
	for _, r := range p.GetResources() {
		listed[r.GetName()] = true
	}
	var out []string
	add := func(name string) {
		if !listed[name] {
			listed[name] = true
			out = append(out, name)
		}
	}
	for _, r := range p.GetResources() {
		add(r.GetParent())
	}
	eachScope(p, add)
	return out
}

// FromError places an error about the policy in the file: an *authz.Error
// from the engine or a server's validation, whose field is a path in the
// policy, goes to that field's line, written `"VALUE": reason`; any other
// error to the file as a whole.
func (d *Document) FromError(err error) Diagnostic {
	var e *authz.Error
	if !errors.As(err, &e) || e.Field == "" {
		return d.Diagnose("", false, "%v", err)
	}
	field := e.Field
	if e.Kind == authz.KindQuotaExceeded {
		field = d.QuotaField(field, e.Meta)
	}
	if e.Value == "" {
		return d.Diagnose(field, false, "%s", e.Reason)
	}
	return d.Diagnose(field, false, "%q: %s", e.Value, e.Reason)
}

// QuotaField is where in the file a refusal for a quota's limit (field,
// with meta naming the quota's scope, resource type and subject) belongs:
// the quota, when the file lists it, else a resource of that type (by the
// quota's subject, when it names one) that the file puts below the scope,
// or whose ancestors the file does not all list, or else the first of
// that type; field itself when the file has none.
func (d *Document) QuotaField(field string, meta map[string]string) string {
	scope, typ, subject := meta["scope"], meta["resource_type"], meta["subject"]
	for i, q := range d.Policy.GetQuotas() {
		if q.GetScope() == scope && q.GetResourceType() == typ && q.GetSubject() == subject {
			return fmt.Sprintf("policy.quotas[%d]", i)
		}
	}
	resources := d.Policy.GetResources()
	parents := map[string]string{}
	for _, r := range resources {
		parents[r.GetName()] = cmp.Or(r.GetParent(), "root")
	}
	// below is 2 when the file puts name below scope, 1 when it cannot
	// tell (an ancestor it does not list), 0 when it puts it elsewhere.
	below := func(name string) int {
		if scope == "root" {
			return 2
		}
		for range len(parents) + 1 {
			p, ok := parents[name]
			switch {
			case !ok:
				return 1
			case p == scope:
				return 2
			case p == "root":
				return 0
			}
			name = p
		}
		return 0
	}
	best, rank := -1, -1
	for i, r := range resources {
		if authz.TypeOf(r.GetName()) != typ {
			continue
		}
		n := 2 * below(r.GetName())
		if subject == "" || r.GetCreator() == subject {
			n++
		}
		if n > rank {
			best, rank = i, n
		}
	}
	if best < 0 {
		return field
	}
	return fmt.Sprintf("policy.resources[%d]", best)
}
