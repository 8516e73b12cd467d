package authz

import "fmt"

// Source is a backend an engine can start on: it loads every entity at one
// revision, and streams the change sets committed after it.
type Source interface {
	Backend
	Snapshot() (Snapshot, error)
	Watch(fn func(ChangeSet))
}

// Start builds an index from src's snapshot, feeds it every change set src
// commits from then on, and returns an engine that commits to src. Call it
// before anything writes to src.
func Start(src Source) (*Engine, error) {
	snap, err := src.Snapshot()
	if err != nil {
		return nil, err
	}
	idx, err := NewIndex(snap)
	if err != nil {
		return nil, fmt.Errorf("building the index: %w", err)
	}
	src.Watch(idx.Apply)
	return NewEngine(idx, src), nil
}
