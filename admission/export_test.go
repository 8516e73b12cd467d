package admission

import "github.com/usher-authz/usher/authz"

// DeniedUpTo is the revision up to which the view has ended the knocks of
// subjects who may no longer join (denyKnocks), apart from sift.
func (m *Manager) DeniedUpTo() authz.Revision { return authz.Revision(m.v.denied.Load()) }
