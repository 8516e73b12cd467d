package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// cliSteps runs the client commands of one test against a server of its
// own, on the default policy.
type cliSteps struct {
	t         *testing.T
	bin, addr string
	usher     func(args ...string) (code int, stdout, stderr string)
}

func newCLISteps(t *testing.T) *cliSteps {
	bin, addr := startBinary(t)
	return &cliSteps{t: t, bin: bin, addr: addr, usher: cliAgainst(t, bin, addr)}
}

// step runs a command that must exit with code and print each of says on
// stdout, and returns what it printed.
func (c *cliSteps) step(code int, says []string, args ...string) string {
	c.t.Helper()
	got, stdout, stderr := c.usher(args...)
	if got != code {
		c.t.Fatalf("usher %s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	for _, s := range says {
		if !strings.Contains(stdout, s) {
			c.t.Fatalf("usher %s: stdout:\n%s\nwant %q in it", strings.Join(args, " "), stdout, s)
		}
	}
	return stdout
}

// ok runs a command that must succeed.
func (c *cliSteps) ok(args ...string) string {
	c.t.Helper()
	return c.step(exitOK, nil, args...)
}

func says(s ...string) []string { return s }

// field reads a string field of a JSON answer.
func (c *cliSteps) field(out, name string) string {
	c.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	s, _ := m[name].(string)
	return s
}

// The AdminService from the CLI: every write with --actor where a write may
// be made on someone's behalf, --expires where a write expires.
func TestAdminCommands(t *testing.T) {
	c := newCLISteps(t)
	c.ok("grant", "user:hana", "host", "root")
	c.ok("grant", "user:mo", "call-member", "root", "--actor", "user:hana", "--expires", "2h")
	c.step(exitError, nil, "grant", "user:mo", "host", "root", "--actor", "user:mo")
	c.step(exitOK, says(`"actor": "user:hana"`, `"expireTime": "`), "changes", "--subject", "user:mo")
	c.ok("revoke", "user:mo", "call-member", "root", "--actor", "user:hana")
	c.step(exitOK, says("delete_grant"), "changes", "--actor", "user:hana", "-o", "table")
}
