package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"
)

// tokenCommand prints a new random bearer token and the token_sha256 line
// of the callers file entry that accepts it. Usher never sees the token
// itself until a caller presents it.
func tokenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Make a bearer token and its hash for a callers file",
		Long: `Token prints a new random bearer token for a caller (give it to the caller:
--token, --token-file or USHER_TOKEN) and the token_sha256 line to put in
that caller's entry of the callers file. The server keeps only the hash.`,
		Example: `  usher token`,
		Args:    argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			t := base64.RawURLEncoding.EncodeToString(b)
			sum := sha256.Sum256([]byte(t))
			fmt.Fprintf(cmd.OutOrStdout(), "token: %s\ntoken_sha256: %s\n", t, hex.EncodeToString(sum[:]))
			return nil
		},
	}
}
