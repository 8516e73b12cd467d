package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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
	c.ok("resources", "put", "account:acme")
	c.ok("resources", "put", "call:acme:standup", "--parent", "account:acme", "--start", "2099-01-01T09:00:00Z")
	c.step(exitOK, says(`"parent": "account:acme"`, `"ancestors": [`, `"startTime": "2099-01-01T09:00:00Z"`), "resources", "get", "call:acme:standup")
	c.ok("roles", "put", "speaker", "--scope", "account:acme", "--permission", "join-call,send-audio", "--bindable-on", "call", "--description", "Speaks")
	c.step(exitOK, says("speaker", "account:acme", "join-call,send-audio"), "roles", "list", "call:acme:standup", "-o", "table")
	c.ok("resources", "put", "room:acme:spare", "--parent", "account:acme")
	c.ok("resources", "delete", "room:acme:spare")

	// Grants, with an actor and an expiry; a grant the actor may not make
	// is refused.
	c.ok("grant", "user:hana", "host", "call:acme:standup")
	c.ok("grant", "user:mo", "call-member", "call:acme:standup", "--actor", "user:hana", "--expires", "2h")
	c.step(exitError, nil, "grant", "user:mo", "host", "call:acme:standup", "--actor", "user:mo")
	c.step(exitOK, says(`"subject": "user:mo"`, `"expireTime": "`), "list-grants", "--resource", "call:acme:standup")
	c.step(exitOK, says(`"resource": "call:acme:standup"`), "list-grants", "--subject", "user:hana")
	c.ok("revoke", "user:mo", "call-member", "call:acme:standup", "--actor", "user:hana")

	// Blocks, with an actor, an expiry, a reason and an id.
	c.ok("grant", "user:mo", "call-member", "call:acme:standup")
	out := c.ok("block", "user:mo", "call:acme:standup", "--permission", "send-audio", "--reason", "muted by the host", "--actor", "user:hana", "--expires", "30m")
	id := c.field(out, "blockId")
	c.step(exitDenied, says("BLOCKED", "muted by the host", id), "check", "user:mo", "send-audio", "call:acme:standup", "-o", "table")
	c.ok("block", "user:mo", "call:acme:standup", "--id", id, "--permission", "send-audio,send-video", "--actor", "user:hana")
	c.ok("unblock", "user:mo", "call:acme:standup", "--id", id, "--actor", "user:hana")
	c.ok("check", "user:mo", "send-audio", "call:acme:standup")

	// Quotas and admission rules.
	c.ok("quotas", "put", "account:acme", "call", "5")
	c.step(exitOK, says("account:acme", "call", "5"), "quotas", "list", "call:acme:standup", "-o", "table")
	c.ok("quotas", "delete", "account:acme", "call")
	rule := filepath.Join(t.TempDir(), "rule.yaml")
	// A rule file with a second document is refused, not half read.
	os.WriteFile(rule, []byte("{scope: call:acme:standup, resource_type: call, join_permission: join-call}\n---\n{max_participants: 1}\n"), 0o600)
	c.step(exitError, nil, "admissions", "put", rule)
	// The call's own quotas name it as their scope; no admission rule does.
	var exported struct {
		Admissions []struct{ Scope string } `json:"admissions"`
	}
	if out := c.ok("policy", "export"); json.Unmarshal([]byte(out), &exported) != nil || len(exported.Admissions) != 1 || exported.Admissions[0].Scope != "root" {
		t.Errorf("a refused rule file wrote its rule:\n%s", out)
	}
	os.WriteFile(rule, []byte("{scope: call:acme:standup, resource_type: call, join_permission: join-call, max_participants: 10}\n"), 0o600)
	c.ok("admissions", "put", rule)
	c.step(exitOK, says(`"maxParticipants": 10`), "policy", "export")
	c.ok("admissions", "delete", "call:acme:standup", "call")
	c.ok("roles", "delete", "speaker", "--scope", "account:acme")
	c.step(exitOK, says("put_resource {\"name\":\"account:acme\"", "call:acme:standup"), "changes", "--resource", "account:acme", "--limit", "2", "-o", "table")
	out = c.ok("changes", "--after", "2", "--limit", "1")
	if !strings.Contains(out, `"revision": "3"`) || strings.Contains(out, `"revision": "2"`) {
		t.Errorf("changes --after 2 --limit 1: want the record of revision 3 alone:\n%s", out)
	}
}

