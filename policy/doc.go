// Package policy reads policy files (a usher.v1.Policy written as YAML or
// JSON) with the position of every field, validates them (every schema
// error and every cross-reference, each at its line and column), diffs
// them against the policy in force, and holds the policies shipped inside
// the binary. It converts between the policy message and the engine's form,
// so that offline tools (usher policy, the scenario runner) need not go
// through the server; it must not import server.
package policy
