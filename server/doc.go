// Package server is Usher's gRPC edge: it validates the shape of requests,
// converts between usher.v1 messages and authz values, calls the engine, and
// maps authz errors to status codes in one place (status.go). No rule of
// DESIGN.md is decided here. It must not import bbolt.
package server
