//go:build !linux

package bolt

import (
	"errors"
	"os"
)

var errNoUnnamedFiles = errors.New("files without a name need Linux's O_TMPFILE")

// createUnnamed fails: only Linux makes files without a name.
func createUnnamed(string) (*os.File, error) { return nil, errNoUnnamedFiles }

// linkUnnamed is never called where createUnnamed fails.
func linkUnnamed(*os.File, string) error { return errNoUnnamedFiles }
