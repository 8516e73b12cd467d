package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
)

func policyCommand() *cobra.Command {
	return group("policy", "List, validate, test, diff, apply and export policies",
		`Policy works with policy files: the permission catalog, resources, roles,
quotas and admission rules of a platform, in YAML or JSON. Wherever a
command takes a policy file, it also takes the name of a shipped policy
(see 'usher policy list').

Validate and test need no server. Diff, apply and export are clients of a
running one: apply makes the server's policy the file's, printing what
changed, and diff prints what applying it would change.`,
		`  usher policy validate policy.yaml
  usher policy test policy/scenarios
  usher policy diff policy.yaml --output table
  usher policy apply --prune --dry-run policy.yaml --output table`,
		policyListCommand(), policyValidateCommand(), policyTestCommand(),
		policyDiffCommand(), policyApplyCommand(), policyExportCommand())
}

func policyListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the policies shipped in the binary",
		Long:    "List prints the name and description of each policy shipped in the binary, which serve --policy, apply and scenario files take by name.",
		Example: `  usher policy list`,
		Args:    argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, name := range policy.Shipped() {
				fmt.Fprintf(cmd.OutOrStdout(), "%-12s %s\n", name, policy.Describe(name))
			}
			return nil
		},
	}
}

func policyValidateCommand() *cobra.Command {
	strict := false
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policy files without a server: every error and warning, at its line",
		Long: `Validate checks policy files without a server and prints every finding at
once, each at its line and column in the file, as
FILE:LINE:COLUMN: PATH: MESSAGE, then a line per file: "FILE: valid", or
its count of errors and warnings.

The proto is the schema: an unknown field, a list where one value belongs or
a number out of range is an error at that field. Then every reference the
policy makes to itself is checked (parents, roles' permissions, assignable
and creator roles, admission rules), and the file is applied to an empty
in-memory server. Warnings are what may be right on a server but cannot be
known from the file: a scope the policy does not list, a resource type a
letter or two from one the policy names.

It exits 1 when any file has an error; warnings fail it only with --strict.`,
		Example: `  usher policy validate policy.yaml
  usher policy validate policy/policies/*.yaml --strict`,
		Args: argsBetween(1, -1, "FILE..."),
		RunE: func(cmd *cobra.Command, files []string) error {
			return validatePolicies(cmd.OutOrStdout(), files, strict)
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "fail on warnings too")
	return cmd
}

