package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// usageError is a command line usher cannot run: an unknown command or
// flag, a wrong number of arguments, a flag value out of place. It exits 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef makes a usage error.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// refusal is an answer that says no: a denied check, a join that was not
// admitted. What it answered is printed already; it exits 3.
type refusal struct{ message string }

func (r *refusal) Error() string {
	if r.message == "" {
		return "refused"
	}
	return r.message
}

// noArgs refuses arguments; for a command with subcommands, an argument is
// a subcommand it does not have.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasSubCommands() {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usagef("%s", msg)
	}
	return usagef("want no arguments, got %d", len(args))
}

// argsExactly wants one argument per name.
func argsExactly(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(names) == 0 {
			return usagef("want no arguments, got %d", len(args))
		}
		return usagef("want %d %s (%s), got %d", len(names), plural(len(names), "argument"), strings.Join(names, " "), len(args))
	}
}

// argsBetween wants from min to max arguments, described by what.
func argsBetween(min, max int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) < min:
			return usagef("want at least %d %s (%s), got %d", min, plural(min, "argument"), what, len(args))
		case max >= 0 && len(args) > max:
			return usagef("want at most %d %s (%s), got %d", max, plural(max, "argument"), what, len(args))
		}
		return nil
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// group is a command that only holds others: alone it prints its help.
func group(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(subs...)
	return cmd
}

// helpCommand is `usher help [command]`; help on a command that does not
// exist is a usage error, as running it would be.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help prints the help of a command: what it does, its arguments, flags and examples.",
		Example: `  usher help
  usher help grant
  usher help policy apply`,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil {
				return &usageError{err}
			}
			if len(rest) > 0 {
				return noArgs(cmd, rest)
			}
			return cmd.Help()
		},
	}
}

// Flags annotated as connection flags are listed apart in help, after the
// command's own.
const flagGroupAnnotation = "usher_flag_group"

// writeUsage is cobra's usage with the connection flags apart.
func writeUsage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:")
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n  %s [command]", c.CommandPath())
	} else if c.Runnable() {
		fmt.Fprintf(w, "\n  %s", c.UseLine())
	}
	if len(c.Aliases) > 0 {
		fmt.Fprintf(w, "\n\nAliases:\n  %s", c.NameAndAliases())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		writeSubcommands(w, c)
	}
	own, conn := pflag.NewFlagSet("own", pflag.ContinueOnError), pflag.NewFlagSet("connection", pflag.ContinueOnError)
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[flagGroupAnnotation]; ok {
			conn.AddFlag(f)
		} else {
			own.AddFlag(f)
		}
	})
	for _, fs := range []struct {
		title string
		flags *pflag.FlagSet
	}{{"Flags", own}, {"Connection flags", conn}, {"Global flags", c.InheritedFlags()}} {
		if fs.flags.HasAvailableFlags() {
			fmt.Fprintf(w, "\n\n%s:\n%s", fs.title, strings.TrimRight(fs.flags.FlagUsages(), " \n"))
		}
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nUse \"%s [command] --help\" for more about a command.", c.CommandPath())
	}
	fmt.Fprintln(w)
	return nil
}

func writeSubcommands(w io.Writer, c *cobra.Command) {
	list := func(title string, keep func(*cobra.Command) bool) {
		var lines []string
		for _, sub := range c.Commands() {
			if (sub.IsAvailableCommand() || sub.Name() == "help") && keep(sub) {
				lines = append(lines, fmt.Sprintf("  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(w, "\n\n%s\n%s", title, strings.Join(lines, "\n"))
		}
	}
	if len(c.Groups()) == 0 {
		list("Commands:", func(*cobra.Command) bool { return true })
		return
	}
	for _, g := range c.Groups() {
		list(g.Title, func(sub *cobra.Command) bool { return sub.GroupID == g.ID })
	}
	list("Additional commands:", func(sub *cobra.Command) bool { return sub.GroupID == "" })
}

// goFlagSpelling rewrites the long flags of the command args lead to from
// one dash to two: usher once parsed its flags with Go's flag package,
// which takes -addr for --addr, and command lines written for it keep
// working. Single letters (-v, -h, -o) are pflag's own shorthands.
func goFlagSpelling(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		return args
	}
	lookup := func(name string) *pflag.Flag {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f
		}
		return cmd.InheritedFlags().Lookup(name)
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		out = append(out, arg)
		if arg == "--" {
			return append(out, args[i+1:]...)
		}
		if len(arg) < 2 || arg[0] != '-' {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		f := lookup(name)
		if f == nil {
			continue
		}
		if !strings.HasPrefix(arg, "--") && len(name) > 1 {
			out[len(out)-1] = "-" + arg
		}
		// The value of a flag that takes one is not a flag, whatever its
		// spelling.
		if !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}
