// Command usher is Usher's one binary: `usher serve` runs the server, and the
// other subcommands are clients of a running one or work on its files.
//
// Exit codes: 0 success (for `usher check`, allowed), 1 an error, 2 a usage
// error (an unknown command or flag, a wrong number of arguments), 3 a
// refusal that is an answer rather than an error: a denied check, a join
// that was not admitted.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitDenied = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns its exit code; what the command
// prints goes to stdout, errors to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(goFlagSpelling(root, args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	if cmd == nil || cmd.Name() == "help" {
		cmd = root
	}
	var usage *usageError
	var refused *refusal
	var logged *loggedError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), usage.err, cmd.CommandPath())
		return exitUsage
	case errors.As(err, &logged):
		return exitError
	case errors.As(err, &refused):
		if refused.message != "" {
			fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), refused.message)
		}
		return exitDenied
	}
	fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), describeError(err))
	return exitError
}

// loggedError is an error its command has logged already, as a record of
// its log: it is not printed again.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	// Commands are listed in the order they are added, the common first.
	cobra.EnableCommandSorting = false
	var showVersion bool
	root := &cobra.Command{
		Use:   "usher",
		Short: "Usher decides who may do what on a tree of resources, and who may join a call",
		Long: `Usher is an authorization service: roles granted on a tree of resources,
blocks that override them, quotas, delegated administration, and the
admission of participants to calls.

'usher serve' runs the server. The other commands are its clients, which
dial --addr (USHER_ADDR, 127.0.0.1:7070 by default) and print the answer as
JSON (--output json, the default) or as an aligned table (--output table),
or tools that work on its files.

Exit codes: 0 success, 1 an error, 2 a usage error, 3 an answer that
refuses: a denied check, a join that was not admitted.`,
		Example: `  usher serve --data data/usher.db
  usher grant user:dana host call:standup
  usher check user:dana join-call call:standup
  usher help grant`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				readBuildVersion().write(cmd.OutOrStdout())
				return nil
			}
			return cmd.Help()
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		// completionCommand takes the place of cobra's own.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version, as 'usher version' does")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.SetUsageFunc(writeUsage)
	root.SetHelpCommand(helpCommand())

	root.AddGroup(
		&cobra.Group{ID: groupServer, Title: "Running a server:"},
		&cobra.Group{ID: groupCheck, Title: "Asking (AuthorizationService):"},
		&cobra.Group{ID: groupAdmin, Title: "Administering (AdminService):"},
		&cobra.Group{ID: groupAdmission, Title: "Joining calls (AdmissionService):"},
		&cobra.Group{ID: groupOther, Title: "Other commands:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupServer, serveCommand(), backupCommand(), restoreCommand(), migrateCommand(), healthCommand(), benchCommand())
	add(groupCheck, authorizationCommands()...)
	add(groupAdmin, adminCommands()...)
	add(groupAdmission, admissionCommands()...)
	add(groupOther, policyCommand(), tokenCommand(), versionCommand(), completionCommand())
	root.SetHelpCommandGroupID(groupOther)
	return root
}

// Help groups of the root command.
const (
	groupServer    = "server"
	groupCheck     = "check"
	groupAdmin     = "admin"
	groupAdmission = "admission"
	groupOther     = "other"
)

// envOr returns the environment variable key, or def when it is unset.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
