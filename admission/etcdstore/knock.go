package etcdstore

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
)

// Knock implements admission.Store. A new knock counts the call's knocks in
// etcd and commits only if none was added since; unlike Join's, its
// decision reads nothing that a renewal changes.
func (s *Store) Knock(ctx context.Context, k admission.Knock) (admission.Knock, error) {
	if err := s.check(); err != nil {
		return admission.Knock{}, err
	}
	unlock, err := s.lockCall(ctx, k.Call)
	if err != nil {
		return admission.Knock{}, err
	}
	defer unlock()
	key := s.knockKey(k.Call, k.Subject)
	from := s.knockRange(k.Call)
	end := clientv3.GetPrefixRangeEnd(from)
	var lease clientv3.LeaseID
	defer func() {
		if lease != 0 {
			s.revoke(lease)
		}
	}()
	// A share of the caller's, taken while the knock would add one to what
	// it holds, until the picture holds the knock.
	var share func()
	defer func() {
		if share != nil {
			share()
		}
	}()
	// Room in MaxSessions, taken likewise while the knock would add one.
	var room func()
	defer func() {
		if room != nil {
			room()
		}
	}()
	for attempt := range s.opts.RetryConflicts {
		if err := backoff(ctx, attempt); err != nil {
			return admission.Knock{}, err
		}
		read, err := s.cli.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(from, clientv3.WithRange(end), clientv3.WithCountOnly())).Commit()
		if err != nil {
			return admission.Knock{}, err
		}
		if kvs := read.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			old, err := s.decodeEntry(kvs[0])
			if err != nil {
				return admission.Knock{}, err
			}
			// Renewed by another caller, the knock is that caller's.
			if old.k.Caller != k.Caller && share == nil {
				if share, err = s.takeShare(k.Caller); err != nil {
					return admission.Knock{}, err
				}
			}
			done, err := s.reknock(ctx, old, k)
			if err != nil {
				return admission.Knock{}, err
			}
			if done {
				return old.k, nil
			}
			continue
		}
		if read.Responses[1].GetResponseRange().Count >= int64(s.opts.MaxKnocks) {
			return admission.Knock{}, &admission.LobbyFullError{Limit: s.opts.MaxKnocks}
		}
		if share == nil {
			if share, err = s.takeShare(k.Caller); err != nil {
				return admission.Knock{}, err
			}
		}
		if room == nil {
			if room, err = s.takeRoom(); err != nil {
				return admission.Knock{}, err
			}
		}
		value, err := encodeKnock(k, s.opts.Node)
		if err != nil {
			return admission.Knock{}, err
		}
		if len(value) > s.opts.MaxValueBytes {
			return admission.Knock{}, s.tooBig("knock", k.Call, k.Subject, len(value))
		}
		if lease == 0 {
			if lease, err = s.grant(ctx, k.Expires.Sub(k.Knocked)); err != nil {
				return admission.Knock{}, err
			}
		}
		resp, err := s.cli.Txn(ctx).If(
			// Only a knock made since changes the count: one renewed, with
			// a new note or under a new lease, does not.
			clientv3.Compare(clientv3.CreateRevision(from), "<", read.Header.Revision+1).WithRange(end),
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		).Then(
			clientv3.OpPut(key, string(value), clientv3.WithLease(lease)),
			clientv3.OpPut(s.idKey(k.ID), string(encodeID(true, k.Call, k.Subject, nil, time.Time{}, s.opts.Node)), clientv3.WithLease(lease)),
		).Commit()
		var committed int64
		switch {
		case err != nil:
			// An answer lost after the commit: the knock is in, under
			// lease, which must not be revoked from under it.
			var landed bool
			if committed, landed = s.landed(key, lease); !landed {
				return admission.Knock{}, err
			}
		case !resp.Succeeded:
			continue
		default:
			committed = resp.Header.Revision
		}
		lease = 0
		s.await(ctx, committed)
		return k, nil
	}
	return admission.Knock{}, s.contended(k.Call)
}

// reknock renews the subject's knock old as k asks, keeping its id, and
// puts its new expiry, and a new note or caller, where every replica sees
// them: the lobby's list gives when a knock lapses. It reports false when
// old changed meanwhile and must be read again.
func (s *Store) reknock(ctx context.Context, old *entry, k admission.Knock) (bool, error) {
	old.k.Expires, old.k.Caller = k.Expires, k.Caller
	if k.Note != "" {
		old.k.Note = k.Note
	}
	value, err := encodeKnock(old.k, s.opts.Node)
	if err != nil {
		return false, err
	}
	if len(value) > s.opts.MaxValueBytes {
		return false, s.tooBig("knock", old.k.Call, old.k.Subject, len(value))
	}
	lease := old.lease
	ka, err := s.cli.KeepAliveOnce(ctx, lease)
	if isLeaseGone(err) {
		return false, nil // it is ending
	}
	if err != nil {
		return false, err
	}
	if !s.fits(ka.TTL, s.clock.Now(), k.Expires) {
		if lease, err = s.grant(ctx, k.Expires.Sub(s.clock.Now())); err != nil {
			return false, err
		}
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(old.key), "=", old.mod)).Then(s.putOps(old, value, lease)...).Commit()
	if err != nil || !resp.Succeeded {
		if lease != old.lease {
			s.revoke(lease)
		}
		return false, err
	}
	if lease != old.lease {
		s.revoke(old.lease)
	}
	s.await(ctx, resp.Header.Revision)
	return true, nil
}

// Unknock implements admission.Store.
func (s *Store) Unknock(ctx context.Context, call, subject string, why admission.Why) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	key := s.knockKey(call, subject)
	s.mu.Lock()
	var e *entry
	if c := s.c.byKey[key]; c != nil {
		cp := *c
		e = &cp
	}
	s.mu.Unlock()
	if e == nil {
		// Not here yet, perhaps: ask etcd.
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return false, err
		}
		if len(resp.Kvs) == 0 {
			return false, nil
		}
		if e, err = s.decodeEntry(resp.Kvs[0]); err != nil {
			return false, err
		}
	}
	// The subject's knock, whichever: one the picture has yet to show, made
	// since the knock it holds ended, is taken out all the same.
	err := s.end(ctx, e, admission.Ending{Why: why}, "")
	if isNoSession(err) {
		return false, nil
	}
	return err == nil, err
}

// EndKnock implements admission.Store. The delete compares the knock's key
// with the record read, so a knock the subject made since, of another id,
// is left alone.
func (s *Store) EndKnock(ctx context.Context, id string, why admission.Why) (admission.Knock, error) {
	if err := s.check(); err != nil {
		return admission.Knock{}, err
	}
	e, err := s.locate(ctx, id, true)
	if err != nil {
		return admission.Knock{}, err
	}
	if err := s.end(ctx, e, admission.Ending{Why: why}, id); err != nil {
		return admission.Knock{}, err
	}
	return e.k, nil
}
