package scenario

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Find expands paths into scenario files: a file is taken as it is; a
// directory gives every *.yaml and *.yml file below it that holds a
// top-level steps list, in lexical order, and skips other YAML (the policy
// files scenarios name, say). A directory with no scenario file is an error.
func Find(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if isScenario(data) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no scenario file (a YAML file with a steps list) below it", p)
		}
		slices.Sort(found)
		out = append(out, found...)
	}
	return out, nil
}

// isScenario reports whether data is a YAML mapping with a steps key. A
// file that is not valid YAML is one when a line of it starts with steps:
// a scenario broken by a typo is reported by Load, not skipped as if it
// were no scenario at all.
func isScenario(data []byte) bool {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return stepsLine.Match(data)
	}
	if len(doc.Content) != 1 {
		return false
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "steps" {
			return true
		}
	}
	return false
}

// stepsLine finds a top-level steps key in a file the YAML parser refuses.
var stepsLine = regexp.MustCompile(`(?m)^["']?steps["']?[ \t]*:`)

// Pattern selects scenario files and expectations by name, as `usher
// policy test --run` does: FILE/STEP matches the files whose name (without
// directory or extension) FILE matches and, in them, the expectations
// whose name (quote, or what the step does) STEP matches; a pattern
// without a slash selects an expectation when it matches either its file's
// name or its own. Both halves are regular expressions, unanchored.
type Pattern struct {
	file, step *regexp.Regexp
	either     bool
}

// ParsePattern compiles a --run pattern; "" selects everything.
func ParsePattern(s string) (*Pattern, error) {
	if s == "" {
		return nil, nil
	}
	filePart, stepPart, split := strings.Cut(s, "/")
	p := &Pattern{either: !split}
	var err error
	if p.file, err = regexp.Compile(filePart); err != nil {
		return nil, fmt.Errorf("--run %q: %w", s, err)
	}
	p.step = p.file
	if split {
		if p.step, err = regexp.Compile(stepPart); err != nil {
			return nil, fmt.Errorf("--run %q: %w", s, err)
		}
	}
	return p, nil
}

// FileName is a scenario file's name as patterns see it: its base name
// without extension.
func FileName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// MayMatch reports whether some expectation of the file at path may be
// selected; a file it rules out need not run.
func (p *Pattern) MayMatch(path string) bool {
	return p == nil || p.either || p.file.MatchString(FileName(path))
}

// Match reports whether the expectation named step, in the file at path,
// is selected.
func (p *Pattern) Match(path, step string) bool {
	if p == nil {
		return true
	}
	if p.either {
		return p.file.MatchString(FileName(path)) || p.step.MatchString(step)
	}
	return p.file.MatchString(FileName(path)) && p.step.MatchString(step)
}
