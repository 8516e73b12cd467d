package etcdstore

import (
	"github.com/usher-authz/usher/admission"
)

// maxBatch bounds the events handed to the consumer at once.
const maxBatch = 4096

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
// knew them, and nothing of them is left. What remains is at most a
// beginning for each live session and knock and an ending for each the
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
		r := refOf(e)
		if e.Ended == nil {
			began[r] = true
		} else if began[r] {
			gone[r] = true
		}
	}
	kept := s.pending[:0]
	for _, e := range s.pending {
		if !gone[refOf(e)] {
			kept = append(kept, e)
		}
	}
	dropped := len(s.pending) - len(kept)
	clear(s.pending[len(kept):])
	s.pending = kept
	// Collapse again only once the queue has doubled, so that a consumer
	// that stays behind costs linear time.
	s.collapse = max(s.opts.MaxPending, 2*len(kept))
	s.log.Warn("the consumer of session events fell behind; sessions and knocks that began and ended meanwhile are left out of its events",
		"dropped", dropped, "queued", len(kept))
}

// pump hands the queued events to the consumer, in batches, until Close.
func (s *Store) pump() {
	defer s.done.Done()
	defer close(s.events)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.signal:
		}
		for {
			s.mu.Lock()
			n := min(len(s.pending), maxBatch)
			batch := make([]admission.StoreEvent, n)
			copy(batch, s.pending)
			clear(s.pending[:n])
			s.pending = s.pending[n:]
			if len(s.pending) == 0 {
				s.pending = nil
				s.collapse = s.opts.MaxPending
			}
			s.mu.Unlock()
			if n == 0 {
				break
			}
			select {
			case s.events <- batch:
			case <-s.ctx.Done():
				return
			}
		}
	}
}