func policyTestCommand() *cobra.Command {
	var run, junit string
	cmd := &cobra.Command{
		Use:   "test PATH...",
		Short: "Run scenario files without a server",
		Long: `Test replays scenario files against an in-memory server on the policy each
names. A PATH that is a directory stands for every scenario file below it.
It prints a line per failing expectation with its file and line, a line per
file whose setup failed (the expectations after a failed setup step are not
run, rather than each failing for the same reason), and a summary. It exits
1 when any expectation failed or was not run.

--run selects expectations as 'go test -run' does: FILE/STEP, two regular
expressions, FILE matched against scenario file names (without directory or
extension), STEP against an expectation's quote or what it does; without a
slash, either may match. The setup steps still run.`,
		Example: `  usher policy test policy/scenarios
  usher policy test policy/scenarios --run 'vancast/Manager'
  usher policy test policy/scenarios --junit report.xml`,
		Args: argsBetween(1, -1, "PATH..."),
		RunE: func(cmd *cobra.Command, paths []string) error {
			pattern, err := scenario.ParsePattern(run)
			if err != nil {
				return &usageError{err}
			}
			return testScenarios(cmd.OutOrStdout(), paths, pattern, run, junit)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&run, "run", "", "run only the expectations matching `PATTERN`: FILE/STEP, each a regular expression")
	fs.StringVar(&junit, "junit", "", "also write the results as JUnit XML to `FILE`")
	return cmd
}

// applyOptions are the flags of usher policy apply.
type applyOptions struct {
	dryRun, diff, prune bool
}

func policyApplyCommand() *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Make a running server's policy a file's, printing what changed",
		Long: `Apply validates the policy FILE (or the shipped policy of that name) as
'usher policy validate' does, then makes the running server's policy the
file's in one transaction. The permission catalog becomes exactly the
file's, and its resources, roles, creator roles, quotas, default quotas and
admission rules are put; without --prune what the file does not list is
left alone. --prune also removes what the file does not list: creator roles,
default quotas, and the roles, quotas and admission rules on root and on the
resources the file lists, but for a quota of a type the file's default quotas
give its resource's type, whatever its limit. A role still held is never
removed: the apply is refused, naming the grants that hold it.

It prints the server's answer: the revision, whether anything changed, and
the changes. With --output table, it prints a line per definition (+ added,
~ changed, - removed; with --diff, the fields below each), then
"changed: true" or "changed: false" and the revision, or with --dry-run
"dry run: N changes, nothing written". A refusal is printed at the file's line,
with what to do about it, and exits 1; nothing is applied.`,
		Example: `  usher policy apply policy.yaml --output table
  usher policy apply --prune --dry-run --diff policy.yaml -o table
  usher policy apply livebox --addr usher.internal:7070 --tls-ca ca.crt`,
		Args: argsExactly("FILE"),
	}
	c := addClientFlags(cmd, callTimeout)
	fs := cmd.Flags()
	fs.BoolVar(&o.dryRun, "dry-run", false, "plan the changes and print them, writing nothing")
	fs.BoolVar(&o.diff, "diff", false, "with --output table, also print the fields that change below each definition")
	fs.BoolVar(&o.prune, "prune", false,
		"also remove what the file does not list: creator roles, default quotas, and the roles, quotas and admission rules on root and on the file's resources")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		var before *usherv1.Policy
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			var resp *usherv1.ApplyPolicyResponse
			var err error
			before, resp, err = applyFile(ctx, admin(conn), a[0], o, c.output == "table", cmd.ErrOrStderr())
			if err != nil {
				return nil, err
			}
			return resp, nil
		}, func(w io.Writer, m proto.Message) {
			writeApplied(w, before, m.(*usherv1.ApplyPolicyResponse), o.diff)
		})
	}
	return cmd
}

func policyDiffCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff FILE",
		Short: "Print what applying a policy file would change on a running server",
		Long: `Diff validates the policy FILE as 'usher policy validate' does and prints
what applying it with --prune would change on the running server, with every
field, even where applying it would be refused. Removals that only --prune
makes say so. It reads the policy in force from ExportPolicy, stopping once
it has seen the resources the file names, and writes nothing.

As JSON, the differences are a list of entries, each with its change
(added, changed or removed), kind, name and fields; with --output table, a
line per definition (+ only in the file, - only on the server, ~ changed)
with its fields below it, or "no differences: the file is in force".`,
		Example: `  usher policy diff policy.yaml --output table
  usher policy diff livebox --addr usher.internal:7070 --tls-ca ca.crt`,
		Args: argsExactly("FILE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		return c.session(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
			doc, err := loadValid(a[0], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			before, err := inForce(ctx, admin(conn), doc)
			if err != nil {
				return err
			}
			entries := policy.Diff(before, doc.Policy)
			if !p.table {
				return writeDiffJSON(p.w, entries)
			}
			policy.Render(p.w, entries, policy.AllFields)
			if len(entries) == 0 {
				fmt.Fprintln(p.w, "no differences: the file is in force")
			}
			return nil
		})
	}
	return cmd
}

func policyExportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Print a running server's policy",
		Long: `Export prints the running server's policy, every page merged into one: the
catalog, resources, roles, quotas and admission rules. Applied to an empty
store, it rebuilds them; as JSON it is a policy file.`,
		Example: `  usher policy export > policy.json`,
		Args:    argsExactly(),
	}
	c := addClientFlags(cmd, callTimeout)
	var minRevision uint64
	minRevisionFlag(cmd, &minRevision)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return export(ctx, conn, minRevision)
		}, nil)
	}
	return cmd
}

