package etcdstore

import (
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// entry is a live session or knock as the local picture holds it, with what
// a write about it compares and attaches to.
type entry struct {
	key   string
	mod   int64 // the key's ModRevision
	lease clientv3.LeaseID
	node  string // the replica that wrote it
	knock bool
	s     admission.Session // when !knock
	k     admission.Knock   // when knock
	// marked is the revision a session's Counted and Exclusive were last
	// marked at (Mark); 0 while they are its join's, at s.Revision.
	marked authz.Revision
}

func (e *entry) id() string {
	if e.knock {
		return e.k.ID
	}
	return e.s.ID
}

func (e *entry) call() string {
	if e.knock {
		return e.k.Call
	}
	return e.s.Call
}

// caller is the caller whose share e counts against; "" for none.
func (e *entry) caller() string {
	if e.knock {
		return e.k.Caller
	}
	return e.s.Caller
}

func (e *entry) subject() string {
	if e.knock {
		return e.k.Subject
	}
	return e.s.Subject
}

// cache is the local picture of every live session and knock.
type cache struct {
	byKey map[string]*entry
	byID  map[string]*entry
	calls map[string]*callEntries
	// held counts the sessions and knocks of each caller; a record without
	// a caller counts for nobody.
	held map[string]int
}

type callEntries struct {
	sessions map[string]*entry // by subject
	knocks   map[string]*entry // by subject
}

func newCache() cache {
	return cache{byKey: map[string]*entry{}, byID: map[string]*entry{}, calls: map[string]*callEntries{}, held: map[string]int{}}
}

func (c *cache) put(e *entry) {
	c.byKey[e.key] = e
	c.byID[e.id()] = e
	c.hold(e.caller(), 1)
	ce := c.calls[e.call()]
	if ce == nil {
		ce = &callEntries{sessions: map[string]*entry{}, knocks: map[string]*entry{}}
		c.calls[e.call()] = ce
	}
	if e.knock {
		ce.knocks[e.subject()] = e
	} else {
		ce.sessions[e.subject()] = e
	}
}

func (c *cache) remove(e *entry) {
	if c.byKey[e.key] == e {
		delete(c.byKey, e.key)
	}
	if c.byID[e.id()] == e {
		delete(c.byID, e.id())
		c.hold(e.caller(), -1)
	}
	ce := c.calls[e.call()]
	if ce == nil {
		return
	}
	if e.knock && ce.knocks[e.subject()] == e {
		delete(ce.knocks, e.subject())
	}
	if !e.knock && ce.sessions[e.subject()] == e {
		delete(ce.sessions, e.subject())
	}
	if len(ce.sessions) == 0 && len(ce.knocks) == 0 {
		delete(c.calls, e.call())
	}
}

// hold counts n more sessions or knocks of caller.
func (c *cache) hold(caller string, n int) {
	if caller == "" {
		return
	}
	if c.held[caller] += n; c.held[caller] <= 0 {
		delete(c.held, caller)
	}
}

// update brings a newer record of e, a session or knock in the picture,
// into it: a knock renewed by another caller is that caller's now.
func (c *cache) update(e, n *entry) {
	c.hold(e.caller(), -1)
	e.update(n)
	c.hold(e.caller(), 1)
}

// update brings a newer record of the same session or knock into e.
func (e *entry) update(n *entry) {
	lease := e.lease
	e.mod, e.lease, e.node, e.marked = n.mod, n.lease, n.node, n.marked
	if e.knock {
		e.k = n.k
		return
	}
	// A renewal on this replica may have moved Expires past the record's,
	// as far as the lease reaches. Under a new lease (another replica
	// renewed it for a shorter term) the record's is as far as it reaches.
	expires := e.s.Expires
	e.s = n.s
	if lease == n.lease && expires.After(e.s.Expires) {
		e.s.Expires = expires
	}
}

// kind tells what a key under the prefix holds: 's', 'k', 'i', or 0.
func (s *Store) kind(key string) byte {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok || len(rest) < 2 || rest[1] != '/' {
		return 0
	}
	switch rest[0] {
	case 's', 'k', 'i':
		return rest[0]
	}
	return 0
}

// decodeEntry reads a session's or a knock's key and value.
func (s *Store) decodeEntry(kv *mvccpb.KeyValue) (*entry, error) {
	e := &entry{key: string(kv.Key), mod: kv.ModRevision, lease: clientv3.LeaseID(kv.Lease)}
	var err error
	switch s.kind(e.key) {
	case 's':
		e.s, e.marked, e.node, err = decodeSession(kv.Value)
		if err == nil && e.key != s.sessionKey(e.s.Call, e.s.Subject) {
			err = fmt.Errorf("the record is of %s in %s", e.s.Subject, e.s.Call)
		}
	case 'k':
		e.knock = true
		e.k, e.node, err = decodeKnock(kv.Value)
		if err == nil && e.key != s.knockKey(e.k.Call, e.k.Subject) {
			err = fmt.Errorf("the record is of %s in %s", e.k.Subject, e.k.Call)
		}
	default:
		err = fmt.Errorf("not a session or knock key")
	}
	if err != nil {
		return nil, fmt.Errorf("etcdstore: key %q: %w", e.key, err)
	}
	return e, nil
}

// ended is the Ending an i/ key carried when its session or knock ended, and
// when.
type ended struct {
	why admission.Ending
	at  time.Time
}

// endingOf reads the reason an i/ key's value carries, if any.
func (s *Store) endingOf(kv *mvccpb.KeyValue) (string, ended, bool) {
	r, err := decodeID(kv.Value)
	if err != nil || r.Ended == nil {
		return "", ended{}, false
	}
	why, at := r.ending()
	return strings.TrimPrefix(string(kv.Key), s.prefix+"i/"), ended{*why, at}, true
}

// applyEvents brings the events of a watch response into the picture and
// queues what they mean. s.mu is held.
func (s *Store) applyEvents(evs []*clientv3.Event) {
	for i := 0; i < len(evs); {
		j := i + 1
		for j < len(evs) && evs[j].Kv.ModRevision == evs[i].Kv.ModRevision {
			j++
		}
		s.applyRevision(evs[i:j])
		i = j
	}
}

// applyRevision applies the events of one etcd revision: one transaction or
// one lease's expiry. Endings are queued before beginnings, as a Join ends
// the subject's old session and knock before its new session begins.
func (s *Store) applyRevision(evs []*clientv3.Event) {
	reasons := map[string]ended{}
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypePut && s.kind(string(ev.Kv.Key)) == 'i' {
			if id, e, ok := s.endingOf(ev.Kv); ok {
				reasons[id] = e
			}
		}
	}
	var ends, begins []admission.StoreEvent
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if k := s.kind(key); k != 's' && k != 'k' {
			continue
		}
		old := s.c.byKey[key]
		if ev.Type == clientv3.EventTypeDelete {
			if old != nil {
				s.c.remove(old)
				ends = append(ends, s.endedEvent(old, reasons, admission.Lapsed))
			}
			continue
		}
		e, err := s.decodeEntry(ev.Kv)
		if err != nil {
			s.log.Warn("a session record could not be read; it is left out", "error", err)
			if old != nil {
				s.c.remove(old)
				ends = append(ends, s.endedEvent(old, reasons, admission.Replaced))
			}
			continue
		}
		if old != nil && old.id() == e.id() {
			begins = s.renewed(old, e, begins)
			continue
		}
		if old != nil {
			s.c.remove(old)
			ends = append(ends, s.endedEvent(old, reasons, admission.Replaced))
		}
		s.c.put(e)
		begins = append(begins, s.beganEvent(e))
	}
	s.emit(ends...)
	s.emit(begins...)
}

