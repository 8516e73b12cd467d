package server_test

import (
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/usher-authz/usher/server"
)

// yamlBlocks returns the ```yaml blocks of a Markdown file.
func yamlBlocks(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, part := range strings.Split(string(data), "```yaml\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("%s: a yaml block is not closed", file)
		}
		blocks = append(blocks, block)
	}
	return blocks
}

// TestEnvoyDocConfigs proves that docs/envoy.md's two configurations are
// what their readers will load: Usher's through ParseEnvoyConfig, Envoy's
// through Envoy's own protos and their validation rules, every typed_config
// included.
func TestEnvoyDocConfigs(t *testing.T) {
	blocks := yamlBlocks(t, "../docs/envoy.md")
	if len(blocks) != 2 {
		t.Fatalf("docs/envoy.md has %d yaml blocks, want Usher's and Envoy's", len(blocks))
	}
	cfg, err := server.ParseEnvoyConfig([]byte(blocks[0]))
	if err != nil {
		t.Fatalf("Usher's config: %v", err)
	}
	if cfg.Subject.JWT == nil || len(cfg.Rules) == 0 {
		t.Errorf("Usher's config lost its subject or rules: %+v", cfg)
	}

	js, err := yaml.YAMLToJSONStrict([]byte(blocks[1]))
	if err != nil {
		t.Fatalf("Envoy's config: %v", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("Envoy's config is not a Bootstrap: %v", err)
	}
	validateEnvoy(t, &b)
	if got := len(b.GetStaticResources().GetClusters()); got != 2 {
		t.Errorf("Envoy's config has %d clusters, want usher and api", got)
	}
}

// validateEnvoy runs m's validation rules, which cover every message
// below it but stop at an Any, then those of each Any (typed_config) below
// it, unpacked.
func validateEnvoy(t *testing.T, m proto.Message) {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%s: %v", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	eachAny(t, m.ProtoReflect())
}

func eachAny(t *testing.T, m protoreflect.Message) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("typed_config %s: %v", a.GetTypeUrl(), err)
			return
		}
		validateEnvoy(t, inner)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				eachAny(t, v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				eachAny(t, mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			eachAny(t, v.Message())
		}
		return true
	})
}