// validatePolicies checks policy files without a server and prints every
// finding, FILE:LINE:COLUMN: PATH: MESSAGE, then a line per file. Warnings
// fail the run only when strict.
func validatePolicies(out io.Writer, files []string, strict bool) error {
	failed := 0
	for _, file := range files {
		_, diags, err := validatePolicy(file)
		if err != nil {
			fmt.Fprintf(out, "%s: %v\n", file, err)
			failed++
			continue
		}
		for _, d := range diags.Sorted() {
			fmt.Fprintln(out, d)
		}
		switch {
		case len(diags) == 0:
			fmt.Fprintf(out, "%s: valid\n", file)
		case diags.Errors() == 0:
			fmt.Fprintf(out, "%s: valid, %s\n", file, strings.TrimPrefix(diags.Summary(), "0 errors, "))
		default:
			fmt.Fprintf(out, "%s: %s\n", file, diags.Summary())
		}
		if diags.Errors() > 0 || strict && diags.Warnings() > 0 {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d policies are invalid", failed, len(files))
	}
	return nil
}

// validatePolicy reads one policy file (or shipped policy) with every
// finding about it: policy.Validate's, and the server's limits on a
// policy's size, its request's bytes included.
func validatePolicy(file string) (*policy.Document, policy.Diagnostics, error) {
	doc, _, err := policy.LoadDocument(file)
	if err != nil {
		return nil, nil, err
	}
	doc.Name = file
	diags := policy.Validate(doc)
	if diags.Errors() == 0 {
		if err := server.ValidatePolicy(policy.ToAuthz(doc.Policy)); err != nil {
			diags = append(diags, doc.FromError(err))
		} else if n := proto.Size(&usherv1.ApplyPolicyRequest{Policy: doc.Policy}); n > server.MaxMessageSize {
			diags = append(diags, doc.FromError(&authz.Error{Code: authz.Invalid, Field: "policy", Value: fmt.Sprint(n),
				Reason: fmt.Sprintf("bytes encoded, and a request to the server holds at most %d: split the policy", server.MaxMessageSize)}))
		}
	}
	return doc, diags, nil
}

// loadValid reads and validates a policy file for apply, diff and serve:
// warnings go to warn, errors make the error.
func loadValid(file string, warn io.Writer) (*policy.Document, error) {
	doc, diags, err := validatePolicy(file)
	if err != nil {
		return nil, err
	}
	for _, d := range diags.Sorted() {
		if d.Warning {
			fmt.Fprintln(warn, d)
		}
	}
	if err := diags.Err(); err != nil {
		return nil, fmt.Errorf("%w\n%s: %s; nothing applied", err, file, diags.Summary())
	}
	return doc, nil
}

// applyFile applies a policy file to a running server. When the answer is
// to be printed as changes, it first reads what is in force where the file
// applies, so that each change can say whether it adds or changes a
// definition.
func applyFile(ctx context.Context, admin usherv1.AdminServiceClient, file string, o applyOptions, readBefore bool, warn io.Writer) (
	before *usherv1.Policy, resp *usherv1.ApplyPolicyResponse, err error) {
	doc, err := loadValid(file, warn)
	if err != nil {
		return nil, nil, err
	}
	if readBefore {
		if before, err = inForce(ctx, admin, doc); err != nil {
			return nil, nil, err
		}
	}
	var reached peer.Peer
	resp, err = admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: doc.Policy, Prune: o.prune, DryRun: o.dryRun}, grpc.Peer(&reached))
	if err != nil {
		if !o.dryRun && reached.Addr != nil && !refusedByUsher(err) {
			// The request reached a server and no answer came back: a
			// deadline passed, or the connection dropped, while the
			// server may have gone on to commit it.
			return nil, nil, fmt.Errorf("%w\nno answer came back, so the server may have applied it: 'usher policy diff %s' shows what is in force",
				explainRefusal(doc, err, o.prune), file)
		}
		return nil, nil, fmt.Errorf("%w\nnothing applied", explainRefusal(doc, err, o.prune))
	}
	return before, resp, nil
}

