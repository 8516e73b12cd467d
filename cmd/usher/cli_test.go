package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// runIn runs a command line in this process, as the binary does, and
// returns what it printed to stdout and the error it ended with.
func runIn(args ...string) (string, error) {
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(append([]string{}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	_, err := root.ExecuteC()
	return out.String(), err
}

// runCode runs a command line in this process and returns its exit code
// and what it printed to stdout and stderr.
func runCode(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// commandPaths lists every command of the tree, as the words that name
// it: {"check"}, {"roles", "put"}, ...
func commandPaths(cmd *cobra.Command, prefix []string) [][]string {
	var out [][]string
	for _, sub := range cmd.Commands() {
		if !sub.IsAvailableCommand() {
			continue
		}
		path := append(slices.Clone(prefix), sub.Name())
		out = append(out, path)
		out = append(out, commandPaths(sub, path)...)
	}
	return out
}

func TestEveryCommandIsDescribed(t *testing.T) {
	root := newRoot()
	for _, path := range commandPaths(root, nil) {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.Short == "" || cmd.Long == "" || cmd.Example == "" {
			t.Errorf("usher %s has no short or long description or no example", strings.Join(path, " "))
		}
	}
}

// The README's table of commands names every command of the tree, and
// every subcommand after its command's name ("roles list\|put\|delete").
// Every user of a machine can read a command line (ps, /proc): the
// README's and the docs' examples pass a token in a file or USHER_TOKEN,
// and --token's help says why.
func TestExamplesPassNoTokenOnACommandLine(t *testing.T) {
	for _, file := range []string{"../../README.md", "../../docs/envoy.md", "../../deploy/kubernetes/README.md"} {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(text), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "usher ") && regexp.MustCompile(`--token[ =]`).MatchString(line) {
				t.Errorf("%s:%d: an example passes the token on the command line: %s", file, i+1, line)
			}
		}
	}
	_, stdout, _ := runCode("grant", "--help")
	if !strings.Contains(stdout, "(ps)") {
		t.Errorf("--token's help does not say that a command line is seen by every user:\n%s", stdout)
	}
}

func TestREADMECommandTableNamesEveryCommand(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## The command line\n")
	section, _, _ = strings.Cut(section, "\n- ")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(section, -1) {
		words := strings.Fields(m[1])
		listed[words[0]] = true
		if len(words) > 1 && strings.Contains(words[1], `\|`) {
			for _, sub := range strings.Split(words[1], `\|`) {
				listed[words[0]+" "+sub] = true
			}
		}
	}
	for _, path := range commandPaths(newRoot(), nil) {
		if name := strings.Join(path, " "); len(path) <= 2 && path[0] != "help" && !listed[name] {
			t.Errorf("README.md's table of commands does not name usher %s", name)
		}
	}
}

// usher, usher -h, --help, help, help CMD and CMD -h print help to stdout
// and exit 0, for the root and every command.
func TestHelpExitsZero(t *testing.T) {
	lines := [][]string{{}, {"-h"}, {"--help"}, {"help"}}
	for _, path := range commandPaths(newRoot(), nil) {
		lines = append(lines, append(slices.Clone(path), "-h"), append(slices.Clone(path), "--help"), append([]string{"help"}, path...))
	}
	for _, args := range lines {
		code, stdout, stderr := runCode(args...)
		if code != exitOK || !strings.Contains(stdout, "Usage:") || stderr != "" {
			t.Errorf("usher %s: exit %d, stdout:\n%s\nstderr:\n%s\nwant help on stdout and exit 0", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	// A group alone is its help.
	for _, group := range []string{"policy", "bench", "roles", "resources", "quotas", "admissions"} {
		if code, stdout, _ := runCode(group); code != exitOK || !strings.Contains(stdout, "usher "+group+" [command]") {
			t.Errorf("usher %s: exit %d, stdout:\n%s", group, code, stdout)
		}
	}
}

// A command's help shows what its flags default to, and USHER_TOKEN is a
// secret: help, which lands in terminals, logs and bug reports, names the
// variable but never shows its value.
func TestHelpDoesNotShowTheTokenOfUSHER_TOKEN(t *testing.T) {
	const secret = "s3cr3t-bearer-token-from-the-environment"
	t.Setenv("USHER_TOKEN", secret)
	checked := 0
	for _, path := range commandPaths(newRoot(), nil) {
		args := append(slices.Clone(path), "--help")
		code, stdout, stderr := runCode(args...)
		if !strings.Contains(stdout, "--token ") {
			continue
		}
		checked++
		if code != exitOK || strings.Contains(stdout+stderr, secret) {
			t.Errorf("usher %s: exit %d, and help shows USHER_TOKEN's value:\n%s", strings.Join(args, " "), code, stdout+stderr)
		}
	}
	if checked == 0 {
		t.Fatal("no command's help shows --token")
	}
}

// A token given on the command line is the one a command sends, whatever
// token file USHER_TOKEN_FILE names: the variable is a default, as every
// USHER_ variable is, and a --token beside it would otherwise be dropped
// without a word, the call made as another caller.
func TestATokenGivenBeatsUSHER_TOKEN_FILE(t *testing.T) {
	sent := make(chan string, 4)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		sent <- strings.Join(metadata.ValueFromIncomingContext(ctx, "authorization"), ", ")
		return nil, status.Error(codes.Unauthenticated, "recorded")
	}))
	usherv1.RegisterAuthorizationServiceServer(srv, usherv1.UnimplementedAuthorizationServiceServer{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("token-of-the-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("USHER_TOKEN_FILE", file)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"USHER_TOKEN_FILE alone", nil, "bearer token-of-the-file"},
		{"--token beside USHER_TOKEN_FILE", []string{"--token", "token-given"}, "bearer token-given"},
		{"--token-file given beside --token", []string{"--token", "token-given", "--token-file", file}, "bearer token-of-the-file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			runCode(append([]string{"revision", "--addr", lis.Addr().String()}, c.args...)...)
			select {
			case got := <-sent:
				if got != c.want {
					t.Errorf("usher revision %s with USHER_TOKEN_FILE set sent authorization %q, want %q", strings.Join(c.args, " "), got, c.want)
				}
			default:
				t.Fatalf("usher revision %s made no call", strings.Join(c.args, " "))
			}
		})
	}
}

// A flag that takes its default from an USHER_ variable says so in its
// help, "(env USHER_NAME)": serve's help tells the reader that flags naming
// a file or a secret may be set by the variable their help names.
func TestEveryFlagReadFromTheEnvironmentNamesItsVariable(t *testing.T) {
	names := map[string]bool{}
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			names["USHER_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))] = true
		})
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
	for name := range names {
		t.Setenv(name, "from-"+name)
	}
	checked := 0
	walk = func(cmd *cobra.Command) {
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			name, ok := strings.CutPrefix(f.DefValue, "from-")
			if !ok {
				return
			}
			checked++
			if !strings.Contains(f.Usage, "(env "+name+")") {
				t.Errorf("%s --%s takes its default from %s, but its help does not name it: %q", cmd.CommandPath(), f.Name, name, f.Usage)
			}
		})
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
	if checked == 0 {
		t.Fatal("no flag took its default from the environment")
	}
}

