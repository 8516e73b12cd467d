package admission

import (
	"context"

	"github.com/usher-authz/usher/authz"
)

// DeniedUpTo is the revision up to which the view has ended the knocks of
// subjects who may no longer join (denyKnocks), apart from sift.
func (m *Manager) DeniedUpTo() authz.Revision { return authz.Revision(m.v.denied.Load()) }

// WriteWhileJoining makes the next Join call write once it has read the
// subject and before it writes the session, as a write commits while a
// store a round trip away takes the join. Joins must not run beside it.
func (m *Manager) WriteWhileJoining(write func()) {
	join := m.join
	m.join = func(ctx context.Context, s Session, max uint32) (Outcome, string, error) {
		m.join = join
		write()
		return join(ctx, s, max)
	}
}
