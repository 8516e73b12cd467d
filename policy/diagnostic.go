package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Position is where something is written in a policy file: 1-based line
// and column; zero when unknown.
type Position struct{ Line, Column int }

// Diagnostic is one finding about a policy file: an error, which makes the
// file invalid, or a warning, which does not.
type Diagnostic struct {
	File string
	Position
	// Path is the field's path in the policy, e.g. "roles[3].permissions[1]";
	// empty for the file as a whole.
	Path    string
	Message string
	Warning bool
}

// String is the line `usher policy validate` prints:
// FILE:LINE:COLUMN: PATH: MESSAGE, with "warning: " before the path of a
// warning.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Column)
	}
	b.WriteString(": ")
	if d.Warning {
		b.WriteString("warning: ")
	}
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Diagnostics are the findings about one or more files.
type Diagnostics []Diagnostic

// Errors counts the errors among ds.
func (ds Diagnostics) Errors() int {
	n := 0
	for _, d := range ds {
		if !d.Warning {
			n++
		}
	}
	return n
}

// Warnings counts the warnings among ds.
func (ds Diagnostics) Warnings() int { return len(ds) - ds.Errors() }

// Sorted returns ds ordered by file and position, errors and warnings
// interleaved as they occur in the file.
func (ds Diagnostics) Sorted() Diagnostics {
	out := slices.Clone(ds)
	slices.SortStableFunc(out, func(a, b Diagnostic) int {
		return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return out
}

// Err returns nil when ds holds no error, else an error whose message is
// every error of ds, a line each, in file order.
func (ds Diagnostics) Err() error {
	if ds.Errors() == 0 {
		return nil
	}
	var errs Diagnostics
	for _, d := range ds.Sorted() {
		if !d.Warning {
			errs = append(errs, d)
		}
	}
	return &InvalidError{Diagnostics: errs}
}

// InvalidError is a policy file that failed to read or validate, with every
// error found in it.
type InvalidError struct {
	Diagnostics Diagnostics
}

func (e *InvalidError) Error() string {
	lines := make([]string, len(e.Diagnostics))
	for i, d := range e.Diagnostics {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// Summary is the count a validation ends with: "2 errors, 1 warning".
func (ds Diagnostics) Summary() string {
	return fmt.Sprintf("%s, %s", plural(ds.Errors(), "error"), plural(ds.Warnings(), "warning"))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
