package policy

import (
	"embed"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

//go:embed policies/*.yaml
var shipped embed.FS

// Parse reads a policy from YAML or JSON (JSON is YAML). Field names are the
// proto's, in snake_case or lowerCamelCase; unknown fields are errors. name
// is used in messages, e.g. the file's path.
func Parse(name string, data []byte) (*usherv1.Policy, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &usherv1.Policy{}
	if err := protojson.Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Load reads a policy file, or a shipped policy when name is one of Shipped()
// and no file of that name exists.
func Load(name string) (*usherv1.Policy, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		if !os.IsNotExist(err) || !slices.Contains(Shipped(), name) {
			return nil, err
		}
		data, err = shipped.ReadFile("policies/" + name + ".yaml")
		if err != nil {
			return nil, err
		}
		name = "shipped policy " + name
	}
	return Parse(name, data)
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
