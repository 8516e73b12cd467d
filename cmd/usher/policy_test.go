package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// ownPolicy is a platform's policy that shares nothing with the default
// one but the reserved permission usher.grants.write.
const ownPolicy = `# A room platform.
permissions:
  - name: room.manage
  - {name: room.join, parents: [room.manage]}
  - {name: usher.grants.write, parents: [room.manage]}
resources:
  - {name: tenant:acme}
roles:
  - {name: member, scope: root, permissions: [room.join], bindable_on: [room]}
  - {name: manager, scope: root, permissions: [room.manage], assignable_roles: [member]}
creator_roles:
  - {resource_type: room, role: manager}
`

// runBinary runs the binary, returning its combined output and exit code.
func runBinary(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantLines(t *testing.T, what, out string, code, wantCode int, lines ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: exit %d, want %d; output:\n%s", what, code, wantCode, out)
	}
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("%s: output lacks %q:\n%s", what, l, out)
		}
	}
}

func TestPolicyValidateReportsEveryFinding(t *testing.T) {
	bin, dir := buildUsher(t)
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), `permissions:
  - name: call.manage
  - {name: join-call, parents: [call.manag]}
roles:
  - name: host
    scope: root
    permisions: [call.manage]
    assignable_roles: [guets]
  - {name: guest, scope: root, permissions: [join-call], bindable_on: [cal]}
creator_roles:
  - {resource_type: call, role: hots}
`)
	out, code := runBinary(t, bin, "policy", "validate", bad)
	wantLines(t, "validate", out, code, exitError,
		bad+`:3:33: permissions[1].parents[0]: "call.manag": parent is not declared in the policy (did you mean "call.manage"?)`,
		bad+`:7:5: roles[0].permisions: unknown field "permisions" (did you mean "permissions"?)`,
		bad+`:8:24: roles[0].assignable_roles[0]: "guets": role is not defined in the policy (did you mean "guest"?)`,
		bad+`:9:72: warning: roles[1].bindable_on[0]: "cal": nothing else in the policy names this resource type; did you mean "call"?`,
		bad+`:11:33: creator_roles[0].role: "hots": role is not defined in the policy (did you mean "host"?)`,
		bad+`: 4 errors, 1 warning`,
		"1 of 1 policies are invalid")

	warned := writeFile(t, filepath.Join(dir, "warned.yaml"), "permissions: [{name: a}]\nroles: [{name: r, scope: account:acme, permissions: [a]}]\n")
	out, code = runBinary(t, bin, "policy", "validate", warned, "default")
	wantLines(t, "validate with a warning", out, code, exitOK,
		warned+`:2:26: warning: roles[0].scope: "account:acme": resource is not listed in the policy; applying the policy needs it registered already`,
		warned+": valid, 1 warning", "default: valid")
	out, code = runBinary(t, bin, "policy", "validate", "--strict", warned)
	wantLines(t, "validate --strict with a warning", out, code, exitError, "1 of 1 policies are invalid")

	// Within every list's bound, but more bytes than a request to the
	// server holds: apply could not send it.
	var big strings.Builder
	big.WriteString("permissions: [{name: a}]\nresources:\n")
	for i := range 30_000 {
		fmt.Fprintf(&big, "  - {name: \"room:%s-%06d\"}\n", strings.Repeat("x", 140), i)
	}
	large := writeFile(t, filepath.Join(dir, "large.yaml"), big.String())
	out, code = runBinary(t, bin, "policy", "validate", large)
	wantLines(t, "validate of a policy larger than a request", out, code, exitError,
		"bytes encoded, and a request to the server holds at most 4194304: split the policy", large+": 1 error")
}

