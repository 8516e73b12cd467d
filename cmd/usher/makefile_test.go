package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README says make test fuzzes each target briefly and make fuzz for a
// minute: the Makefile's FUZZ list names every fuzz target of the
// repository, as package:Name.
func TestMakefileFuzzesEveryTarget(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^FUZZ := ((?:.*\\\n)*.*)$`).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("the Makefile has no FUZZ list")
	}
	listed := map[string]bool{}
	for _, target := range strings.Fields(strings.ReplaceAll(string(m[1]), "\\\n", " ")) {
		listed[target] = true
	}
	found := 0
	fuzz := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == "gen" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg, _ := filepath.Rel("../..", filepath.Dir(path))
		for _, f := range fuzz.FindAllSubmatch(src, -1) {
			found++
			if target := filepath.ToSlash(pkg) + ":" + string(f[1]); !listed[target] {
				t.Errorf("%s: %s is not in the Makefile's FUZZ list, so make test and make fuzz never run it", path, target)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no fuzz target")
	}
}