// reconcile makes the picture what a listing of the prefix found, queuing
// the difference: for a store that opens, or a watch that could not resume.
// s.mu is held.
func (s *Store) reconcile(listed map[string]*entry, reasons map[string]ended) {
	var ends, begins []admission.StoreEvent
	for key, old := range s.c.byKey {
		n := listed[key]
		switch {
		case n != nil && n.id() == old.id():
			begins = s.renewed(old, n, begins)
		case n != nil:
			s.c.remove(old)
			ends = append(ends, s.endedEvent(old, reasons, admission.Replaced))
		default:
			s.c.remove(old)
			ends = append(ends, s.endedEvent(old, reasons, admission.Lapsed))
		}
	}
	for key, n := range listed {
		if s.c.byKey[key] == nil {
			s.c.put(n)
			begins = append(begins, s.beganEvent(n))
		}
	}
	s.emit(ends...)
	s.emit(begins...)
}

// renewed brings n, a newer record of old's session or knock, into the
// picture, and adds to begins a knock renewed with another note: watchers
// were told the note it knocked with, and hear the new one, as the lobby's
// list shows it. s.mu is held.
func (s *Store) renewed(old, n *entry, begins []admission.StoreEvent) []admission.StoreEvent {
	renoted := n.knock && n.k.Note != old.k.Note
	s.c.update(old, n)
	if !renoted {
		return begins
	}
	k := n.k
	if s.renotes == nil {
		s.renotes = map[*admission.Knock]bool{}
	}
	s.renotes[&k] = true
	return append(begins, admission.StoreEvent{Knock: &k, Time: s.clock.Now()})
}

func (s *Store) beganEvent(e *entry) admission.StoreEvent {
	if e.knock {
		k := e.k
		return admission.StoreEvent{Knock: &k, Time: orNow(k.Knocked, s)}
	}
	ss := e.s
	return admission.StoreEvent{Session: &ss, Time: orNow(ss.Joined, s)}
}

// endedEvent reports e's end: for the reason written beside it, else def.
func (s *Store) endedEvent(e *entry, reasons map[string]ended, def admission.Why) admission.StoreEvent {
	r, ok := reasons[e.id()]
	if !ok {
		r = ended{why: admission.Ending{Why: def}, at: s.clock.Now()}
	}
	why := r.why
	ev := admission.StoreEvent{Ended: &why, Time: orNow(r.at, s)}
	if e.knock {
		k := e.k
		ev.Knock = &k
	} else {
		ss := e.s
		ev.Session = &ss
	}
	return ev
}

func orNow(t time.Time, s *Store) time.Time {
	if t.IsZero() {
		return s.clock.Now()
	}
	return t
}