// The AuthorizationService from the CLI: the reads, CheckBatch from a file
// or stdin, and the Watch stream.
func TestAuthorizationCommands(t *testing.T) {
	c := newCLISteps(t)
	c.ok("resources", "put", "account:acme")
	c.ok("resources", "put", "call:acme:standup", "--parent", "account:acme")
	c.ok("grant", "user:hana", "host", "call:acme:standup")
	c.ok("grant", "user:mo", "user", "account:acme")

	c.step(exitOK, says(`"join-call"`), "list-permissions", "user:mo", "call:acme:standup")
	c.step(exitOK, says("usher.grants.write"), "list-permissions", "user:hana", "call:acme:standup", "--include-reserved", "-o", "table")
	c.step(exitOK, says(`"name": "call:acme:standup"`, `"role": "host"`), "lookup-resources", "user:hana", "join-call", "call")
	c.step(exitOK, says("user:hana", "user:mo"), "lookup-subjects", "call:acme:standup", "join-call", "--kind", "user", "-o", "table")
	c.step(exitOK, says(`"revision": "5"`, `"serving": true`), "revision")

	batch := filepath.Join(t.TempDir(), "checks.txt")
	os.WriteFile(batch, []byte("# who may speak\nuser:hana send-audio call:acme:standup\nuser:gus read-call call:acme:standup\n"), 0o600)
	c.step(exitDenied, says("user:hana", "GRANTED", "NO_GRANT"), "check-batch", batch, "-o", "table")
	os.WriteFile(batch, []byte("user:hana send-audio call:acme:standup\nuser:hana shout call:acme:standup\n"), 0o600)
	c.step(exitError, says("UNDECLARED_PERMISSION"), "check-batch", batch, "-o", "table")
	cmd := exec.Command(c.bin, "check-batch", "--addr", c.addr)
	cmd.Stdin = strings.NewReader(`{"checks": [{"subject": "user:hana", "permission": "join-call", "resource": "call:acme:standup"}]}`)
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), `"allowed": true`) {
		t.Fatalf("check-batch of JSON on stdin: %v\n%s", err, out)
	}

	// Watch follows until --timeout, and that is a success; a line of JSON
	// a message.
	out := c.ok("watch", "--after", "1", "--timeout", "2s")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || lines[0] != `{"revision":"1"}` || !strings.Contains(lines[1], `"revision":"2"`) {
		t.Errorf("watch --after 1: want a JSON line per message, the first at revision 1:\n%s", out)
	}
	c.step(exitOK, says("1\t(progress)", "put_resource"), "watch", "--after", "1", "--resource", "account:acme", "--timeout", "2s", "-o", "table")
	code, _, stderr := c.usher("watch", "--after", "99")
	if code != exitError || !strings.Contains(stderr, "usher watch: OutOfRange: ") || !strings.Contains(stderr, "reason FUTURE_REVISION") {
		t.Errorf("watch after a future revision: exit %d, stderr:\n%s", code, stderr)
	}
}

