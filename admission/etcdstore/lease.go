package etcdstore

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
)

// Renew implements admission.Store: a KeepAliveOnce of the session's lease
// when expires is later than the session's, and a lease of its own when
// that one does not fit expires (fits): a longer one when expires is
// further off than its TTL reaches, a shorter one when it would reach more
// than a second past it.
func (s *Store) Renew(ctx context.Context, id string, expires time.Time) (admission.Session, error) {
	e, err := s.renew(ctx, id, false, expires)
	if err != nil {
		return admission.Session{}, err
	}
	return e.s, nil
}

// RenewKnock implements admission.Store, as Renew does for sessions.
func (s *Store) RenewKnock(ctx context.Context, id string, expires time.Time) (admission.Knock, error) {
	e, err := s.renew(ctx, id, true, expires)
	if err != nil {
		return admission.Knock{}, err
	}
	return e.k, nil
}

func (s *Store) renew(ctx context.Context, id string, knock bool, expires time.Time) (*entry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	e, err := s.locate(ctx, id, knock)
	if err != nil {
		return nil, err
	}
	if !expires.After(e.expires()) {
		// A lease only moves forward, and this one reaches e's expiry
		// already: a KeepAliveOnce would restart it at the term it was
		// granted, past that expiry (a rule's lease since shortened), and
		// keep a session or knock its media server stopped renewing. Only
		// whether it is live is asked.
		if err := s.holds(ctx, e.key, id); err != nil {
			return nil, err
		}
		return e, nil
	}
	// The lease outlives the key a moment: a replica that ends the session
	// or knock deletes its key, then revokes its lease (or, losing etcd in
	// between, leaves it to run out). Only the key says it is live: it is
	// read beside the keepalive.
	held := make(chan error, 1)
	go func() { held <- s.holds(ctx, e.key, id) }()
	ka, err := s.cli.KeepAliveOnce(ctx, e.lease)
	for attempt := 0; isLeaseGone(err); attempt++ {
		// The picture may not have caught up with a renewal, through
		// another replica or this one, that put the session under a new
		// lease and revoked this one: only etcd says it is gone.
		fresh, ferr := s.fetch(ctx, id, knock)
		if ferr != nil {
			return nil, ferr
		}
		if fresh.lease == e.lease {
			return nil, admission.ErrNoSession
		}
		if attempt == s.opts.RetryConflicts {
			return nil, s.contended(e.call())
		}
		e = fresh
		ka, err = s.cli.KeepAliveOnce(ctx, e.lease)
	}
	if err != nil {
		return nil, err
	}
	if err := <-held; err != nil {
		return nil, err
	}
	if !expires.After(e.expires()) {
		return e, nil // renewed as far meanwhile
	}
	if !s.fits(ka.TTL, s.clock.Now(), expires) {
		return s.relet(ctx, e, expires)
	}
	if knock {
		return s.restamp(ctx, e, expires)
	}
	e.setExpires(expires)
	s.mu.Lock()
	if c := s.c.byID[id]; c != nil && c.lease == e.lease && expires.After(c.expires()) {
		c.setExpires(expires)
	}
	s.mu.Unlock()
	return e, nil
}

// holds reports whether key holds the session or knock of id:
// ErrNoSession when it holds another or none.
func (s *Store) holds(ctx context.Context, key, id string) error {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return admission.ErrNoSession
	}
	e, err := s.decodeEntry(resp.Kvs[0])
	if err != nil || e.id() != id {
		return admission.ErrNoSession
	}
	return nil
}

// restamp puts the knock e again, expiring at expires, under its lease,
// kept alive to reach that far: the lobby's list gives when a knock
// lapses, on every replica and on one that opens after, and reads it from
// the record. A knock renewed meanwhile as far is left as it is; one put
// under another lease since is put under a new one that reaches expires.
func (s *Store) restamp(ctx context.Context, e *entry, expires time.Time) (*entry, error) {
	lease := e.lease
	// As relet's, each attempt compares at once what the last one read.
	for range s.opts.RetryConflicts {
		if !expires.After(e.expires()) {
			return e, nil
		}
		if e.lease != lease {
			return s.relet(ctx, e, expires)
		}
		resp, err := s.reput(ctx, e, expires, lease)
		if isLeaseGone(err) {
			return nil, admission.ErrNoSession
		}
		if err != nil {
			return nil, err
		}
		if resp.Succeeded {
			e.mod = resp.Header.Revision
			s.await(ctx, resp.Header.Revision)
			return e, nil
		}
		// Renewed elsewhere, under this lease or a new one, or gone.
		if e, err = s.current(resp, e.id()); err != nil {
			return nil, err
		}
	}
	return nil, s.contended(e.call())
}

// relet puts e again, expiring at expires, under a new lease long enough.
func (s *Store) relet(ctx context.Context, e *entry, expires time.Time) (*entry, error) {
	lease, err := s.grant(ctx, expires.Sub(s.clock.Now()))
	if err != nil {
		return nil, err
	}
	defer func() {
		if lease != 0 {
			s.revoke(lease)
		}
	}()
	// A conflict's Else read the key as it is now, and the next attempt
	// compares that at once: waiting first would only give it time to
	// change again.
	for range s.opts.RetryConflicts {
		resp, err := s.reput(ctx, e, expires, lease)
		if err != nil {
			return nil, err
		}
		if resp.Succeeded {
			old := e.lease
			e.lease, e.mod, lease = lease, resp.Header.Revision, 0
			s.revoke(old)
			s.await(ctx, resp.Header.Revision)
			return e, nil
		}
		if e, err = s.current(resp, e.id()); err != nil {
			return nil, err
		}
	}
	return nil, s.contended(e.call())
}

