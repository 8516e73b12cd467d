// Package authz is Usher's domain: names, the resource tree, the permission
// tree, roles, grants and blocks, the in-memory index that answers Check, and
// the engine that validates writes before they are committed.
//
// It imports neither gRPC nor bbolt: it is a library that can be embedded in
// another process and tested with plain Go values. Storage backends implement
// Backend and feed committed changes to an Index through Index.Apply.
package authz
