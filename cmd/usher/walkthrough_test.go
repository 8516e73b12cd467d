package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// step is one command of a README section and the output it shows.
type step struct {
	command string
	want    string
	checked bool // an output block follows; setup commands only must succeed
	fails   bool // the output is an error, shown in a text block
}

var fence = regexp.MustCompile("(?s)```(sh|json|text)\n(.*?)```")

// timestamps match the times of change sets, which differ from run to run:
// the README's and the output's are compared by their shape.
var timestamps = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"`)

// When grpcurl's -max-time ends a stream, the client's deadline and the
// server's (which grpc-timeout tells it) race: grpcurl says either that its
// deadline passed or that the server reset the stream. The README shows the
// first.
var (
	maxTimeCut = regexp.MustCompile(`ERROR:\n  Code: \w+\n  Message: stream terminated by RST_STREAM with error code: CANCEL\z`)
	maxTimeEnd = "ERROR:\n  Code: DeadlineExceeded\n  Message: context deadline exceeded"
)

// readmeSteps extracts the commands of the README section between the
// markers NAME:start and NAME:end. A sh block followed by an output block is
// one command whose output must match; a sh block followed by another (or
// by nothing) holds setup commands, a line each, that must succeed.
func readmeSteps(t *testing.T, name string) []step {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- "+name+":start -->")
	section, _, ok2 := strings.Cut(rest, "<!-- "+name+":end -->")
	if !ok || !ok2 {
		t.Fatalf("README.md has no %s:start/end markers", name)
	}
	var steps []step
	blocks := fence.FindAllStringSubmatch(section, -1)
	for i := 0; i < len(blocks); i++ {
		if blocks[i][1] != "sh" {
			t.Fatalf("README %s: block %d is %s, want a sh command", name, i, blocks[i][1])
		}
		if i+1 == len(blocks) || blocks[i+1][1] == "sh" {
			for _, line := range strings.Split(strings.TrimSpace(blocks[i][2]), "\n") {
				steps = append(steps, step{command: strings.TrimSpace(line)})
			}
			continue
		}
		steps = append(steps, step{command: strings.TrimSpace(blocks[i][2]), want: strings.TrimSpace(blocks[i+1][2]),
			checked: true, fails: blocks[i+1][1] == "text"})
		i++
	}
	return steps
}

// runSteps runs a README section's grpcurl commands against addr.
func runSteps(t *testing.T, steps []step, addr string) {
	t.Helper()
	grpcurl := grpcurlPath(t)
	for i, s := range steps {
		if !strings.HasPrefix(s.command, "grpcurl ") {
			t.Fatalf("step %d: %q is not a grpcurl command", i+1, s.command)
		}
		command := grpcurl + strings.TrimPrefix(strings.ReplaceAll(s.command, "127.0.0.1:7070", addr), "grpcurl")
		out, err := exec.Command("sh", "-c", command).CombinedOutput()
		got := strings.TrimSpace(string(out))
		if strings.Contains(s.command, " -max-time ") {
			got = maxTimeCut.ReplaceAllString(got, maxTimeEnd)
		}
		if s.fails != (err != nil) {
			t.Fatalf("step %d: %s\nexit error %v, want failure %v; output:\n%s", i+1, s.command, err, s.fails, got)
		}
		if s.checked && !matches(got, s.want) {
			t.Fatalf("step %d: %s\ngot:\n%s\nwant (README):\n%s", i+1, s.command, got, s.want)
		}
	}
}

// matches compares a command's output with the README's: timestamps by
// their shape, and an ellipsis (…) inside a quoted value stands for what
// differs from run to run, such as a session id or a token. An error's
// details are compared where the README shows them; elsewhere it shows
// the code and the message only.
func matches(got, want string) bool {
	got, want = timestamps.ReplaceAllString(got, `"<time>"`), timestamps.ReplaceAllString(want, `"<time>"`)
	if before, _, ok := strings.Cut(got, "\n  Details:\n"); ok && !strings.Contains(want, "Details:") {
		got = before
	}
	if !strings.Contains(want, "…") {
		return got == want
	}
	pattern := strings.ReplaceAll(regexp.QuoteMeta(want), "…", `[^"]*`)
	return regexp.MustCompile(`\A` + pattern + `\z`).MatchString(got)
}

