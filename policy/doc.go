// Package policy reads policy files (a usher.v1.Policy written as YAML or
// JSON) and holds the policies shipped inside the binary.
package policy
