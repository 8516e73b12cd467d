// Package livekit turns a participant's capabilities in a call into
// LiveKit's video grant and a signed access token for a LiveKit SFU.
//
// A Mapping, written by a policy, says which Usher permission gives each
// field of the grant; Mapping.Token signs a token whose validity never
// outlives the session's lease. Keys are read from a LiveKit-style key file
// or the environment, never from a flag, so that they stay out of process
// listings and shell history.
//
// This is the only package of Usher that imports LiveKit, so that a process
// that embeds authz/ or serves no media does not link it. It must not import
// gRPC, bbolt, server/ or storage/: admission/ calls it with plain values.
package livekit
