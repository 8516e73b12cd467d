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

// make test runs every package under the race detector, under which
// authz's tests of actors holding long assignable_roles lists skip, for
// their size: the Makefile's LONG_LISTS runs them again without it, and
// names each of them, so that none is only ever skipped.
func TestMakefileRunsTheTestsThatSkipUnderRace(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LONG_LISTS = \^\(([\w|]+)\)\$\$$`).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("the Makefile has no LONG_LISTS")
	}
	if !strings.Contains(string(makefile), "$(LONG_LISTS)' ./authz/") {
		t.Error("the Makefile's run of ./authz/ without the race detector does not run LONG_LISTS")
	}
	listed := map[string]bool{}
	for _, name := range strings.Split(string(m[1]), "|") {
		listed[name] = true
	}
	src, err := os.ReadFile("../../authz/actorcost_test.go")
	if err != nil {
		t.Fatal(err)
	}
	tests := regexp.MustCompile(`(?m)^func (Test\w+)\(`).FindAllSubmatch(src, -1)
	if len(tests) == 0 {
		t.Fatal("authz/actorcost_test.go has no test")
	}
	for _, f := range tests {
		if !listed[string(f[1])] {
			t.Errorf("%s skips under the race detector and is not in the Makefile's LONG_LISTS, so make test never runs it", f[1])
		}
	}
}