// The AdmissionService from the CLI, through a call with a lobby: join and
// knock exit 3 for an outcome that does not let the subject in.
func TestAdmissionCommands(t *testing.T) {
	c := newCLISteps(t)
	c.ok("resources", "put", "account:acme")
	c.ok("resources", "put", "call:acme:standup", "--parent", "account:acme")
	c.ok("grant", "user:hana", "host", "call:acme:standup")
	c.ok("grant", "user:gus", "guest", "call:acme:standup")
	rule := filepath.Join(t.TempDir(), "rule.yaml")
	os.WriteFile(rule, []byte(`scope: call:acme:standup
resource_type: call
join_permission: join-call
stage_permission: update-call
lobby: {admit_permission: update-call-permissions, admit_role: call-member, bypass_permission: read-call}
`), 0o600)
	c.ok("admissions", "put", rule)

	out := c.step(exitOK, says("OUTCOME_ADMITTED"), "join", "user:hana", "call:acme:standup")
	session := c.field(out, "sessionId")
	c.step(exitOK, says("OUTCOME_ADMITTED"), "keepalive", session)
	c.step(exitDenied, says("OUTCOME_LOBBY"), "join", "user:gus", "call:acme:standup")
	c.step(exitOK, says("SUBJECT", "user:gus"), "lobby", "call:acme:standup", "--actor", "user:hana", "-o", "table")
	// A note is an end user's text: one that would clear the line and
	// write another subject over it is refused; one that would make a
	// row of its own is printed quoted, within its own row.
	c.step(exitError, nil, "knock", "user:gus", "call:acme:standup", "--note", "\x1b[2K\ruser:ceo")
	c.step(exitOK, says("OUTCOME_LOBBY"), "knock", "user:gus", "call:acme:standup", "--note", "Gus\r\nuser:ceo\t2026-01-01T00:00:00Z\nuser:ceo")
	lobby := c.step(exitOK, nil, "lobby", "call:acme:standup", "--actor", "user:hana", "-o", "table")
	if rows := tableRows(lobby); len(rows) != 2 || rows[1][0] != "user:gus" || rows[1][1] != `"Gus\r\nuser:ceo\t2026-01-01T00:00:00Z\nuser:ceo"` ||
		strings.ContainsAny(lobby, "\r") {
		t.Errorf("lobby --output table of a knock with a note of line breaks and a tab:\n%q\nwant the header and user:gus's row, its note quoted", lobby)
	}
	c.ok("deny", "user:gus", "call:acme:standup", "--actor", "user:hana")
	knock := c.field(c.step(exitOK, says("OUTCOME_LOBBY"), "knock", "user:gus", "call:acme:standup", "--note", "Gus from sales"), "sessionId")
	// A knock renewed is renewed, though its subject waits on.
	c.step(exitOK, says("OUTCOME_LOBBY"), "keepalive", knock)
	c.ok("admit", "user:gus", "call:acme:standup", "--actor", "user:hana", "--expires", "2h")
	c.step(exitOK, says("outcome", "ADMITTED"), "join", "user:gus", "call:acme:standup", "-o", "table")
	c.step(exitDenied, says("OUTCOME_NO_GRANT"), "knock", "user:nobody", "call:acme:standup")

	c.step(exitOK, says("SYNCED", "user:hana", "user:gus"), "watch-call", "call:acme:standup", "--timeout", "2s", "-o", "table")
	c.step(exitOK, says("CALL_EVENT_KIND_SYNCED"), "watch-call", "call:acme:standup", "--timeout", "2s")
	c.ok("leave", session)
	c.ok("leave", "user:gus", "call:acme:standup")
	// The admission revoked, the session has ended: sent back to the lobby.
	again := c.field(c.step(exitOK, says("OUTCOME_ADMITTED"), "join", "user:gus", "call:acme:standup"), "sessionId")
	c.ok("revoke", "user:gus", "call-member", "call:acme:standup")
	c.step(exitDenied, says("OUTCOME_LOBBY"), "keepalive", again)

	c.ok("schedule", "call:acme:standup", "2h", "--actor", "user:hana")
	c.step(exitOK, says(`"startTime"`), "resources", "get", "call:acme:standup")
	c.ok("schedule", "call:acme:standup", "--clear", "--actor", "user:hana")
	c.ok("go-live", "call:acme:standup", "--actor", "user:hana")
	c.step(exitOK, says(`"live": true`), "resources", "get", "call:acme:standup")
	c.ok("go-live", "call:acme:standup", "--backstage")
	c.step(exitOK, says("call:acme:standup"), "resources", "get", "call:acme:standup", "-o", "table")
}