// The default policy replaced by one's own in one step, against a running
// server: refused without --prune, saying why; refused while a grant holds
// a default role, naming it; then done, printing what changed.
func TestPolicyApplyReplacesTheDefaultPolicy(t *testing.T) {
	bin, dir := buildUsher(t)
	srv := serveOn(t, bin, filepath.Join(dir, "usher.db"))
	mine := writeFile(t, filepath.Join(dir, "mine.yaml"), ownPolicy)
	usher := func(args ...string) (string, int) {
		t.Helper()
		words := 1
		if args[0] == "policy" {
			words = 2
		}
		return runBinary(t, bin, append(append(args[:words:words], "--addr", srv.addr), args[words:]...)...)
	}

	out, code := usher("policy", "apply", mine)
	wantLines(t, "apply without --prune", out, code, exitError,
		"usher policy apply: "+mine+`:3:3: permissions: "join-call": permission is missing from the policy but named by join_permission of the admission rule for call at "root"`,
		"hint: definitions the file does not list still name that permission; --prune removes", "nothing applied")

	if out, code := usher("grant", "user:ann", "host", "root"); code != exitOK {
		t.Fatal(out)
	}
	out, code = usher("policy", "apply", "--prune", mine)
	wantLines(t, "apply --prune while a default role is held", out, code, exitError,
		`roles: "host": the policy would leave 1 grant with no definition of their role: "host", held by user:ann on root`,
		"hint: revoke those grants, or keep their roles in the file")
	if out, code := usher("revoke", "user:ann", "host", "root"); code != exitOK {
		t.Fatal(out)
	}

	// As JSON, the server's answer; as a table, a line per definition.
	out, code = usher("policy", "apply", "--prune", "--dry-run", mine)
	wantLines(t, "apply --prune --dry-run", out, code, exitOK, `"revision": "3"`, `"changes": [`, `"op": "OP_DELETE_ROLE"`)
	if strings.Contains(out, `"changed": true`) {
		t.Errorf("a dry run says it changed the policy:\n%s", out)
	}
	out, code = usher("policy", "apply", "--prune", "--dry-run", mine, "--output", "table")
	wantLines(t, "apply --prune --dry-run --output table", out, code, exitOK,
		"+ permission room.manage\n", "~ permission usher.grants.write\n", "- permission join-call\n",
		"+ resource tenant:acme\n", "+ role member at root\n", "- role host at root\n",
		"+ creator role for room\n", "- creator role for call\n", "- admission rule for call at root\n",
		"dry run: ", "nothing written (revision 3)")
	if out, _ := usher("policy", "export"); !strings.Contains(out, `"name": "host"`) {
		t.Fatalf("a dry run wrote: export\n%s", out)
	}
	out, code = usher("policy", "diff", mine)
	wantLines(t, "diff", out, code, exitOK,
		`"change": "removed",
      "kind": "role",
      "name": "host at root",`, `"pruneOnly": true`)

	out, code = usher("policy", "apply", "--prune", "--diff", mine, "-o", "table")
	wantLines(t, "apply --prune --diff", out, code, exitOK,
		"~ permission usher.grants.write\n    parents: +room.manage -update-call-permissions\n",
		"+ role manager at root\n    permissions: [room.manage]\n    assignable_roles: [member]\n",
		"changed: true, ", "(revision 4)")

	out, code = usher("policy", "apply", mine, "-o", "table")
	wantLines(t, "apply again", out, code, exitOK, "changed: false (revision 4)")
	if strings.Count(out, "\n") != 1 {
		t.Errorf("an unchanged apply prints more than its verdict:\n%s", out)
	}
	out, code = usher("policy", "diff", mine, "--output", "table")
	wantLines(t, "diff after apply", out, code, exitOK, "no differences: the file is in force")
	out, code = usher("policy", "diff", mine)
	wantLines(t, "diff after apply as JSON", out, code, exitOK, `"differences": []`)

	// A change to one role shows as one.
	changed := writeFile(t, filepath.Join(dir, "changed.yaml"), strings.Replace(ownPolicy, "permissions: [room.join], bindable_on", "permissions: [room.join, room.manage], bindable_on", 1))
	out, code = usher("policy", "apply", "--diff", changed, "-o", "table")
	wantLines(t, "apply of one changed role", out, code, exitOK, "~ role member at root\n    permissions: +room.manage\nchanged: true, 1 change (revision 5)\n")
}

