// Package bench measures Usher: it generates a deterministic synthetic
// platform (accounts > workspaces > call types > calls, users, grants at
// every level, blocks, custom roles and call type overrides) and drives
// closed-loop load against a running server. usher bench is its command.
package bench