// reput puts e again, expiring at expires, under lease, if its key is as
// e was read; otherwise the answer's Else reads the key as it is now.
func (s *Store) reput(ctx context.Context, e *entry, expires time.Time, lease clientv3.LeaseID) (*clientv3.TxnResponse, error) {
	e.setExpires(expires)
	value, err := s.encode(e)
	if err != nil {
		return nil, err
	}
	return s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.key), "=", e.mod)).
		Then(s.putOps(e, value, lease)...).
		Else(clientv3.OpGet(e.key)).Commit()
}

// putOps put e's record, value, under lease and, when that is another
// lease than e's, its id's key too, which goes with the lease it hangs on.
func (s *Store) putOps(e *entry, value []byte, lease clientv3.LeaseID) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpPut(e.key, string(value), clientv3.WithLease(lease))}
	if lease != e.lease {
		ops = append(ops, clientv3.OpPut(s.idKey(e.id()), string(encodeID(e.knock, e.call(), e.subject(), nil, time.Time{}, s.opts.Node)), clientv3.WithLease(lease)))
	}
	return ops
}

// End implements admission.Store.
func (s *Store) End(ctx context.Context, id string, why admission.Ending) (admission.Session, error) {
	if err := s.check(); err != nil {
		return admission.Session{}, err
	}
	e, err := s.locate(ctx, id, false)
	if err != nil {
		return admission.Session{}, err
	}
	if err := s.end(ctx, e, why, e.id()); err != nil {
		return admission.Session{}, err
	}
	return e.s, nil
}

// end deletes e's key and writes why beside it, then revokes its lease.
// When the key changed since e was read, it ends what the key holds now if
// that is of id; of any id when id is "".
func (s *Store) end(ctx context.Context, e *entry, why admission.Ending, id string) error {
	// As relet's, each attempt compares at once what the last one read.
	for range s.opts.RetryConflicts {
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.key), "=", e.mod)).
			Then(clientv3.OpDelete(e.key), s.endOp(e, why, s.clock.Now())).
			Else(clientv3.OpGet(e.key)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			s.revoke(e.lease)
			s.await(ctx, resp.Header.Revision)
			return nil
		}
		// Renewed under a new lease, replaced, or gone.
		if *e, err = deref(s.current(resp, id)); err != nil {
			return err
		}
	}
	return s.contended(e.call())
}

// locate finds the live session or knock of id: in the local picture, or,
// when the watch has not brought it yet (made a moment ago through another
// replica), in etcd.
func (s *Store) locate(ctx context.Context, id string, knock bool) (*entry, error) {
	s.mu.Lock()
	if e := s.c.byID[id]; e != nil {
		c := *e
		s.mu.Unlock()
		if c.knock != knock {
			return nil, admission.ErrNoSession
		}
		return &c, nil
	}
	s.mu.Unlock()
	return s.fetch(ctx, id, knock)
}

// fetch reads the live session or knock of id from etcd.
func (s *Store) fetch(ctx context.Context, id string, knock bool) (*entry, error) {
	resp, err := s.cli.Get(ctx, s.idKey(id))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, admission.ErrNoSession
	}
	r, err := decodeID(resp.Kvs[0].Value)
	if err != nil || r.Ended != nil || r.Knock != knock {
		return nil, admission.ErrNoSession
	}
	key := s.sessionKey(r.Call, r.Subject)
	if knock {
		key = s.knockKey(r.Call, r.Subject)
	}
	resp, err = s.cli.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, admission.ErrNoSession
	}
	e, err := s.decodeEntry(resp.Kvs[0])
	if err != nil || e.id() != id {
		return nil, admission.ErrNoSession
	}
	return e, nil
}

// current reads, from the Else branch of a transaction that compared a key,
// what the key holds now: the session or knock of id (of any id when id is
// ""), or ErrNoSession.
func (s *Store) current(resp *clientv3.TxnResponse, id string) (*entry, error) {
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, admission.ErrNoSession
	}
	e, err := s.decodeEntry(kvs[0])
	if err != nil || (id != "" && e.id() != id) {
		return nil, admission.ErrNoSession
	}
	return e, nil
}

func deref(e *entry, err error) (entry, error) {
	if err != nil {
		return entry{}, err
	}
	return *e, nil
}

func (s *Store) encode(e *entry) ([]byte, error) {
	if e.knock {
		return encodeKnock(e.k, s.opts.Node)
	}
	return encodeSession(e.s, e.marked, s.opts.Node)
}

func (e *entry) expires() time.Time {
	if e.knock {
		return e.k.Expires
	}
	return e.s.Expires
}

func (e *entry) setExpires(t time.Time) {
	if e.knock {
		e.k.Expires = t
	} else {
		e.s.Expires = t
	}
}

func isLeaseGone(err error) bool { return errors.Is(err, rpctypes.ErrLeaseNotFound) }