// startBinary serves a fresh data file with the usher binary on a free port,
// returning the address it printed.
func startBinary(t *testing.T, serveArgs ...string) (bin, addr string) {
	t.Helper()
	bin, dir := buildUsher(t)
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data", "usher.db")}, serveArgs...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("usher serve exited with %v after SIGTERM", err)
		}
	})
	lines := bufio.NewScanner(stdout)
	listening := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if m := regexp.MustCompile(`serving gRPC on (\S+)`).FindStringSubmatch(lines.Text()); m != nil {
				listening <- m[1]
			}
		}
	}()
	select {
	case addr = <-listening:
		return bin, addr
	case <-time.After(30 * time.Second):
		t.Fatal("usher serve did not say where it listens within 30s")
		return "", ""
	}
}

// grpcurlPath finds the pinned grpcurl that make tools installs.
func grpcurlPath(t *testing.T) string {
	if p, err := filepath.Abs("../../bin/grpcurl"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatal("grpcurl is not installed: run `make tools` (make test does) to put the pinned version in ./bin")
	}
	return p
}

func TestREADMEWalkthrough(t *testing.T) {
	steps := readmeSteps(t, "walkthrough")
	if len(steps) < 10 {
		t.Fatalf("README walk-through has %d steps; expected the whole tour", len(steps))
	}
	_, addr := startBinary(t)
	runSteps(t, steps, addr)
}

// The Watch section, against a server that keeps 2 change sets of its log.
func TestREADMEWatch(t *testing.T) {
	steps := readmeSteps(t, "watch")
	_, addr := startBinary(t, "--log-retention", "2")
	runSteps(t, steps, addr)
}

// Each seed system's README section, against a server on its policy.
func TestREADMESeedSections(t *testing.T) {
	for _, name := range []string{"livebox", "livecaller", "vancast", "stream", "alfaview"} {
		t.Run(name, func(t *testing.T) {
			steps := readmeSteps(t, "seed:"+name)
			_, addr := startBinary(t, "--policy", name)
			runSteps(t, steps, addr)
		})
	}
}

