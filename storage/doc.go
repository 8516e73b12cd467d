// Package storage persists Usher's authorization data in bbolt, the source of
// truth behind the in-memory index that answers Check.
//
// It knows bytes and transactions, not rules: it applies change sets that the
// authz engine has already validated, atomically and durably, numbers each with
// a global revision, keeps the change log, and hands every committed change set
// to its watchers. Whether a grant is allowed, a role visible or a quota
// exceeded is decided in authz/, never here. It must not import gRPC or
// server/, so that a second backend (an etcd cluster) can replace it behind
// Backend without the engine or the API noticing.
package storage