// A server started with --policy on a data file whose policy the file cannot
// be applied to refuses to start, saying what differs and what to do, and
// leaves the file as it was; --policy-mode=prune replaces the policy, and
// --policy-mode=check starts only on the policy in force.
func TestServeRefusesAMismatchedPolicy(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	mine := writeFile(t, filepath.Join(dir, "mine.yaml"), ownPolicy)
	first := serveOn(t, bin, data) // the default policy
	if err, _ := first.stop(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	before := checkFile(t, data)

	serve := func(args ...string) (string, int) {
		t.Helper()
		return runBinary(t, bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data}, args...)...)
	}
	out, code := serve("--policy", mine)
	wantLines(t, "serve --policy on the default's data", out, code, exitError,
		"usher serve: --policy "+mine+" cannot be applied to the data:\n"+mine+`:3:3: permissions: "join-call": permission is missing from the policy`,
		"What differs (+ only in the file, - only in the data, ~ changed):\n",
		"  + permission room.manage\n", "  - permission join-call\n", "  - role host at root (with --prune)\n",
		"  ~ permission usher.grants.write\n      parents: +room.manage -update-call-permissions\n",
		"The data is untouched. To replace the policy in force with the file", "--policy-mode=prune")
	if strings.Contains(out, "serving gRPC") {
		t.Error("the server served")
	}
	if after := checkFile(t, data); after != before {
		t.Errorf("a refused start wrote to the data file: revision %d -> %d", before, after)
	}

	out, code = serve("--policy", mine, "--policy-mode", "check")
	wantLines(t, "serve --policy-mode=check", out, code, exitError, "cannot be applied to the data", "start with --policy-mode=apply")
	// An invalid file stops the server before it opens its data: a fresh
	// data file is not created.
	invalid := writeFile(t, filepath.Join(dir, "invalid.yaml"), "permissions: [{name: a}]\nroles: [{name: r, scope: root, permissions: [b]}]\n")
	fresh := filepath.Join(dir, "fresh", "usher.db")
	out, code = runBinary(t, bin, "serve", "--addr", "127.0.0.1:0", "--data", fresh, "--policy", invalid)
	wantLines(t, "serve --policy of an invalid file", out, code, exitError, "--policy "+invalid+":2:")
	if _, err := os.Stat(filepath.Dir(fresh)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused start made %s: %v", filepath.Dir(fresh), err)
	}
	out, code = serve("--policy", mine, "--policy-mode", "sometimes")
	wantLines(t, "serve --policy-mode=sometimes", out, code, exitUsage, `--policy-mode "sometimes": want one of apply, prune, check`)

	replaced := serveOn(t, bin, data, "--policy", mine, "--policy-mode", "prune")
	// Stopped first: its stderr is read whole only once it has exited.
	if err, _ := replaced.stop(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(replaced.stderr.String(), `msg="policy change" policy=`+mine+` change="- role host at root"`) {
		t.Errorf("the replacement is not logged change by change:\n%s", replaced.stderr)
	}
	checked := serveOn(t, bin, data, "--policy", mine, "--policy-mode", "check")
	if checked.revision != replaced.revision {
		t.Errorf("check mode on the policy in force wrote: revision %d -> %d", replaced.revision, checked.revision)
	}
	if err, _ := checked.stop(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	changed := writeFile(t, filepath.Join(dir, "changed.yaml"), strings.Replace(ownPolicy, "bindable_on: [room]", "bindable_on: [room, tenant]", 1))
	out, code = serve("--policy", changed, "--policy-mode", "check")
	wantLines(t, "check mode on a changed policy", out, code, exitError,
		"--policy "+changed+" is not the policy in force (--policy-mode=check)", "  ~ role member at root\n      bindable_on: +tenant\n")
}

// A policy larger than one etcd transaction may be is refused at start-up
// with the limit to raise, not with advice about --policy-mode, which
// would be refused again.
func TestServeRefusesAPolicyTooLargeForEtcdNamingTheLimit(t *testing.T) {
	c := etcdtest.Start(t, 1)
	code, _, stderr := runCode("serve", "--addr", "127.0.0.1:0", "--etcd", strings.Join(c.Endpoints(), ","),
		"--etcd-prefix", "/too-large-policy/", "--etcd-max-txn-ops", "16", "--policy", "default")
	wantLines(t, "serve --policy default over --etcd-max-txn-ops 16", stderr, code, exitError,
		"--policy default cannot be applied to the data:", "raise etcd's --max-txn-ops", "Raise the limit named above")
	for _, wrong := range []string{"--policy-mode", "serving gRPC"} {
		if strings.Contains(stderr, wrong) {
			t.Errorf("the refusal says %q:\n%s", wrong, stderr)
		}
	}
}

// usher policy test takes directories, --run and --junit.
func TestPolicyTestDirectoriesRunAndJUnit(t *testing.T) {
	bin, dir := buildUsher(t)
	suite := filepath.Join(dir, "scenarios")
	writeFile(t, filepath.Join(suite, "rooms.yaml"), `policy: rooms-policy.yaml
steps:
  - register: {name: tenant:acme}
  - grant: {subject: user:ann, role: manager, resource: tenant:acme}
  - quote: a manager joins the tenant's rooms
    check: {subject: user:ann, permission: room.join, resource: tenant:acme}
    allowed: true
  - quote: a manager may not make a manager
    grant: {subject: user:bo, role: manager, resource: tenant:acme, actor: user:ann}
    refused: PERMISSION_DENIED
`)
	writeFile(t, filepath.Join(suite, "rooms-policy.yaml"), strings.Replace(ownPolicy, "resources:\n  - {name: tenant:acme}\n", "", 1))
	writeFile(t, filepath.Join(suite, "more", "broken.yaml"), `policy: default
steps:
  - register: {name: account:acme}
  - grant: {subject: user:ann, role: ownr, resource: account:acme}
  - quote: an owner ends calls
    check: {subject: user:ann, permission: end-call, resource: account:acme}
    allowed: true
  - quote: an owner reads calls
    check: {subject: user:ann, permission: read-call, resource: account:acme}
    allowed: true
`)
	report := filepath.Join(dir, "report.xml")

	out, code := runBinary(t, bin, "policy", "test", suite, "--junit", report)
	wantLines(t, "policy test DIR", out, code, exitError,
		filepath.Join(suite, "more", "broken.yaml")+`:4: grant user:ann ownr on account:acme: role "ownr"`,
		filepath.Join(suite, "more", "broken.yaml")+": 2 expectations not run after the failed setup step",
		"2 passed, 1 failed, 2 not run")
	if strings.Contains(out, "an owner ends calls") {
		t.Errorf("an expectation after the failed setup step was reported as failing:\n%s", out)
	}
	var r struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Skipped  int `xml:"skipped,attr"`
		Suites   []struct {
			Name  string `xml:"name,attr"`
			Cases []struct {
				Name string `xml:"name,attr"`
				Line int    `xml:"line,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, &r); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if r.Tests != 5 || r.Failures != 0 || r.Errors != 1 || r.Skipped != 2 || len(r.Suites) != 2 ||
		r.Suites[1].Name != filepath.Join(suite, "rooms.yaml") || r.Suites[1].Cases[1].Name != "a manager may not make a manager" || r.Suites[1].Cases[1].Line != 8 {
		t.Errorf("JUnit report:\n%s", data)
	}

	out, code = runBinary(t, bin, "policy", "test", "--run", "rooms/make a manager", suite)
	wantLines(t, "--run FILE/STEP", out, code, exitOK, "1 passed, 0 failed")
	out, code = runBinary(t, bin, "policy", "test", suite, "--run", "joins")
	wantLines(t, "--run STEP", out, code, exitOK, "1 passed, 0 failed")
	out, code = runBinary(t, bin, "policy", "test", suite, "--run", "reads calls")
	wantLines(t, "--run selecting an expectation after a failed setup step", out, code, exitError, "0 passed, 1 failed, 1 not run")
	out, code = runBinary(t, bin, "policy", "test", suite, "--run", "nothing like this")
	wantLines(t, "--run matching nothing", out, code, exitError, `no expectation matches --run "nothing like this"`)
	out, code = runBinary(t, bin, "policy", "test", suite, "--run", "rooms/(")
	wantLines(t, "--run that is no regular expression", out, code, exitUsage, `--run "rooms/(": error parsing regexp`)
}

// A diff, or an apply printed as a table, that cannot read the policy in
// force says so and prints nothing on stdout.
func TestPolicyDiffWithoutAServerSaysWhatItCouldNotRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{
		{"policy", "diff", "default", "--addr", addr},
		{"policy", "apply", "default", "--addr", addr, "--output", "table"},
	} {
		code, stdout, stderr := runCode(args...)
		if code != exitError || stdout != "" || !strings.Contains(stderr, "reading the policy in force: ") {
			t.Errorf("usher %s: exit %d, stdout %q, stderr:\n%s\nwant exit %d and the policy in force unread",
				strings.Join(args, " "), code, stdout, stderr, exitError)
		}
	}
}

// A refusal that names no field of the file says its gRPC code, as every
// command's refusal does.
func TestPolicyApplyRefusedNamingNoFieldSaysItsCode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, stdout, stderr := runCode("policy", "apply", "default", "--addr", addr)
	if code != exitError || stdout != "" || !strings.Contains(stderr, "usher policy apply: default: Unavailable: ") ||
		!strings.HasSuffix(stderr, "\nnothing applied\n") {
		t.Errorf("usher policy apply with no server: exit %d, stdout %q, stderr:\n%s\nwant exit %d and the code", code, stdout, stderr, exitError)
	}
}

// silentAdmin reads an empty policy in force and never answers ApplyPolicy:
// a server that took the request and went away, or is slower than the
// caller's deadline.
type silentAdmin struct {
	usherv1.UnimplementedAdminServiceServer
}

func (silentAdmin) ExportPolicy(context.Context, *usherv1.ExportPolicyRequest) (*usherv1.ExportPolicyResponse, error) {
	return &usherv1.ExportPolicyResponse{Policy: &usherv1.Policy{}}, nil
}

func (silentAdmin) ApplyPolicy(ctx context.Context, _ *usherv1.ApplyPolicyRequest) (*usherv1.ApplyPolicyResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// An apply that reached the server and got no answer may have been
// committed: the command says so, and how to see, where it says "nothing
// applied" of a refusal.
func TestPolicyApplyUnansweredMayHaveApplied(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	usherv1.RegisterAdminServiceServer(srv, silentAdmin{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	addr := ln.Addr().String()

	code, stdout, stderr := runCode("policy", "apply", "default", "--addr", addr, "--timeout", "300ms")
	if code != exitError || stdout != "" || !strings.Contains(stderr, "usher policy apply: default: DeadlineExceeded: ") ||
		!strings.HasSuffix(stderr, "\nno answer came back, so the server may have applied it: 'usher policy diff default' shows what is in force\n") ||
		strings.Contains(stderr, "nothing applied") {
		t.Errorf("usher policy apply unanswered: exit %d, stdout %q, stderr:\n%s\nwant exit %d, and not \"nothing applied\"", code, stdout, stderr, exitError)
	}
	// A dry run writes nothing, answered or not.
	code, _, stderr = runCode("policy", "apply", "default", "--dry-run", "--addr", addr, "--timeout", "300ms")
	if code != exitError || !strings.HasSuffix(stderr, "\nnothing applied\n") {
		t.Errorf("usher policy apply --dry-run unanswered: exit %d, stderr:\n%s\nwant \"nothing applied\"", code, stderr)
	}
}

// A quota the server holds, which the file's resources would exceed, is
// refused at the file's line of such a resource.
func TestPolicyApplyPastAQuotaNamesTheFilesLine(t *testing.T) {
	bin, dir := buildUsher(t)
	mine := writeFile(t, filepath.Join(dir, "mine.yaml"), ownPolicy)
	srv := serveOn(t, bin, filepath.Join(dir, "usher.db"), "--policy", mine)
	usher := func(args ...string) (string, int) {
		t.Helper()
		return runBinary(t, bin, append(append(args[:2:2], "--addr", srv.addr), args[2:]...)...)
	}
	if out, code := usher("quotas", "put", "tenant:acme", "room", "0"); code != exitOK {
		t.Fatal(out)
	}
	rooms := writeFile(t, filepath.Join(dir, "rooms.yaml"), strings.Replace(ownPolicy,
		"  - {name: tenant:acme}\n", "  - {name: tenant:acme}\n  - {name: room:lobby, parent: tenant:acme}\n", 1))
	out, code := usher("policy", "apply", rooms)
	wantLines(t, "apply past a quota", out, code, exitError,
		"usher policy apply: "+rooms+`:8:5: resources[1]: "tenant:acme/room": the policy would put 1 room resources below "tenant:acme", where at most 0 may exist`,
		"nothing applied")
}
