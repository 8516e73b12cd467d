// Package memory is a storage backend that keeps everything in memory and
// forgets it on Close: for `usher policy test` and `usher policy validate`,
// which must not need a server or a file, and for tests. It encodes entities
// exactly as the other backends do, so it refuses what they refuse.
package memory

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Memory is the in-memory Backend.
type Memory struct {
	*data
	closed bool
	done   chan struct{}
}

// data is what a Memory holds; handles from Reopen share it.
type data struct {
	mu        sync.Mutex
	rev       authz.Revision
	compacted authz.Revision
	log       []authz.ChangeSet // revisions compacted+1 .. rev
	state     map[storage.Kind]map[string][]byte
	versions  *storage.Versions
	notify    chan struct{}
}

var _ storage.Backend = (*Memory)(nil)

// New returns an empty in-memory backend.
func New() *Memory {
	d := &data{state: map[storage.Kind]map[string][]byte{}, versions: storage.NewVersions(0, 0), notify: make(chan struct{})}
	for _, k := range storage.Kinds {
		d.state[k] = map[string][]byte{}
	}
	return &Memory{data: d, done: make(chan struct{})}
}

// Reopen returns a new handle on the same data, as opening a file again
// would; m may be closed.
func (m *Memory) Reopen() *Memory {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.versions = storage.NewVersions(m.rev, 0)
	return &Memory{data: m.data, done: make(chan struct{})}
}

// Commit implements authz.Backend. Changes are encoded first and stored
// only when every one of them encodes, so a malformed change set commits
// nothing of its batch.
func (m *Memory) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, storage.ErrClosed
	}
	now := time.Now().UTC()
	results := make([]authz.Committed, len(ws))
	var (
		entries   []storage.Entry
		committed []authz.ChangeSet
	)
	touched := map[string]bool{}
	for i, w := range ws {
		rev := m.rev + authz.Revision(len(committed))
		if k := conflict(m.versions, w, touched); k != "" {
			results[i] = authz.Committed{Conflict: k, Latest: rev}
			continue
		}
		cs := w.Set
		cs.Revision = rev + 1
		if cs.Time.IsZero() {
			cs.Time = now
		}
		cs.Time = cs.Time.UTC()
		for j, c := range cs.Changes {
			e, err := storage.EntryOf(c)
			if err != nil {
				return nil, fmt.Errorf("storage: commit: change %d (%s): %w", j, c.Op, err)
			}
			entries = append(entries, e)
		}
		if _, err := storage.EncodeChangeSet(cs); err != nil {
			return nil, fmt.Errorf("storage: commit: %w", err)
		}
		for _, k := range w.Touches {
			touched[k] = true
		}
		results[i].Revision = cs.Revision
		committed = append(committed, cs)
	}
	for _, e := range entries {
		if e.Value == nil {
			delete(m.state[e.Kind], string(e.Key))
		} else {
			m.state[e.Kind][string(e.Key)] = e.Value
		}
	}
	for i, w := range ws {
		if results[i].Revision != 0 {
			m.versions.Touch(results[i].Revision, w.Touches)
		}
	}
	if len(committed) > 0 {
		m.log = append(m.log, committed...)
		m.rev = committed[len(committed)-1].Revision
		close(m.notify)
		m.notify = make(chan struct{})
	}
	return results, nil
}

func conflict(v *storage.Versions, w authz.Write, touched map[string]bool) string {
	if k := v.Conflict(w); k != "" {
		return k
	}
	for _, k := range w.Guards {
		if touched[k] {
			return k
		}
	}
	return ""
}

// Load implements authz.Backend.
func (m *Memory) Load(_ context.Context, sink authz.Sink) (authz.Revision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, storage.ErrClosed
	}
	for _, kind := range storage.Kinds {
		keys := make([]string, 0, len(m.state[kind]))
		for k := range m.state[kind] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := storage.Decode(kind, []byte(k), m.state[kind][k], sink); err != nil {
				return 0, err
			}
		}
	}
	return m.rev, nil
}

// LogStart implements storage.Backend.
func (m *Memory) LogStart(context.Context) (authz.Revision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, storage.ErrClosed
	}
	return m.compacted, nil
}

// Changes implements authz.Backend.
func (m *Memory) Changes(_ context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: changes: limit must be positive, got %d", limit)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, storage.ErrClosed
	}
	if after < m.compacted {
		return nil, fmt.Errorf("storage: changes after %d: %w (it begins after revision %d)", after, authz.ErrCompacted, m.compacted)
	}
	if after >= m.rev {
		return nil, nil
	}
	rest := m.log[after-m.compacted:]
	return slices.Clone(rest[:min(limit, len(rest))]), nil
}

// ChangeCounts implements authz.Backend.
func (m *Memory) ChangeCounts(ctx context.Context, after authz.Revision, limit int) ([]int, error) {
	css, err := m.Changes(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	counts := make([]int, len(css))
	for i, cs := range css {
		counts[i] = len(cs.Changes)
	}
	return counts, nil
}

// CommitTime implements authz.Backend.
func (m *Memory) CommitTime(_ context.Context, rev authz.Revision) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return time.Time{}, false, storage.ErrClosed
	}
	if rev <= m.compacted || rev > m.rev {
		return time.Time{}, false, nil
	}
	return m.log[rev-m.compacted-1].Time, true, nil
}

// Watch implements authz.Backend.
func (m *Memory) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for {
			batch, err := m.Changes(ctx, after, 256)
			if err != nil {
				yield(authz.ChangeSet{}, err)
				return
			}
			for _, cs := range batch {
				if !yield(cs, nil) {
					return
				}
				after = cs.Revision
			}
			if len(batch) > 0 {
				continue
			}
			m.mu.Lock()
			notify, caught := m.notify, after >= m.rev
			m.mu.Unlock()
			if !caught {
				continue
			}
			select {
			case <-notify:
			case <-ctx.Done():
				return
			case <-m.done:
				yield(authz.ChangeSet{}, storage.ErrClosed)
				return
			}
		}
	}
}

// Revision implements storage.Backend.
func (m *Memory) Revision(context.Context) (authz.Revision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, storage.ErrClosed
	}
	return m.rev, nil
}

// Compact implements storage.Backend.
func (m *Memory) Compact(_ context.Context, before authz.Revision) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return storage.ErrClosed
	}
	before = min(before, m.rev)
	if before <= m.compacted {
		return nil
	}
	m.log = slices.Clone(m.log[before-m.compacted:])
	m.compacted = before
	return nil
}

// Close implements authz.Backend; the data stays for Reopen.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	return nil
}
