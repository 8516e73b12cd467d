package client_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestTheClientLinksNoServerSide proves that a service importing the
// client does not link the engine, storage or LiveKit: only the generated
// package of Usher with vtprotobuf's helpers for it, Usher's gRPC codec,
// gRPC and protobuf.
func TestTheClientLinksNoServerSide(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto/googleapis/rpc", "golang.org/x/",
		"github.com/planetscale/vtprotobuf/"}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/usher-authz/usher/client", dep == "github.com/usher-authz/usher/gen/usher/v1",
			dep == "github.com/usher-authz/usher/internal/codec":
		case slices.ContainsFunc(allowed, func(p string) bool { return strings.HasPrefix(dep, p) }):
		default:
			t.Errorf("the client links %s", dep)
		}
	}
}

// TestEveryReasonHasAConstant proves that the client names every reason
// the engine (authz.Kind) and the server (its reason constants) send, and
// no other.
func TestEveryReasonHasAConstant(t *testing.T) {
	sent := map[string]string{} // reason -> where it is declared
	for _, src := range []struct {
		file string
		is   func(name string, spec *ast.ValueSpec) bool
	}{
		{"../authz/errors.go", func(_ string, s *ast.ValueSpec) bool {
			id, ok := s.Type.(*ast.Ident)
			return ok && id.Name == "Kind"
		}},
		{"../server/*.go", func(name string, _ *ast.ValueSpec) bool { return strings.HasPrefix(name, "reason") }},
	} {
		files, err := filepath.Glob(src.file)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			consts := stringConstants(t, file, src.is)
			found += len(consts)
			for name, value := range consts {
				sent[value] = file + ": " + name
			}
		}
		if found == 0 {
			t.Fatalf("%s declares no reasons: have they moved?", src.file)
		}
	}
	named := map[string]string{}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for name, value := range stringConstants(t, f, func(name string, _ *ast.ValueSpec) bool { return strings.HasPrefix(name, "Reason") }) {
			named[value] = name
		}
	}
	for reason, where := range sent {
		if _, ok := named[reason]; !ok {
			t.Errorf("%s (%s) has no Reason constant in the client", reason, where)
		}
	}
	for reason, name := range named {
		if _, ok := sent[reason]; !ok {
			t.Errorf("client.%s = %q: neither the engine nor the server sends it", name, reason)
		}
	}
}

// stringConstants are the string constants of file that keep says to,
// by name.
func stringConstants(t *testing.T, file string, keep func(name string, spec *ast.ValueSpec) bool) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) || !keep(name.Name, vs) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				value, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[name.Name] = value
			}
		}
	}
	return out
}

// TestTheREADMEShowsThePackageExample keeps the README's snippet the body
// of Example, which the compiler checks.
func TestTheREADMEShowsThePackageExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Calling Usher from Go\n")
	if !ok {
		t.Fatal(`README.md has no section "Calling Usher from Go"`)
	}
	_, block, ok := strings.Cut(section, "```go\n")
	block, _, closed := strings.Cut(block, "```\n")
	if !ok || !closed {
		t.Fatal("README.md's section Calling Usher from Go has no go block")
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(example), "\nfunc Example() {\n")
	body, _, closed = strings.Cut(body, "\n}\n")
	if !ok || !closed {
		t.Fatal("example_test.go has no func Example")
	}
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	if want := strings.Join(lines, "\n") + "\n"; block != want {
		t.Errorf("README.md's snippet:\n%s\nExample's body:\n%s", block, want)
	}
}
