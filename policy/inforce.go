package policy

import (
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// ExportPage returns one page of the policy in force, as ExportPolicy
// does: the first page (token "") carries the catalog, creator roles and
// default quotas, and every page the resources of its part of the tree,
// parents first, with what is defined on them and, on the first, on root.
// next is empty on the last page.
type ExportPage func(token string) (page *usherv1.Policy, next string, err error)

// InForce reads the part of the policy in force that a policy file can
// change: the catalog, creator roles, default quotas, and the resources in
// want (with their roles, quotas and admission rules) and root's. It stops
// paging as soon as every resource in want has been seen, with all its
// quotas and roles (a page may end among a resource's, which go on at the
// start of the next), so that a diff of a policy that manages a few
// resources does not read a large tree.
func InForce(page ExportPage, want []string) (*usherv1.Policy, error) {
	missing, wanted := map[string]bool{}, map[string]bool{"": true, authz.RootName: true}
	for _, name := range want {
		wanted[name] = true
		if name != authz.RootName {
			missing[name] = true
		}
	}
	keep := func(scope string) bool { return wanted[scope] }
	out := &usherv1.Policy{}
	token := ""
	for {
		p, next, err := page(token)
		if err != nil {
			return nil, err
		}
		if token == "" {
			out.Permissions = p.GetPermissions()
			out.CreatorRoles = p.GetCreatorRoles()
			out.DefaultQuotas = p.GetDefaultQuotas()
		}
		for _, r := range p.GetResources() {
			if keep(r.GetName()) {
				out.Resources = append(out.Resources, r)
				delete(missing, r.GetName())
			}
		}
		for _, r := range p.GetRoles() {
			if keep(r.GetScope()) {
				out.Roles = append(out.Roles, r)
			}
		}
		for _, q := range p.GetQuotas() {
			if keep(q.GetScope()) {
				out.Quotas = append(out.Quotas, q)
			}
		}
		for _, a := range p.GetAdmissions() {
			if keep(a.GetScope()) {
				out.Admissions = append(out.Admissions, a)
			}
		}
		if next == "" {
			return out, nil
		}
		if len(missing) == 0 {
			// The page may have ended among the quotas or roles of its
			// last resource (root, on a first page of root's only).
			last := authz.RootName
			if rs := p.GetResources(); len(rs) > 0 {
				last = rs[len(rs)-1].GetName()
			} else if roles := p.GetRoles(); len(roles) > 0 {
				last = roles[len(roles)-1].GetScope()
			} else if as := p.GetAdmissions(); len(as) > 0 {
				last = as[len(as)-1].GetScope()
			} else if qs := p.GetQuotas(); len(qs) > 0 {
				last = qs[len(qs)-1].GetScope()
			}
			if !keep(last) {
				return out, nil
			}
			return goingOn(page, next, last, out)
		}
		token = next
	}
}

// goingOn adds to out the quotas, admission rules and roles of scope that
// the pages from token begin with: the rest of them, when the page before
// token ended among them.
func goingOn(page ExportPage, token, scope string, out *usherv1.Policy) (*usherv1.Policy, error) {
	for token != "" {
		p, next, err := page(token)
		if err != nil {
			return nil, err
		}
		// A page holds scope's first, if any; a resource, or another's
		// entries, end them.
		others := takeOf(p.GetQuotas(), scope, &out.Quotas)
		others = takeOf(p.GetAdmissions(), scope, &out.Admissions) || others
		others = takeOf(p.GetRoles(), scope, &out.Roles) || others
		if others || len(p.GetResources()) > 0 {
			return out, nil
		}
		token = next
	}
	return out, nil
}

// takeOf appends list's entries of scope to out, and reports whether list
// holds others.
func takeOf[E interface{ GetScope() string }](list []E, scope string, out *[]E) (others bool) {
	for _, e := range list {
		if e.GetScope() != scope {
			others = true
		} else {
			*out = append(*out, e)
		}
	}
	return others
}

// Managed lists the resources a policy manages: root and those it lists.
func Managed(p *usherv1.Policy) []string {
	out := []string{authz.RootName}
	for _, r := range p.GetResources() {
		out = append(out, r.GetName())
	}
	return out
}

// EnginePages pages through an engine's export, for InForce in the process
// that holds the engine.
func EnginePages(x *authz.Index) ExportPage {
	return func(token string) (*usherv1.Policy, string, error) {
		p, next, _, err := x.ExportPolicy(authz.MaxPageSize, token)
		if err != nil {
			return nil, "", err
		}
		return FromAuthz(p), next, nil
	}
}

// Touches lists the resources whose definitions applying p may change:
// root, the resources p lists, and the scopes of its roles, quotas and
// admission rules.
func Touches(p *usherv1.Policy) []string {
	out := Managed(p)
	seen := map[string]bool{}
	for _, r := range out {
		seen[r] = true
	}
	eachScope(p, func(scope string) {
		if scope != "" && !seen[scope] {
			seen[scope] = true
			out = append(out, scope)
		}
	})
	return out
}

// eachScope visits the scope of each of p's roles, quotas and admission
// rules.
func eachScope(p *usherv1.Policy, visit func(scope string)) {
	for _, r := range p.GetRoles() {
		visit(r.GetScope())
	}
	for _, q := range p.GetQuotas() {
		visit(q.GetScope())
	}
	for _, a := range p.GetAdmissions() {
		visit(a.GetScope())
	}
}
