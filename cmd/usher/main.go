// Command usher is Usher's one binary: `usher serve` runs the server, and the
// other subcommands are clients of a running one.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: usher <command> [flags]

commands:
  serve     run the server on a bbolt file
  check     ask whether a subject holds a permission on a resource
  grant     grant a role to a subject on a resource
  revoke    revoke a grant
  changes   print the change log, optionally filtered
  policy    list, validate, test, apply and export policies
  token     make a bearer token and its hash for a callers file
  backup    save a consistent copy of a running server's data file
  restore   put a backup in place of a stopped server's data file
  migrate   copy the data from a bbolt file into etcd, or from etcd into a file
  bench     populate a synthetic platform and load a running server
  health    ask a running server whether it is serving, as a probe would
  version   print the version, commit and Go version of this binary (also --version)

Run 'usher <command> -h' for the flags of one command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"serve":   serve,
		"check":   check,
		"grant":   grant,
		"revoke":  revoke,
		"changes": changes,
		"policy":  policyCmd,
		"token":   token,
		"backup":  backup,
		"restore": restore,
		"migrate": migrate,
		"bench":   benchCmd,
		"health":  health,
		"version": versionCmd,
		// The spelling many tools answer to, beside the command.
		"--version": versionCmd,
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "usher: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "usher %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// envOr returns the environment variable key, or def when it is unset.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
