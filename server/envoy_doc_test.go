package server_test

import (
	"cmp"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
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
	return yamlBlocksOf(t, file, string(data))
}

// sectionYAMLBlocks returns the ```yaml blocks of one section of a Markdown
// file: from its heading to the next heading of the same level.
func sectionYAMLBlocks(t *testing.T, file, heading string) []string {
	t.Helper()
	return yamlBlocksOf(t, file, sectionOf(t, file, heading))
}

// sectionOf returns one section of a Markdown file: from its heading to
// the next heading of the same level.
func sectionOf(t *testing.T, file, heading string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no section %q", file, heading)
	}
	level, _, _ := strings.Cut(heading, " ")
	section, _, _ = strings.Cut(section, "\n"+level+" ")
	return section
}

func yamlBlocksOf(t *testing.T, file, text string) []string {
	t.Helper()
	var blocks []string
	for _, part := range strings.Split(text, "```yaml\n")[1:] {
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
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatalf("Envoy's listener has no HttpConnectionManager: %v", err)
	}
	checkExtAuthz(t, hcm.GetHttpFilters(), cfg)
}

// TestEnvoyREADMEConfigs proves the same of the README's short section:
// its mapping loads, and its http_filters are those of an
// HttpConnectionManager, every typed_config valid for Envoy v3.
func TestEnvoyREADMEConfigs(t *testing.T) {
	blocks := sectionYAMLBlocks(t, "../README.md", "## Gating HTTP APIs with Envoy")
	if len(blocks) != 2 {
		t.Fatalf("README.md's Envoy section has %d yaml blocks, want Usher's and Envoy's", len(blocks))
	}
	cfg, err := server.ParseEnvoyConfig([]byte(blocks[0]))
	if err != nil {
		t.Fatalf("Usher's config: %v", err)
	}
	js, err := yaml.YAMLToJSONStrict([]byte(blocks[1]))
	if err != nil {
		t.Fatalf("Envoy's config: %v", err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := protojson.Unmarshal(js, &hcm); err != nil {
		t.Fatalf("Envoy's config is not an HttpConnectionManager's http_filters: %v", err)
	}
	// The manager itself is a fragment, without stat_prefix or routes: only
	// its filters are validated.
	for _, f := range hcm.GetHttpFilters() {
		validateEnvoy(t, f)
	}
	checkExtAuthz(t, hcm.GetHttpFilters(), cfg)
}

// TestEnvoyREADMENamesEveryDenial proves that the README's short section
// tells every answer a denied request may get: each reason Usher sends in
// x-usher-reason, and each HTTP status it sends it with, as docs/envoy.md's
// table does.
func TestEnvoyREADMENamesEveryDenial(t *testing.T) {
	section := sectionOf(t, "../README.md", "## Gating HTTP APIs with Envoy")
	for _, d := range []struct {
		reason string
		status string
	}{
		{server.ReasonNoGrant, "403"},
		{server.ReasonBlocked, "403"},
		{server.ReasonUnknownResource, "403"},
		{server.ReasonNoRoute, "403"},
		{server.ReasonMethodOverride, "403"},
		{server.ReasonUnauthenticated, "401"},
		{server.ReasonInvalidResource, "400"},
	} {
		if !strings.Contains(section, "`"+d.reason+"`") {
			t.Errorf("README.md's Envoy section does not name the reason %s, sent with %s", d.reason, d.status)
		}
		if !strings.Contains(section, d.status) {
			t.Errorf("README.md's Envoy section does not name the status %s, sent with %s", d.status, d.reason)
		}
	}
}

// checkExtAuthz checks that filters ask Usher, as cfg is served, before
// the router: over the v3 protocol, failing closed, and sending the header
// the subject comes from.
func checkExtAuthz(t *testing.T, filters []*hcmv3.HttpFilter, cfg server.EnvoyConfig) {
	t.Helper()
	if len(filters) != 2 || filters[0].GetName() != "envoy.filters.http.ext_authz" || filters[1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http_filters are not ext_authz then the router: %v", filters)
	}
	var ext extauthzv3.ExtAuthz
	if err := filters[0].GetTypedConfig().UnmarshalTo(&ext); err != nil {
		t.Fatalf("ext_authz's typed_config: %v", err)
	}
	if ext.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version = %s, want V3", ext.GetTransportApiVersion())
	}
	if ext.GetFailureModeAllow() {
		t.Errorf("failure_mode_allow is true: Envoy would let requests through when Usher cannot answer")
	}
	if ext.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "usher" {
		t.Errorf("grpc_service = %v, want the usher cluster", ext.GetGrpcService())
	}
	header := cfg.Subject.Header
	if j := cfg.Subject.JWT; j != nil {
		header = cmp.Or(j.Header, "authorization")
	}
	sent := false
	for _, p := range ext.GetAllowedHeaders().GetPatterns() {
		sent = sent || p.GetExact() == header
	}
	if ext.GetAllowedHeaders() != nil && !sent {
		t.Errorf("allowed_headers %v leave out %s, where Usher reads the subject", ext.GetAllowedHeaders(), header)
	}
	for _, override := range overrideHeaders {
		sent := false
		for _, p := range ext.GetAllowedHeaders().GetPatterns() {
			sent = sent || p.GetExact() == override
		}
		if ext.GetAllowedHeaders() != nil && !sent {
			t.Errorf("allowed_headers %v leave out %s, a method override Usher must see", ext.GetAllowedHeaders(), override)
		}
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
