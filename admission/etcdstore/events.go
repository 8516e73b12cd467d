package etcdstore

import (
	"github.com/usher-authz/usher/admission"
)

// emit queues events for the consumer. s.mu is held, so the queue keeps
// etcd's order.
func (s *Store) emit(evs ...admission.StoreEvent) {
	if len(evs) == 0 {
		return
	}
	s.pending = append(s.pending, evs...)
	if len(s.pending) > s.collapse {
		s.collapsePending()
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// collapsePending drops, from a queue the consumer has fallen behind on, the
// sessions and knocks that began and ended while queued: the consumer never
// knew them, and nothing of them is left. A knock's new note (renotes) is
// no beginning: the consumer knew a knock renoted before its beginning was
// queued, and hears its ending. What remains is at most a beginning for
// each live session and knock, its new notes, and an ending for each the
// consumer knew. s.mu is held.
func (s *Store) collapsePending() {
	type ref struct {
		knock bool
		id    string
	}
	refOf := func(e admission.StoreEvent) ref {
		if e.Knock != nil {
			return ref{true, e.Knock.ID}
		}
		return ref{false, e.Session.ID}
	}
	began := map[ref]bool{}
	gone := map[ref]bool{}
	for _, e := range s.pending {
		if e.Lost {
			continue // kept: it is of no session or knock
		}
		r := refOf(e)
		switch {
		case e.Ended == nil && e.Knock != nil && s.renotes[e.Knock] && !began[r]:
			// A new note of a knock the consumer knew: its ending is
			// the consumer's to hear.
		case e.Ended == nil:
			began[r] = true
		case began[r]:
			gone[r] = true
		}
	}
	kept := s.pending[:0]
	renotes := map[*admission.Knock]bool{}
	for _, e := range s.pending {
		if e.Lost || !gone[refOf(e)] {
			kept = append(kept, e)
			if e.Knock != nil && s.renotes[e.Knock] {
				renotes[e.Knock] = true
			}
		}
	}
	s.renotes = renotes
	dropped := len(s.pending) - len(kept)
	clear(s.pending[len(kept):])
	s.pending = kept
	// Collapse again only once the queue has doubled, so that a consumer
	// that stays behind costs linear time.
	s.collapse = max(s.opts.MaxPending, 2*len(kept))
	s.log.Warn("the consumer of session events fell behind; sessions and knocks that began and ended meanwhile are left out of its events",
		"dropped", dropped, "queued", len(kept))
}

// Take implements admission.Store.
func (s *Store) Take() []admission.StoreEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.pending
	s.pending, s.renotes = nil, nil
	s.collapse = s.opts.MaxPending
	return batch
}

// Pending implements admission.Store.
func (s *Store) Pending() <-chan struct{} { return s.signal }
