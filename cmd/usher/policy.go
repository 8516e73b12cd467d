package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
)

func policyCommand() *cobra.Command {
	list := &cobra.Command{
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
	validate := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policy files without a server",
		Long: `Validate checks each policy file's shape and meaning, as a server would
apply it to an empty store, and prints "FILE: valid" or what is wrong,
naming the file and the field's path. It exits 1 when any file is invalid.`,
		Example: `  usher policy validate policy.yaml
  usher policy validate policy/policies/*.yaml`,
		Args: argsBetween(1, -1, "FILE..."),
		RunE: func(_ *cobra.Command, files []string) error { return validatePolicies(files) },
	}
	test := &cobra.Command{
		Use:   "test FILE...",
		Short: "Run scenario files without a server",
		Long: `Test replays scenario files against an in-memory server on the policy each
names, and prints a line per failing expectation and a summary. It exits 1
when any expectation failed.`,
		Example: `  usher policy test policy/scenarios/default.yaml
  usher policy test policy/scenarios/*.yaml`,
		Args: argsBetween(1, -1, "FILE..."),
		RunE: func(_ *cobra.Command, files []string) error { return testScenarios(files) },
	}
	applyCmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Apply a policy file, or a shipped policy, to a running server",
		Long: `Apply applies the policy FILE (or the shipped policy of that name, see
'usher policy list') to a running server, in one transaction, and prints
the revision it made.`,
		Example: `  usher policy apply policy.yaml
  usher policy apply livebox --addr usher.internal:7070 --tls-ca ca.crt`,
		Args: argsExactly("FILE"),
	}
	applyFlags := addClientFlags(applyCmd, callTimeout)
	applyCmd.RunE = func(cmd *cobra.Command, a []string) error {
		return applyFlags.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return apply(ctx, conn, a)
		}, nil)
	}
	exportCmd := &cobra.Command{
		Use:   "export",
		Short: "Print a running server's policy",
		Long: `Export prints the running server's policy, every page merged into one: the
catalog, resources, roles, quotas and admission rules. Applied to an empty
store, it rebuilds them.`,
		Example: `  usher policy export > policy.json`,
		Args:    argsExactly(),
	}
	exportFlags := addClientFlags(exportCmd, callTimeout)
	exportCmd.RunE = func(cmd *cobra.Command, a []string) error {
		return exportFlags.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return export(ctx, conn, a)
		}, nil)
	}
	return group("policy", "List, validate, test, apply and export policies",
		`Policy works with policy files: the permission catalog, resources, roles,
quotas and admission rules of a platform, in YAML or JSON. Validate and test
need no server; apply and export are clients of a running one.`,
		`  usher policy validate policy.yaml
  usher policy test policy/scenarios/*.yaml
  usher policy apply policy.yaml`,
		list, validate, test, applyCmd, exportCmd)
}

// validatePolicies checks each file's shape and meaning by applying it to an
// empty in-memory engine; errors name the file and the field's path.
func validatePolicies(files []string) error {
	if len(files) == 0 {
		return errors.New("usage: usher policy validate FILE...")
	}
	failed := 0
	for _, file := range files {
		if err := validatePolicy(file); err != nil {
			fmt.Println(err)
			failed++
			continue
		}
		fmt.Printf("%s: valid\n", file)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d policies are invalid", failed, len(files))
	}
	return nil
}

func validatePolicy(file string) error {
	msg, err := policy.Load(file)
	if err != nil {
		return err
	}
	p := server.FromPolicy(msg)
	err = server.ValidatePolicy(p)
	if err == nil {
		var engine *authz.Engine
		if engine, err = scenario.NewMemoryEngine(nil); err != nil {
			return err
		}
		_, _, err = engine.ApplyPolicy(context.Background(), authz.Author{Caller: "usher policy validate"}, p, authz.ApplyOptions{})
	}
	var e *authz.Error
	if errors.As(err, &e) {
		// In a file the policy is the document itself.
		e = e.WithField("")
		e.Field = strings.TrimPrefix(e.Field, "policy.")
		return fmt.Errorf("%s: %w", file, e)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// testScenarios runs scenario files: a line per failing expectation, then a
// summary line, and an error when anything failed.
func testScenarios(files []string) error {
	if len(files) == 0 {
		return errors.New("usage: usher policy test FILE...")
	}
	passed, failed, notRun := 0, 0, 0
	for _, file := range files {
		f, err := scenario.Load(file)
		if err == nil {
			var res scenario.Result
			if res, err = scenario.Run(f); err == nil {
				for _, line := range res.Failures {
					fmt.Println(line)
				}
				passed += res.Passed
				failed += res.Failed
				notRun += res.NotRun
				if res.NotRun > 0 {
					fmt.Printf("%s: %d steps not run after the failed setup step\n", file, res.NotRun)
				}
				continue
			}
		}
		fmt.Println(err)
		failed++
	}
	if notRun > 0 {
		fmt.Printf("%d passed, %d failed, %d not run\n", passed, failed, notRun)
	} else {
		fmt.Printf("%d passed, %d failed\n", passed, failed)
	}
	if failed > 0 {
		return fmt.Errorf("%d expectations failed", failed)
	}
	return nil
}