// inForce reads the policy in force where applying doc may change it.
func inForce(ctx context.Context, admin usherv1.AdminServiceClient, doc *policy.Document) (*usherv1.Policy, error) {
	before, err := policy.InForce(serverPages(ctx, admin, 0), policy.Touches(doc.Policy))
	if err != nil {
		return nil, fmt.Errorf("reading the policy in force: %w", err)
	}
	return before, nil
}

// writeApplied is the table of an ApplyPolicyResponse: a line per
// definition (+ added, ~ changed, - removed; with fields, the fields below
// each), then "changed: true" or "changed: false" and the revision, or
// "dry run: N changes, nothing written".
func writeApplied(w io.Writer, before *usherv1.Policy, resp *usherv1.ApplyPolicyResponse, fields bool) {
	detail := policy.NoFields
	if fields {
		detail = policy.AllFields
	}
	policy.Render(w, policy.Changes(before, resp.GetChanges()), detail)
	n := len(resp.GetChanges())
	switch {
	case n == 0:
		fmt.Fprintf(w, "changed: false (revision %d)\n", resp.GetRevision())
	case !resp.GetChanged():
		fmt.Fprintf(w, "dry run: %s, nothing written (revision %d)\n", changeCount(n), resp.GetRevision())
	default:
		fmt.Fprintf(w, "changed: true, %s (revision %d)\n", changeCount(n), resp.GetRevision())
	}
}

func changeCount(n int) string {
	if n == 1 {
		return "1 change"
	}
	return fmt.Sprintf("%d changes", n)
}

// The JSON of usher policy diff, named as protojson names fields.
type (
	diffJSON struct {
		Differences []diffEntryJSON `json:"differences"`
	}
	diffEntryJSON struct {
		Change string          `json:"change"` // added, changed or removed
		Kind   string          `json:"kind"`
		Name   string          `json:"name"`
		Fields []diffFieldJSON `json:"fields,omitempty"`
		// PruneOnly marks a removal only an apply with --prune makes.
		PruneOnly bool `json:"pruneOnly,omitempty"`
	}
	diffFieldJSON struct {
		Name    string   `json:"name"`
		Old     string   `json:"old,omitempty"`
		New     string   `json:"new,omitempty"`
		Added   []string `json:"added,omitempty"`
		Removed []string `json:"removed,omitempty"`
	}
)

var changeNames = map[byte]string{'+': "added", '~': "changed", '-': "removed"}

