// Package scenario runs policy scenario files: a policy, setup steps and
// expectations, replayed against an in-memory engine with no server. The
// seed systems' scenario files replay their documents statement by
// statement; users write their own to prove their policies.
package scenario