// A command line usher cannot run says why and how to get help on stderr,
// prints nothing on stdout and exits 2.
func TestUsageErrorsExitTwo(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"nonsense"}, `unknown command "nonsense" for "usher"`},
		{[]string{"chek"}, "did you mean check?"},
		{[]string{"policy", "nonsense"}, `unknown command "nonsense" for "usher policy"`},
		{[]string{"bench", "nonsense"}, `unknown command "nonsense" for "usher bench"`},
		{[]string{"help", "nonsense"}, `unknown command "nonsense" for "usher"`},
		{[]string{"help", "policy", "nonsense"}, `unknown command "nonsense" for "usher policy"`},
		{[]string{"help", "roles", "nonsense"}, `unknown command "nonsense" for "usher roles"`},
		{[]string{"--nonsense"}, "unknown flag: --nonsense"},
		{[]string{"check", "--nonsense", "a", "b", "c"}, "unknown flag: --nonsense"},
		{[]string{"check", "user:dana", "join-call"}, "want 3 arguments (SUBJECT PERMISSION RESOURCE), got 2"},
		{[]string{"policy", "validate"}, "want at least 1 argument (FILE...), got 0"},
		{[]string{"policy", "test", "--run", "("}, "want at least 1 argument (PATH...), got 0"},
		{[]string{"policy", "test", "policy/scenarios", "--run", "("}, `--run "(": error parsing regexp`},
		{[]string{"policy", "apply"}, "want 1 argument (FILE), got 0"},
		{[]string{"policy", "diff", "a.yaml", "b.yaml"}, "want 1 argument (FILE), got 2"},
		{[]string{"policy", "diff", "a.yaml", "--output", "yaml"}, `--output "yaml": want json or table`},
		{[]string{"serve", "--policy-mode", "sometimes"}, `--policy-mode "sometimes": want one of apply, prune, check`},
		{[]string{"restore"}, "want 1 argument (FILE), got 0"},
		{[]string{"version", "extra"}, "want no arguments, got 1"},
		{[]string{"check", "a", "b", "c", "--timeout", "soon"}, `invalid argument "soon" for "--timeout"`},
		{[]string{"check", "a", "b", "c", "--output", "yaml"}, `--output "yaml": want json or table`},
		{[]string{"grant", "a", "b", "c", "--expires", "tomorrow"}, "want an RFC 3339 time"},
		{[]string{"grant", "a", "b", "c", "--expires", "2027-01-01T00:00:00+24:00"}, "want an RFC 3339 time"},
		{[]string{"grant", "a", "b", "c", "--expires", "2030-12-31T23:59:60Z"}, "a leap second (:60) is not taken"},
		{[]string{"check", "a", "b", "c", "--timeout=-1s"}, "--timeout -1s: must not be negative (0: no deadline)"},
		{[]string{"watch", "--timeout=-1s"}, "--timeout -1s: must not be negative (0: no deadline)"},
		{[]string{"list-grants"}, "give --subject, --resource or both"},
		{[]string{"quotas", "put", "root", "call", "many"}, `LIMIT "many": want a whole number`},
		{[]string{"quotas", "put", "root", "call", "4294967296"}, `LIMIT "4294967296": want a whole number from 0 to 4294967295`},
		{[]string{"schedule", "call:x"}, "give TIME, or --clear"},
		{[]string{"completion", "tcsh"}, `invalid argument "tcsh"`},
		{[]string{"migrate"}, "give --from FILE and --to-etcd ENDPOINTS"},
		{[]string{"check", "a", "b", "c", "--addr", "usher.internal:7070", "--token", "secret"}, "--addr usher.internal:7070 is not a loopback address"},
		{[]string{"revision", "--addr", "10.0.0.7:7070"}, "give --tls or --tls-ca, or --insecure"},
		{[]string{"revision", "--addr", "usher.internal:7070", "--insecure", "--tls"}, "--insecure with TLS: give one"},
	} {
		code, stdout, stderr := runCode(c.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, c.says) || !strings.Contains(stderr, "--help' for usage.") {
			t.Errorf("usher %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q", strings.Join(c.args, " "), code, stdout, stderr, c.says)
		}
	}
}

