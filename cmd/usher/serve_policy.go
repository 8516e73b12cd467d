package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
)

// What `usher serve --policy` does with a data file that already holds a
// policy. An empty data file always gets the file's policy.
const (
	// policyApply applies the file as `usher policy apply` does: what it
	// changes is logged; what it does not list is left alone.
	policyApply = "apply"
	// policyPrune applies it as `usher policy apply --prune` does, making
	// root's and the file's resources' definitions exactly the file's.
	policyPrune = "prune"
	// policyCheck writes nothing: the server starts only if the file is in
	// force already.
	policyCheck = "check"
)

var policyModes = []string{policyApply, policyPrune, policyCheck}

const policyModeUsage = "what --policy does with a data file that holds a policy already: " +
	"apply it, leaving what it does not list alone (apply); apply it and remove what it does not list on root and on its resources (prune); " +
	"or only check that it is in force (check). A data file the file cannot be applied to, or in check mode one whose policy differs, " +
	"is refused with what differs, untouched (env USHER_POLICY_MODE)"

// checkPolicyMode refuses an unknown --policy-mode before anything is opened.
func checkPolicyMode(mode string) error {
	for _, m := range policyModes {
		if m == mode {
			return nil
		}
	}
	return usagef("--policy-mode %q: want one of %s", mode, strings.Join(policyModes, ", "))
}

// applyPolicy brings the data's policy to doc's, the valid policy of the
// file name (loadValid), at start-up, as mode says. It refuses to start,
// writing nothing, when the policy cannot be applied to the data, or
// (check) is not in force, saying what differs and what to do: a server
// restarted on the same data and file would only refuse again.
func applyPolicy(engine *authz.Engine, name string, doc *policy.Document, mode string, logger *slog.Logger) error {
	if err := checkPolicyMode(mode); err != nil {
		return err
	}
	ctx, by := context.Background(), authz.Author{Caller: "usher serve --policy"}
	p, x := policy.ToAuthz(doc.Policy), engine.Index()
	fresh := x.Revision() == 0
	opts := authz.ApplyOptions{Prune: mode == policyPrune}
	_, planned, err := engine.ApplyPolicy(ctx, by, p, authz.ApplyOptions{Prune: opts.Prune, DryRun: true})
	if err == nil && len(planned) == 0 {
		return nil // in force already
	}
	before, rerr := policy.InForce(policy.EnginePages(x), policy.Touches(doc.Policy))
	if rerr != nil {
		return rerr
	}
	if err == nil && (fresh || mode != policyCheck) {
		var changes []authz.Change
		if _, changes, err = engine.ApplyPolicy(ctx, by, p, opts); err == nil {
			if !fresh {
				for _, e := range policy.Changes(before, policy.FromAuthzChanges(changes)) {
					logger.Info("policy change", "policy", name, "change", e.String())
				}
			}
			return nil
		}
	}

	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "--policy %s cannot be applied to the data:\n%s\n", name, doc.FromError(err))
	} else {
		fmt.Fprintf(&b, "--policy %s is not the policy in force (--policy-mode=%s)\n", name, mode)
	}
	b.WriteString("What differs (+ only in the file, - only in the data, ~ changed):\n")
	var diff strings.Builder
	policy.Render(&diff, policy.Diff(before, doc.Policy), policy.ChangedFields)
	for _, line := range strings.SplitAfter(strings.TrimSuffix(diff.String(), "\n"), "\n") {
		b.WriteString("  " + line)
	}
	b.WriteString("\nThe data is untouched. ")
	switch {
	case mode == policyCheck:
		b.WriteString("To apply the file, start with --policy-mode=apply, or apply it to a running server: usher policy apply [--prune] FILE.")
	case authz.KindOf(err) == authz.KindRoleInUse:
		b.WriteString("Revoke the grants named above, or keep their roles in the file.")
	case errors.As(err, new(*authz.TooLargeError)):
		// No mode applies it: the write is more than the backend commits
		// at once.
		b.WriteString("Raise the limit named above and start again.")
	case mode == policyApply:
		b.WriteString("To replace the policy in force with the file, removing what it does not list on root and on its resources, " +
			"start once with --policy-mode=prune (refused while grants hold the roles it would remove), " +
			"or apply it to a running server started without --policy: usher policy apply --prune FILE.")
	}
	return fmt.Errorf("%s", b.String())
}

// logWriter logs each line written to it as a warning, for the findings of
// a policy file at start-up.
type logWriter struct{ logger *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		w.logger.Warn("policy file", "finding", line)
	}
	return len(p), nil
}
