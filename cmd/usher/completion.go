package main

import (
	"github.com/spf13/cobra"
)

// completionCommand prints the shell completion script cobra generates:
// commands, flags, and the values of flags that have a few.
func completionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Completion prints a script that completes usher's commands, flags and their
values in bash, zsh, fish or PowerShell. Load it in the current shell, or
install it where the shell looks for completions.

bash (needs the bash-completion package):
  source <(usher completion bash)
  usher completion bash > /etc/bash_completion.d/usher

zsh:
  source <(usher completion zsh)
  usher completion zsh > "${fpath[1]}/_usher"

fish:
  usher completion fish | source
  usher completion fish > ~/.config/fish/completions/usher.fish

PowerShell:
  usher completion powershell | Out-String | Invoke-Expression`,
		Example: `  source <(usher completion bash)
  usher completion zsh > "${fpath[1]}/_usher"`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args: func(cmd *cobra.Command, args []string) error {
			if err := argsExactly("SHELL")(cmd, args); err != nil {
				return err
			}
			if err := cobra.OnlyValidArgs(cmd, args); err != nil {
				return &usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(w, true)
			case "zsh":
				return root.GenZshCompletion(w)
			case "fish":
				return root.GenFishCompletion(w, true)
			}
			return root.GenPowerShellCompletionWithDesc(w)
		},
	}
	return cmd
}
