package etcdstore

import (
	"context"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// Mark implements admission.Store: the session's record put again with its
// new marks, under the same lease, if nobody changed it since it was read.
// A record that already carries them is not written, so that replicas that
// each mark the same session after one grant write it once; nor is one
// marked at a later revision than at, by a replica ahead of this one.
func (s *Store) Mark(ctx context.Context, id string, counted bool, exclusive []string, at authz.Revision) (admission.Session, error) {
	if err := s.check(); err != nil {
		return admission.Session{}, err
	}
	e, err := s.locate(ctx, id, false)
	if err != nil {
		return admission.Session{}, err
	}
	// As relet's, each attempt compares at once what the last one read.
	for range s.opts.RetryConflicts {
		if e.s.Counted == counted && slices.Equal(e.s.Exclusive, exclusive) || at < max(e.marked, e.s.Revision) {
			return e.s, nil
		}
		e.s.Counted, e.s.Exclusive, e.marked = counted, slices.Clone(exclusive), at
		value, err := s.encode(e)
		if err != nil {
			return admission.Session{}, err
		}
		if len(value) > s.opts.MaxValueBytes {
			return admission.Session{}, s.tooBig("session", e.s.Call, e.s.Subject, len(value))
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.key), "=", e.mod)).
			Then(clientv3.OpPut(e.key, string(value), clientv3.WithLease(e.lease))).
			Else(clientv3.OpGet(e.key)).Commit()
		if isLeaseGone(err) {
			return admission.Session{}, admission.ErrNoSession
		}
		if err != nil {
			return admission.Session{}, err
		}
		if resp.Succeeded {
			s.await(ctx, resp.Header.Revision)
			return e.s, nil
		}
		// Renewed under a new lease, marked by another replica, or gone.
		if e, err = s.current(resp, id); err != nil {
			return admission.Session{}, err
		}
	}
	return admission.Session{}, s.contended(e.call())
}
