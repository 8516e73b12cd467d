package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
)

const policyUsage = `usage: usher policy <command>

commands:
  list                 the policies shipped in the binary
  validate FILE...     check policy files without a server
  test FILE...         run scenario files without a server
  apply FILE           apply a policy file to a running server
  export               print the running server's policy as JSON
`

func policyCmd(args []string) error {
	if len(args) == 0 {
		return errors.New(policyUsage)
	}
	switch args[0] {
	case "list":
		for _, name := range policy.Shipped() {
			fmt.Printf("%-12s %s\n", name, policy.Describe(name))
		}
		return nil
	case "validate":
		return validatePolicies(args[1:])
	case "test":
		return testScenarios(args[1:])
	case "apply":
		return apply(args[1:])
	case "export":
		return export(args[1:])
	}
	return fmt.Errorf("unknown policy command %q\n\n%s", args[0], policyUsage)
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