// writeDiffJSON writes the differences as indented JSON.
func writeDiffJSON(w io.Writer, entries []policy.Entry) error {
	out := diffJSON{Differences: []diffEntryJSON{}}
	for _, e := range entries {
		je := diffEntryJSON{Change: changeNames[e.Sign], Kind: e.Kind, Name: e.Name, PruneOnly: e.PruneOnly}
		for _, f := range e.Fields {
			je.Fields = append(je.Fields, diffFieldJSON(f))
		}
		out.Differences = append(out.Differences, je)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// serverPages pages through a server's ExportPolicy, each page read at
// minRevision or later.
func serverPages(ctx context.Context, admin usherv1.AdminServiceClient, minRevision uint64) policy.ExportPage {
	return func(token string) (*usherv1.Policy, string, error) {
		resp, err := admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{MinRevision: minRevision, PageSize: authz.MaxPageSize, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		return resp.GetPolicy(), resp.GetNextPageToken(), nil
	}
}

// explainRefusal explains a server's refusal of a policy: at the file's
// line when it names a field of the policy, with what to do about the
// common ones.
func explainRefusal(doc *policy.Document, err error, prune bool) error {
	st := status.Convert(err)
	msg := st.Message()
	var field, kind string
	where := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			field, kind = info.GetMetadata()["field"], info.GetReason()
			where = field
			if authz.Kind(kind) == authz.KindQuotaExceeded {
				where = doc.QuotaField(field, info.GetMetadata())
			}
		}
	}
	if path, ok := strings.CutPrefix(where, "policy."); ok || where == "policy" {
		d := doc.Diagnose(path, false, "%s", strings.TrimPrefix(strings.TrimPrefix(msg, field), " "))
		msg = d.String()
	} else {
		msg = fmt.Sprintf("%s: %s", doc.Name, describeError(err))
	}
	switch authz.Kind(kind) {
	case authz.KindPermissionInUse:
		if strings.Contains(msg, "named by the block of") {
			msg += "\nhint: lift that block (usher unblock), or keep the permission in the file"
		} else if !prune {
			msg += "\nhint: definitions the file does not list still name that permission; " +
				"--prune removes the roles, creator roles, quotas and admission rules the file does not list on root and on its resources"
		} else {
			msg += "\nhint: that definition is on a resource the file does not list, which --prune leaves alone; " +
				"delete it there, or list the resource in the file"
		}
	case authz.KindRoleInUse:
		msg += "\nhint: revoke those grants, or keep their roles in the file"
	}
	return errors.New(msg)
}

// refusedByUsher reports whether err is an answer Usher itself gave, which
// carries its ErrorInfo: a refused write is never committed later.
func refusedByUsher(err error) bool {
	e, ok := client.FromError(err)
	return ok && e.Domain == client.Domain
}

// testScenarios runs scenario files: a line per failing expectation, a
// line per file whose setup failed, then a summary line, and an error when
// anything failed. run is the --run pattern as given, for messages.
func testScenarios(out io.Writer, paths []string, pattern *scenario.Pattern, run, junit string) error {
	files, err := scenario.Find(paths)
	if err != nil {
		return err
	}
	var results []scenario.FileResult
	passed, failed, notRun := 0, 0, 0
	for _, file := range files {
		if !pattern.MayMatch(file) {
			continue
		}
		start := time.Now()
		fr := scenario.FileResult{Path: file}
		f, err := scenario.Load(file)
		if err == nil {
			fr.Result, err = scenario.Run(f)
		}
		fr.Err, fr.Time = err, time.Since(start)
		if err != nil {
			fmt.Fprintln(out, err)
			failed++
			results = append(results, fr)
			continue
		}
		if pattern != nil {
			fr.Result = fr.Result.Select(func(o scenario.Outcome) bool {
				return pattern.Match(file, o.Name) || pattern.Match(file, o.What)
			})
			if !slices.ContainsFunc(fr.Result.Steps, func(o scenario.Outcome) bool { return o.Expectation }) {
				continue // nothing selected here, not even after a failed setup step
			}
		}
		results = append(results, fr)
		for _, line := range fr.Result.Failures {
			fmt.Fprintln(out, line)
		}
		if fr.Result.NotRun > 0 {
			fmt.Fprintf(out, "%s: %d expectations not run after the failed setup step\n", file, fr.Result.NotRun)
		}
		passed += fr.Result.Passed
		failed += fr.Result.Failed
		notRun += fr.Result.NotRun
	}
	if junit != "" {
		if err := writeJUnit(junit, results); err != nil {
			return err
		}
	}
	if pattern != nil && len(results) == 0 {
		return fmt.Errorf("no expectation matches --run %q", run)
	}
	if notRun > 0 {
		fmt.Fprintf(out, "%d passed, %d failed, %d not run\n", passed, failed, notRun)
	} else {
		fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
	}
	if failed > 0 || notRun > 0 {
		return fmt.Errorf("%d expectations failed, %d not run", failed, notRun)
	}
	return nil
}

func writeJUnit(file string, results []scenario.FileResult) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := scenario.WriteJUnit(f, results); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
