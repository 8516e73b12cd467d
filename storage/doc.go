// Package storage is the contract between Usher's engine and the places its
// data lives, and what every backend shares: the record format (how domain
// values become bytes), the guard bookkeeping of single-process backends,
// and the conformance suite (storagetest) that every backend passes.
//
// The backends live below it, each with its heavy dependency to itself:
// storage/bolt (an embedded bbolt file, the default), storage/memory (for
// policy tests and tools) and storage/etcd (a cluster). They know bytes and
// transactions, not rules: whether a grant is allowed, a role visible or a
// quota exceeded is decided in authz/, never here. Nothing here imports gRPC
// or server/.
package storage
