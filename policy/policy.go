package policy

import (
	"embed"
	"os"
	"path"
	"slices"
	"strings"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

//go:embed policies/*.yaml
var shipped embed.FS

// Parse reads a policy from YAML or JSON, as Read does; its error lists
// every schema error, each at its line and column.
func Parse(name string, data []byte) (*usherv1.Policy, error) {
	d, diags := Read(name, data)
	if err := diags.Err(); err != nil {
		return nil, err
	}
	return d.Policy, nil
}

// Load reads a policy file, or a shipped policy when name is one of Shipped()
// and no file of that name exists; its error lists every schema error.
func Load(name string) (*usherv1.Policy, error) {
	d, diags, err := LoadDocument(name)
	if err != nil {
		return nil, err
	}
	if err := diags.Err(); err != nil {
		return nil, err
	}
	return d.Policy, nil
}

// LoadDocument reads a policy file, or a shipped policy when name is one
// of Shipped() and no file of that name exists, with the schema errors
// Read finds; the error is for a file that cannot be read at all.
func LoadDocument(name string) (*Document, Diagnostics, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		if !os.IsNotExist(err) || !slices.Contains(Shipped(), name) {
			return nil, nil, err
		}
		data, err = shipped.ReadFile("policies/" + name + ".yaml")
		if err != nil {
			return nil, nil, err
		}
		name = "shipped policy " + name
	}
	d, diags := Read(name, data)
	return d, diags, nil
}

// Shipped lists the names of the policies embedded in the binary.
func Shipped() []string {
	entries, _ := shipped.ReadDir("policies")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), path.Ext(e.Name())))
	}
	return names
}

// Describe returns the first comment line of a shipped policy, which says
// what it models.
func Describe(name string) string {
	data, err := shipped.ReadFile("policies/" + name + ".yaml")
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "#"))
}
