package etcdstore

import (
	"context"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
)

// Join implements admission.Store: admission.Room decides on the call's other sessions
// as etcd holds them at one revision, and the session is committed only if
// none was added or changed since; see the package doc.
func (s *Store) Join(ctx context.Context, sess admission.Session, max uint32) (admission.Outcome, string, error) {
	if err := s.check(); err != nil {
		return 0, "", err
	}
	value, err := encodeSession(sess, 0, s.opts.Node)
	if err != nil {
		return 0, "", err
	}
	if len(value) > s.opts.MaxValueBytes {
		return 0, "", s.tooBig("session", sess.Call, sess.Subject, len(value))
	}
	unlock, err := s.lockCall(ctx, sess.Call)
	if err != nil {
		return 0, "", err
	}
	defer unlock()

	key, knockKey := s.sessionKey(sess.Call, sess.Subject), s.knockKey(sess.Call, sess.Subject)
	from := s.sessionRange(sess.Call)
	end := clientv3.GetPrefixRangeEnd(from)
	// A join that Room admits whoever else is in the call, whatever the
	// subject held before, reads only the subject's own session: a crowd
	// costs it nothing.
	get := clientv3.OpGet(from, clientv3.WithRange(end))
	if admission.Alone(nil, sess, max) {
		get = clientv3.OpGet(key)
	}
	var lease clientv3.LeaseID
	defer func() {
		if lease != 0 {
			s.revoke(lease)
		}
	}()
	// A share of the caller's, taken while the session would add one to
	// what it holds, until the picture holds the session.
	var share func()
	defer func() {
		if share != nil {
			share()
		}
	}()
	// Room in MaxSessions, taken likewise while the session would add one.
	var room func()
	defer func() {
		if room != nil {
			room()
		}
	}()
	for attempt := range s.opts.RetryConflicts {
		if err := backoff(ctx, attempt); err != nil {
			return 0, "", err
		}
		read, err := s.cli.Txn(ctx).Then(get, clientv3.OpGet(knockKey)).Commit()
		if err != nil {
			return 0, "", err
		}
		at := read.Header.Revision
		var others []admission.Session
		var old, knock *entry
		var oldMod, knockMod int64 // compared even when a record cannot be read
		for _, kv := range read.Responses[0].GetResponseRange().Kvs {
			if string(kv.Key) == key {
				oldMod = kv.ModRevision
			}
			e, err := s.decodeEntry(kv)
			if err != nil {
				s.log.Warn("a session record could not be read; the join does not count it", "error", err)
				continue
			}
			if e.s.Subject == sess.Subject {
				old = e
				continue
			}
			others = append(others, e.s)
		}
		if kvs := read.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			knockMod = kvs[0].ModRevision
			if knock, err = s.decodeEntry(kvs[0]); err != nil {
				s.log.Warn("a knock record could not be read; the join deletes it", "error", err)
			}
		}
		var oldSession *admission.Session
		if old != nil {
			oldSession = &old.s
		}
		out, detail := admission.Room(others, oldSession, sess, max)
		if out != admission.Admitted {
			return out, detail, nil
		}
		// One that replaces the caller's own session or knock of the
		// subject, as etcd holds them, adds none to its share; one that
		// replaces another caller's adds one.
		switch {
		case (old != nil && old.s.Caller == sess.Caller) || (knock != nil && knock.k.Caller == sess.Caller):
			if share != nil {
				share()
				share = nil
			}
		case share == nil:
			if share, err = s.takeShare(sess.Caller); err != nil {
				return 0, "", err
			}
		}
		// A session that replaces the subject's own, or its knock, adds none.
		switch {
		case oldMod != 0 || knockMod != 0:
			if room != nil {
				room()
				room = nil
			}
		case room == nil:
			if room, err = s.takeRoom(); err != nil {
				return 0, "", err
			}
		}
		if lease == 0 {
			if lease, err = s.grant(ctx, sess.Expires.Sub(sess.Joined)); err != nil {
				return 0, "", err
			}
		}
		now := s.clock.Now()
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(key), "=", oldMod),
			clientv3.Compare(clientv3.ModRevision(knockKey), "=", knockMod),
		}
		if !admission.Alone(oldSession, sess, max) {
			// The decision read the others: none may have come or changed.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(from), "<", at+1).WithRange(end))
		}
		ops := []clientv3.Op{
			clientv3.OpPut(key, string(value), clientv3.WithLease(lease)),
			clientv3.OpPut(s.idKey(sess.ID), string(encodeID(false, sess.Call, sess.Subject, nil, now, s.opts.Node)), clientv3.WithLease(lease)),
		}
		if old != nil {
			ops = append(ops, s.endOp(old, admission.Ending{Why: admission.Replaced}, now))
		}
		if knockMod != 0 {
			ops = append(ops, clientv3.OpDelete(knockKey))
		}
		if knock != nil {
			ops = append(ops, s.endOp(knock, admission.Ending{Why: admission.Entered}, now))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		var committed int64
		switch {
		case err != nil:
			// The answer may be lost after the commit, which replaced the
			// subject's session or knock: revoking the new lease would then
			// leave the subject with neither. Ask etcd which it was.
			var landed bool
			if committed, landed = s.landed(key, lease); !landed {
				return 0, "", err
			}
		case !resp.Succeeded:
			continue
		default:
			committed = resp.Header.Revision
		}
		lease = 0 // the session's now
		for _, e := range []*entry{old, knock} {
			if e != nil {
				s.revoke(e.lease)
			}
		}
		s.await(ctx, committed)
		return admission.Admitted, detail, nil
	}
	return 0, "", s.contended(sess.Call)
}

// endOp writes why beside e's i/ key, under e's lease, for the watchers of
// the transaction that deletes or overwrites e's key.
func (s *Store) endOp(e *entry, why admission.Ending, at time.Time) clientv3.Op {
	return clientv3.OpPut(s.idKey(e.id()), string(encodeID(e.knock, e.call(), e.subject(), &why, at, s.opts.Node)),
		clientv3.WithLease(e.lease))
}

// backoff waits a little before attempt reads anew, more the more attempts
// failed, so that replicas contending for one call do not keep colliding. A
// write that compares what a conflict's Else read does not wait: that read
// is as new as it gets.
func backoff(ctx context.Context, attempt int) error {
	if attempt == 0 {
		return ctx.Err()
	}
	d := rand.N(time.Duration(min(attempt, 25)) * 2 * time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
