package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
)

// listPage is how many keys one read of a listing returns.
const listPage = 1000

// errCompacted says the watch could not resume: etcd compacted its history
// past the revision the picture reflects.
var errCompacted = errors.New("etcd compacted the history the watch would resume from")

// load lists the prefix at one revision and makes the picture that.
func (s *Store) load(ctx context.Context) error {
	listed := map[string]*entry{}
	reasons := map[string]ended{}
	from, end := s.prefix, clientv3.GetPrefixRangeEnd(s.prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return fmt.Errorf("etcdstore: listing %s: %w", s.prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			switch s.kind(string(kv.Key)) {
			case 's', 'k':
				e, err := s.decodeEntry(kv)
				if err != nil {
					s.log.Warn("a session record could not be read; it is left out", "error", err)
					continue
				}
				listed[e.key] = e
			case 'i':
				if id, e, ok := s.endingOf(kv); ok {
					reasons[id] = e
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconcile(listed, reasons)
	s.applied = rev
	close(s.advanced)
	s.advanced = make(chan struct{})
	return nil
}

// follow keeps the picture current until Close: it watches the prefix from
// the revision after the picture's, and lists it again when etcd compacted
// that revision away.
func (s *Store) follow() {
	defer s.done.Done()
	const first, most = 50 * time.Millisecond, 2 * time.Second
	wait := first
	relist := false
	for {
		var err error
		if relist {
			if err = s.load(s.ctx); err == nil {
				// What began and ended meanwhile is not in the listing.
				s.mu.Lock()
				s.emit(admission.StoreEvent{Lost: true, Time: s.clock.Now()})
				s.mu.Unlock()
			}
			relist = err != nil
		}
		if err == nil {
			var delivered bool
			delivered, err = s.watch()
			if delivered {
				wait = first
			}
			relist = errors.Is(err, errCompacted)
		}
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("the session watch stopped; following again", "error", err, "relist", relist)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, most)
	}
}

// watch applies what etcd's watch delivers until it fails; delivered says
// whether it delivered anything.
func (s *Store) watch() (delivered bool, err error) {
	// Without a leader a member's watch goes quiet; WithRequireLeader ends
	// it instead, and the next one finds a member that has one.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	s.mu.Lock()
	from := s.applied + 1
	s.mu.Unlock()
	for resp := range s.cli.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify()) {
		if resp.CompactRevision != 0 {
			return delivered, errCompacted
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return delivered, errCompacted
			}
			return delivered, err
		}
		s.mu.Lock()
		switch {
		case resp.IsProgressNotify():
			s.advance(resp.Header.Revision)
		case len(resp.Events) > 0:
			delivered = true
			s.applyEvents(resp.Events)
			s.advance(resp.Events[len(resp.Events)-1].Kv.ModRevision)
		}
		s.mu.Unlock()
	}
	if err := s.ctx.Err(); err != nil {
		return delivered, err
	}
	return delivered, errors.New("the watch channel closed")
}
