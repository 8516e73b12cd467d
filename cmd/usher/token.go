package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
)

// token prints a new random bearer token and the token_sha256 line of the
// callers file entry that accepts it. Usher never sees the token itself until
// a caller presents it.
func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: usher token\n\nPrints a new bearer token for a caller (give it to the caller: --token or USHER_TOKEN)\nand the token_sha256 line to put in that caller's entry of the callers file.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("want no arguments, got %d", fs.NArg())
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	t := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(t))
	fmt.Printf("token: %s\ntoken_sha256: %s\n", t, hex.EncodeToString(sum[:]))
	return nil
}
