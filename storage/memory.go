package storage

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Memory is a Backend that keeps everything in memory and forgets it on
// Close: for `usher policy test` and `usher policy validate`, which must not
// need a server or a file. It encodes entities exactly as the bbolt Store
// does, so it refuses what the Store refuses.
type Memory struct {
	*memData
	closed   bool
	watchers []func(authz.ChangeSet)
}

// memData is what a Memory holds; handles from Reopen share it.
type memData struct {
	mu    sync.Mutex
	rev   authz.Revision
	log   []authz.ChangeSet
	state entities
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	return &Memory{memData: &memData{state: entities{
		permissions: memKV{}, resources: memKV{}, roles: memKV{}, grants: memKV{},
		blocks: memKV{}, quotas: memKV{}, creators: memKV{},
	}}}
}

// Reopen returns a new handle on the same data, as opening a file again
// would; m may be closed.
func (m *Memory) Reopen() *Memory {
	return &Memory{memData: m.memData}
}

// Commit implements Backend: CommitBatch of one change set.
func (m *Memory) Commit(ctx context.Context, cs authz.ChangeSet) (authz.Revision, error) {
	revs, err := m.CommitBatch(ctx, []authz.ChangeSet{cs})
	if err != nil {
		return 0, err
	}
	return revs[0], nil
}

// CommitBatch implements Backend. Changes are staged first and written only
// when every one of them encodes, so a malformed change set commits nothing
// of its batch.
func (m *Memory) CommitBatch(ctx context.Context, css []authz.ChangeSet) ([]authz.Revision, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	staged := entities{
		permissions: &stagedKV{}, resources: &stagedKV{}, roles: &stagedKV{}, grants: &stagedKV{},
		blocks: &stagedKV{}, quotas: &stagedKV{}, creators: &stagedKV{},
	}
	committed := committedCopies(css, time.Now().UTC())
	for k := range committed {
		for i := range committed[k].Changes {
			if err := staged.apply(&committed[k].Changes[i]); err != nil {
				return nil, fmt.Errorf("storage: commit: change %d (%s): %w", i, committed[k].Changes[i].Op, err)
			}
		}
	}
	for _, pair := range [][2]kv{
		{staged.permissions, m.state.permissions}, {staged.resources, m.state.resources},
		{staged.roles, m.state.roles}, {staged.grants, m.state.grants}, {staged.blocks, m.state.blocks},
		{staged.quotas, m.state.quotas}, {staged.creators, m.state.creators},
	} {
		pair[0].(*stagedKV).flush(pair[1].(memKV))
	}
	revs := make([]authz.Revision, len(committed))
	for k := range committed {
		m.rev++
		committed[k].Revision = m.rev
		revs[k] = m.rev
		m.log = append(m.log, committed[k])
	}
	for _, cs := range committed {
		for _, fn := range m.watchers {
			fn(cs)
		}
	}
	return revs, nil
}

// Snapshot implements Backend.
func (m *Memory) Snapshot() (authz.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return authz.Snapshot{}, ErrClosed
	}
	return m.state.snapshot(m.rev)
}

// Changes implements Backend.
func (m *Memory) Changes(after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: changes: limit must be positive, got %d", limit)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if after >= m.rev {
		return nil, nil
	}
	// Revision r is at index r-1.
	rest := m.log[after:]
	return slices.Clone(rest[:min(limit, len(rest))]), nil
}

// Watch implements Backend.
func (m *Memory) Watch(fn func(authz.ChangeSet)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watchers = append(m.watchers, fn)
}

// Revision implements Backend.
func (m *Memory) Revision() (authz.Revision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	return m.rev, nil
}

// Close implements Backend; what was stored is gone.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.watchers = nil
	return nil
}

// memKV is a bucket as a map; ForEach visits keys in byte order, as bbolt
// does.
type memKV map[string][]byte

func (b memKV) Put(k, v []byte) error {
	b[string(k)] = slices.Clone(v)
	return nil
}

func (b memKV) Delete(k []byte) error {
	delete(b, string(k))
	return nil
}

func (b memKV) ForEach(fn func(k, v []byte) error) error {
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), b[k]); err != nil {
			return err
		}
	}
	return nil
}

// stagedKV records puts and deletes until the whole change set has encoded.
type stagedKV struct {
	ops []stagedOp
}

type stagedOp struct {
	key, value []byte // value nil: delete
}

func (s *stagedKV) Put(k, v []byte) error {
	s.ops = append(s.ops, stagedOp{slices.Clone(k), slices.Clone(v)})
	return nil
}

func (s *stagedKV) Delete(k []byte) error {
	s.ops = append(s.ops, stagedOp{key: slices.Clone(k)})
	return nil
}

func (s *stagedKV) ForEach(func(k, v []byte) error) error {
	return fmt.Errorf("storage: a staged bucket cannot be read")
}

func (s *stagedKV) flush(into memKV) {
	for _, op := range s.ops {
		if op.value == nil {
			delete(into, string(op.key))
		} else {
			into[string(op.key)] = op.value
		}
	}
}
