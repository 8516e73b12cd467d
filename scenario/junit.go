package scenario

import (
	"encoding/xml"
	"fmt"
	"io"
	"time"
)

// FileResult is the outcome of one scenario file in a run of several.
type FileResult struct {
	Path   string
	Result Result
	// Err is set when the file could not be run at all: it did not parse,
	// or its policy did not load or apply.
	Err  error
	Time time.Duration
}

// The JUnit XML format as CI systems read it (Jenkins, GitLab, GitHub
// actions' reporters): testsuites > testsuite > testcase, with a failure,
// error or skipped element for a case that did not pass.
type (
	junitSuites struct {
		XMLName  xml.Name     `xml:"testsuites"`
		Name     string       `xml:"name,attr"`
		Tests    int          `xml:"tests,attr"`
		Failures int          `xml:"failures,attr"`
		Errors   int          `xml:"errors,attr"`
		Skipped  int          `xml:"skipped,attr"`
		Time     string       `xml:"time,attr"`
		Suites   []junitSuite `xml:"testsuite"`
	}
	junitSuite struct {
		Name     string      `xml:"name,attr"`
		Tests    int         `xml:"tests,attr"`
		Failures int         `xml:"failures,attr"`
		Errors   int         `xml:"errors,attr"`
		Skipped  int         `xml:"skipped,attr"`
		Time     string      `xml:"time,attr"`
		Cases    []junitCase `xml:"testcase"`
	}
	junitCase struct {
		Name      string        `xml:"name,attr"`
		Classname string        `xml:"classname,attr"`
		File      string        `xml:"file,attr,omitempty"`
		Line      int           `xml:"line,attr,omitempty"`
		Time      string        `xml:"time,attr"`
		Failure   *junitProblem `xml:"failure"`
		Error     *junitProblem `xml:"error"`
		Skipped   *junitProblem `xml:"skipped"`
	}
	junitProblem struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
)

// WriteJUnit writes a run as JUnit XML: a testsuite per scenario file, a
// testcase per expectation (named by its quote, or by what it does, with
// its line), a failed expectation as a failure, a setup step that failed
// as an error (and the expectations after it as skipped), and a file that
// could not run as one errored case.
func WriteJUnit(w io.Writer, files []FileResult) error {
	all := junitSuites{Name: "usher policy test"}
	var total time.Duration
	for _, f := range files {
		s := junitSuite{Name: f.Path, Time: seconds(f.Time)}
		class := FileName(f.Path)
		if f.Err != nil {
			s.Cases = append(s.Cases, junitCase{Name: "load " + f.Path, Classname: class, File: f.Path, Time: seconds(0),
				Error: &junitProblem{Message: "the scenario could not run", Text: f.Err.Error()}})
		}
		for _, o := range f.Result.Steps {
			c := junitCase{Name: o.Name, Classname: class, File: f.Path, Line: o.Line, Time: seconds(0)}
			switch {
			case !o.Expectation && o.Status == Failed:
				c.Name = fmt.Sprintf("setup: %s", o.Name)
				c.Error = &junitProblem{Message: "setup step failed", Text: o.Message}
			case !o.Expectation:
				continue
			case o.Status == Failed:
				c.Failure = &junitProblem{Message: "expectation failed", Text: o.Message}
			case o.Status == NotRun:
				c.Skipped = &junitProblem{Message: o.Message}
			}
			s.Cases = append(s.Cases, c)
		}
		for _, c := range s.Cases {
			s.Tests++
			switch {
			case c.Failure != nil:
				s.Failures++
			case c.Error != nil:
				s.Errors++
			case c.Skipped != nil:
				s.Skipped++
			}
		}
		all.Tests += s.Tests
		all.Failures += s.Failures
		all.Errors += s.Errors
		all.Skipped += s.Skipped
		total += f.Time
		all.Suites = append(all.Suites, s)
	}
	all.Time = seconds(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
