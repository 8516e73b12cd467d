package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at link time (the Makefile's LDFLAGS) for builds that have no VCS
// metadata for the Go tool to stamp: the container image, whose build
// context leaves .git out, a git worktree, GOFLAGS=-buildvcs=false:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)
//	    -X main.commitTime=$(git log -1 --format=%cI) -X main.modified=false" ./cmd/usher
//
// Each, when set, takes the place of what the build info says.
var (
	version    string
	commit     string
	commitTime string
	modified   string // "true" or "false"
)

// buildVersion is what a binary says it was built from.
type buildVersion struct {
	Version    string // the module's version: a tag, a pseudo-version, or "(devel)"
	Commit     string // the VCS revision; empty when unknown
	Modified   bool   // the working tree had uncommitted changes
	CommitTime string // the revision's commit time, RFC 3339; empty when unknown
	Go         string // the Go toolchain that built it
	Platform   string // GOOS/GOARCH
}

// readBuildVersion reads this binary's build information.
func readBuildVersion() buildVersion {
	bi, _ := debug.ReadBuildInfo()
	return buildVersionOf(bi, linked{version, commit, commitTime, modified})
}

// linked is what the linker set; empty fields were not set.
type linked struct{ version, commit, commitTime, modified string }

// buildVersionOf combines the build information the Go tool stamped (nil
// when there is none) with what the linker set. `go build` in a git
// checkout stamps the revision, its time and whether the tree was modified
// (-buildvcs); `go install module@version` stamps the version alone.
func buildVersionOf(bi *debug.BuildInfo, l linked) buildVersion {
	v := buildVersion{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.CommitTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if l.version != "" {
		v.Version = l.version
	}
	if l.commit != "" {
		v.Commit = l.commit
	}
	if l.commitTime != "" {
		v.CommitTime = l.commitTime
	}
	if l.modified != "" {
		v.Modified = l.modified == "true"
	}
	return v
}

// write prints v as aligned "key value" lines.
func (v buildVersion) write(w io.Writer) {
	c, t := v.Commit, v.CommitTime
	if c == "" {
		c = "unknown (built without VCS information)"
	} else if v.Modified {
		c += " (modified)"
	}
	if t == "" {
		t = "unknown"
	}
	for _, l := range [][2]string{{"version", v.Version}, {"commit", c}, {"committed", t}, {"go", v.Go + " " + v.Platform}} {
		fmt.Fprintf(w, "%-10s %s\n", l[0], l[1])
	}
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit and Go version of this binary (also --version)",
		Long:    "Version prints the module version, VCS commit and Go version this binary was built from.",
		Example: "  usher version\n  usher --version",
		Args:    argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			readBuildVersion().write(cmd.OutOrStdout())
			return nil
		},
	}
}