func TestClientCommands(t *testing.T) {
	bin, addr := startBinary(t)
	// usher runs a client command, with --addr after the command's words.
	usher := func(args ...string) (string, error) {
		words := 1
		if args[0] == "policy" {
			words = 2
		}
		argv := append(append(args[:words:words], "--addr", addr), args[words:]...)
		out, err := exec.Command(bin, argv...).CombinedOutput()
		return string(out), err
	}
	if out, err := usher("check", "user:dana", "join-call", "root"); err == nil || !strings.Contains(out, "REASON_NO_GRANT") {
		t.Fatalf("check before the grant: err %v, output %s; want a denial with REASON_NO_GRANT and a non-zero exit", err, out)
	}
	if out, err := usher("grant", "user:dana", "host", "root"); err != nil || !strings.Contains(out, `"revision": "2"`) {
		t.Fatalf("grant: err %v, output %s; want revision 2", err, out)
	}
	if out, err := usher("check", "user:dana", "join-call", "root"); err != nil || !strings.Contains(out, "REASON_GRANTED") {
		t.Fatalf("check after the grant: err %v, output %s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("permissions:\n  - {name: join-call, parents: [nope]}\n"), 0o600)
	if out, err := usher("policy", "apply", bad); err == nil || !strings.Contains(out, bad+`:2:33: permissions[0].parents[0]: "nope"`) {
		t.Fatalf("policy apply of a bad file: err %v, output %s; want the file and the field's path", err, out)
	}
	if out, err := usher("policy", "export"); err != nil || !strings.Contains(out, `"name": "join-call"`) {
		t.Fatalf("export: err %v, output %s", err, out)
	}
	if out, err := usher("revoke", "user:dana", "host", "root"); err != nil || !strings.Contains(out, `"revision": "3"`) {
		t.Fatalf("revoke: err %v, output %s", err, out)
	}
	// policy export is a read, and takes --min-revision as every read does.
	if out, err := usher("policy", "export", "--min-revision", "3"); err != nil || !strings.Contains(out, `"name": "join-call"`) {
		t.Fatalf("export --min-revision 3: err %v, output %s", err, out)
	}
	if out, err := usher("policy", "export", "--min-revision", "999", "--timeout", "300ms"); err == nil || !strings.Contains(out, "REVISION_NOT_REACHED") {
		t.Fatalf("export --min-revision 999: err %v, output %s; want REVISION_NOT_REACHED", err, out)
	}
	if out, err := usher("grant", "user:dana", "no-such-role", "root"); err == nil || !strings.Contains(out, "NotFound") {
		t.Fatalf("grant of an undefined role: err %v, output %s; want NotFound", err, out)
	}
	out, err := usher("changes", "--subject", "user:dana", "--output", "table")
	rows := tableRows(out)
	if err != nil || len(rows) != 3 || rows[1][0] != "2" || rows[1][2] != "anonymous" || !strings.HasPrefix(rows[1][3], "put_grant") ||
		!strings.HasPrefix(rows[2][3], "delete_grant") {
		t.Fatalf("changes --subject user:dana: err %v, output:\n%s\nwant the grant at revision 2 and its revoke", err, out)
	}
}

func TestPolicyCommands(t *testing.T) {
	bin, dir := buildUsher(t)
	usher := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := usher("policy", "list"); err != nil || !strings.Contains(out, "default") {
		t.Fatalf("policy list: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("permissions:\n  - name: join-call\nroles:\n  - {name: guest, scope: root, permissions: [join-call, send-audoi]}\n"), 0o600)
	out, err := usher("policy", "validate", bad)
	if err == nil || !strings.Contains(out, bad+`:4:57: roles[0].permissions[1]: "send-audoi": permission is not declared in the policy`) {
		t.Fatalf("policy validate of a bad policy: err %v, output:\n%s", err, out)
	}
	if out, err := usher("policy", "validate", "../../policy/policies/default.yaml"); err != nil || !strings.Contains(out, "valid") {
		t.Fatalf("policy validate of the default policy: %v\n%s", err, out)
	}
	scenario := filepath.Join(dir, "s.yaml")
	os.WriteFile(scenario, []byte("policy: default\nsteps:\n  - register: {name: account:a}\n  - check: {subject: user:x, permission: join-call, resource: account:a}\n    allowed: true\n"), 0o600)
	out, err = usher("policy", "test", scenario)
	if err == nil || !strings.Contains(out, scenario+":4: check user:x join-call on account:a: allowed false (NO_GRANT), want allowed true") ||
		!strings.Contains(out, "0 passed, 1 failed") {
		t.Fatalf("policy test of a failing scenario: err %v, output:\n%s", err, out)
	}
	if out, err := usher("policy", "test", "../../policy/scenarios/default.yaml"); err != nil || !strings.Contains(out, " passed, 0 failed") {
		t.Fatalf("policy test of the default scenario: %v\n%s", err, out)
	}
}

// The join walk-through, against a server with a LiveKit key in its
// environment, as the README starts it.
func TestREADMEJoin(t *testing.T) {
	steps := readmeSteps(t, "join")
	t.Setenv("USHER_LIVEKIT_API_KEY", "devkey")
	t.Setenv("USHER_LIVEKIT_API_SECRET", "devsecret-at-least-32-bytes-long")
	_, addr := startBinary(t)
	runSteps(t, steps, addr)
}
