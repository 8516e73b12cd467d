package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	const rev = "c2eb741136379dc01df8d1cfb9ac9f07d1451a46"
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/usher-authz/usher", Version: "v0.0.0-20261130072009-c2eb74113637+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-11-30T07:20:09Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name   string
		bi     *debug.BuildInfo
		linked linked
		want   buildVersion
	}{{
		name: "go build in a checkout stamps the pseudo-version, revision, time and modification",
		bi:   stamped,
		want: buildVersion{Version: "v0.0.0-20261130072009-c2eb74113637+dirty", Commit: rev, Modified: true,
			CommitTime: "2026-11-30T07:20:09Z", Go: "go1.26.8", Platform: platform},
	}, {
		name: "go install at a version stamps the version alone",
		bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
		want: buildVersion{Version: "v1.2.3", Go: "go1.26.8", Platform: platform},
	}, {
		name:   "what the linker set takes the place of the build info",
		bi:     stamped,
		linked: linked{version: "v1.3.0", commit: "0123456789abcdef", commitTime: "2026-12-01T00:00:00Z", modified: "false"},
		want: buildVersion{Version: "v1.3.0", Commit: "0123456789abcdef", CommitTime: "2026-12-01T00:00:00Z",
			Go: "go1.26.8", Platform: platform},
	}, {
		name: "a build with neither says (devel) and the running Go",
		want: buildVersion{Version: "(devel)", Go: runtime.Version(), Platform: platform},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildVersionOf(tc.bi, tc.linked); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestVersionCommand builds the binary as the Makefile and the Containerfile
// do, with the version set at link time, and asks it through both spellings.
func TestVersionCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "usher")
	ldflags := "-X main.version=v9.8.7 -X main.commit=0123456789abcdef -X main.commitTime=2026-12-01T00:00:00Z -X main.modified=true"
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "version    v9.8.7\n" +
		"commit     0123456789abcdef (modified)\n" +
		"committed  2026-12-01T00:00:00Z\n" +
		"go         " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("usher %s: %v", arg, err)
		}
		if string(out) != want {
			t.Errorf("usher %s printed\n%s\nwant\n%s", arg, out, want)
		}
	}
	out, err := exec.Command(bin, "version", "extra").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "want no arguments") {
		t.Errorf("usher version extra: err %v, output\n%s", err, out)
	}
}