// Flags go before, between or after the arguments; the Go flag package's
// one-dash spelling of long flags still works.
func TestFlagsAnywhere(t *testing.T) {
	root := newRoot()
	for _, c := range []struct{ in, want []string }{
		{[]string{"check", "-addr", "h:1", "a", "b", "c"}, []string{"check", "--addr", "h:1", "a", "b", "c"}},
		{[]string{"check", "a", "-timeout=2s", "b", "c"}, []string{"check", "a", "--timeout=2s", "b", "c"}},
		{[]string{"serve", "-v", "-data", "x.db"}, []string{"serve", "-v", "--data", "x.db"}},
		// The value of a flag is never taken for one.
		{[]string{"changes", "--subject", "-data"}, []string{"changes", "--subject", "-data"}},
		{[]string{"check", "--", "-addr", "b", "c"}, []string{"check", "--", "-addr", "b", "c"}},
	} {
		if got := goFlagSpelling(root, c.in); !slices.Equal(got, c.want) {
			t.Errorf("goFlagSpelling(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// restore FILE --data PATH, as the README writes it, and the other way
	// round: both reach the file and refuse it for what it is.
	dir := t.TempDir()
	notABackup := filepath.Join(dir, "not-a-backup.db")
	os.WriteFile(notABackup, []byte("hello"), 0o600)
	data := filepath.Join(dir, "usher.db")
	for _, args := range [][]string{{"restore", notABackup, "--data", data}, {"restore", "--data", data, notABackup}, {"restore", "-data", data, notABackup}} {
		code, _, stderr := runCode(args...)
		if code != exitError || !strings.Contains(stderr, notABackup+": not an Usher backup") {
			t.Errorf("usher %s: exit %d, stderr:\n%s\nwant the backup refused", strings.Join(args, " "), code, stderr)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "__start_usher",
		"zsh":        "#compdef usher",
		"fish":       "complete -c usher",
		"powershell": "Register-ArgumentCompleter",
	} {
		code, stdout, stderr := runCode("completion", shell)
		if code != exitOK || !strings.Contains(stdout, marker) || stderr != "" {
			t.Errorf("usher completion %s: exit %d, stderr %q, script without %q", shell, code, stderr, marker)
		}
	}
	// The scripts ask the binary: it completes commands and flag values.
	code, stdout, _ := runCode("__complete", "rol")
	if code != exitOK || !strings.Contains(stdout, "roles") {
		t.Errorf("completing rol: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCode("__complete", "check", "--output", "")
	if code != exitOK || !strings.Contains(stdout, "json") || !strings.Contains(stdout, "table") {
		t.Errorf("completing --output: exit %d\n%s", code, stdout)
	}
}

// cliAgainst returns a function that runs the binary's client commands
// against addr, with --addr last, after the arguments.
func cliAgainst(t *testing.T, bin, addr string) func(args ...string) (code int, stdout, stderr string) {
	return func(args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--addr", addr)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("usher %s: %v", strings.Join(args, " "), err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
}

// usher check exits 0 when allowed, 3 when denied with the decision on
// stdout, and 1 with the status on stderr and nothing on stdout when the
// call fails.
func TestCheckExitCodes(t *testing.T) {
	bin, addr := startBinary(t)
	usher := cliAgainst(t, bin, addr)
	code, stdout, stderr := usher("check", "user:dana", "join-call", "root")
	if code != exitDenied || !strings.Contains(stdout, `"reason": "REASON_NO_GRANT"`) || stderr != "" {
		t.Errorf("a denied check: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 3 and the decision", code, stdout, stderr)
	}
	if code, _, stderr := usher("grant", "user:dana", "host", "root"); code != exitOK {
		t.Fatalf("grant: exit %d\n%s", code, stderr)
	}
	if code, stdout, _ := usher("check", "user:dana", "join-call", "root"); code != exitOK || !strings.Contains(stdout, `"allowed": true`) {
		t.Errorf("an allowed check: exit %d, stdout:\n%s", code, stdout)
	}
	code, stdout, stderr = usher("check", "user:dana", "join-cal", "root")
	if code != exitError || stdout != "" || !strings.Contains(stderr, "usher check: InvalidArgument: ") ||
		!strings.Contains(stderr, "reason UNDECLARED_PERMISSION (domain usher.v1)") || !strings.Contains(stderr, `field="permission"`) {
		t.Errorf("a check of an undeclared permission: exit %d, stdout %q, stderr:\n%s\nwant exit 1, the code and the details on stderr", code, stdout, stderr)
	}
	code, stdout, stderr = usher("grant", "user:dana", "no-such-role", "root")
	if code != exitError || stdout != "" || !strings.Contains(stderr, "usher grant: NotFound: ") || !strings.Contains(stderr, "reason ROLE_NOT_FOUND") {
		t.Errorf("a grant of an undefined role: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	// A server out of reach is an error too, not a denial.
	code, stdout, stderr = cliAgainst(t, bin, "127.0.0.1:1")("check", "user:dana", "join-call", "root", "--timeout", "2s")
	if code != exitError || stdout != "" || !strings.Contains(stderr, "Unavailable") {
		t.Errorf("a check of a server out of reach: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

// tableRows splits a table into its rows' cells.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

// The README's command line section, against a fresh server: each command
// run as written, with usher on the PATH and USHER_ADDR set.
func TestREADMECommandLine(t *testing.T) {
	steps := readmeSteps(t, "cli")
	bin, addr := startBinary(t)
	for i, s := range steps {
		if !strings.HasPrefix(s.command, "usher ") {
			t.Fatalf("step %d: %q is not a usher command", i+1, s.command)
		}
		cmd := exec.Command("sh", "-c", s.command)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"), "USHER_ADDR="+addr)
		out, err := cmd.CombinedOutput()
		got := strings.TrimSpace(string(out))
		if s.checked && !matches(got, s.want) || !s.checked && err != nil {
			t.Fatalf("step %d: %s\nexit %v, got:\n%s\nwant (README):\n%s", i+1, s.command, err, got, s.want)
		}
	}
}

func TestOutputTable(t *testing.T) {
	bin, addr := startBinary(t)
	usher := cliAgainst(t, bin, addr)
	for _, args := range [][]string{
		{"resources", "put", "account:acme"},
		{"grant", "user:dana", "host", "account:acme", "--expires", "2099-01-01T00:00:00Z"},
		{"grant", "user:eve", "user", "account:acme"},
	} {
		if code, _, stderr := usher(args...); code != exitOK {
			t.Fatalf("usher %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	// One answer: a field a line.
	_, stdout, _ := usher("check", "user:dana", "join-call", "account:acme", "-o", "table")
	want := [][]string{{"allowed", "true"}, {"reason", "GRANTED"}, {"role", "host"}, {"scope", "account:acme"}, {"revision", "4"}}
	if got := tableRows(stdout); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("check --output table:\n%s\nwant rows %q", stdout, want)
	}
	// A list: a header, then a row per entry, with the columns any sets.
	_, stdout, _ = usher("list-grants", "--resource", "account:acme", "--output", "table")
	want = [][]string{{"SUBJECT", "ROLE", "RESOURCE", "EXPIRE_TIME"}, {"user:dana", "host", "account:acme", "2099-01-01T00:00:00Z"}, {"user:eve", "user", "account:acme"}}
	if got := tableRows(stdout); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("list-grants --output table:\n%s\nwant rows %q", stdout, want)
	}
	// A number of 0 is a value: a limit of 0 shown as no cell, or no
	// column, would read as no limit.
	if code, _, stderr := usher("quotas", "put", "account:acme", "room", "0"); code != exitOK {
		t.Fatalf("usher quotas put: exit %d\n%s", code, stderr)
	}
	_, stdout, _ = usher("quotas", "list", "account:acme", "--output", "table")
	want = [][]string{{"SCOPE", "RESOURCE_TYPE", "LIMIT", "USED"}, {"account:acme", "room", "0", "0"}}
	if got := tableRows(stdout); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("quotas list --output table:\n%s\nwant rows %q", stdout, want)
	}
	// A max_holders of 0 is no limit: shown as 0, it would read as a role
	// no one may hold.
	_, stdout, _ = usher("roles", "list", "account:acme", "--output", "table")
	if rows := tableRows(stdout); len(rows) < 2 || slices.Contains(rows[0], "MAX_HOLDERS") {
		t.Errorf("roles list --output table, where no role has max_holders:\n%s\nwant no MAX_HOLDERS column", stdout)
	}
	_, stdout, _ = usher("changes", "--subject", "user:eve", "--output", "table")
	rows := tableRows(stdout)
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"REVISION", "TIME", "WHO", "CHANGES"}) || rows[1][0] != "4" ||
		rows[1][2] != "anonymous" || !strings.HasPrefix(rows[1][3], `put_grant {"subject":"user:eve"`) {
		t.Errorf("changes --output table:\n%s", stdout)
	}
	// JSON is protojson: the same answer, parsed.
	_, stdout, _ = usher("list-grants", "--resource", "account:acme")
	var grants struct{ Grants []map[string]any }
	if err := json.Unmarshal([]byte(stdout), &grants); err != nil || len(grants.Grants) != 2 {
		t.Errorf("list-grants: %v\n%s", err, stdout)
	}
}
