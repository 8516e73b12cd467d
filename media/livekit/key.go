package livekit

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/usher-authz/usher/internal/yamldoc"
)

// The environment variables KeyFromEnv reads.
const (
	EnvAPIKey    = "USHER_LIVEKIT_API_KEY"
	EnvAPISecret = "USHER_LIVEKIT_API_SECRET"
)

// LoadKey reads the API key from path when it is set, else from the
// environment through lookup (os.LookupEnv in a server). Setting both is
// refused: which one wins would be a guess. name picks a key of the file;
// from the environment, it must be the key found there, or signing with
// another would go unnoticed until the SFU refuses every token.
func LoadKey(path, name string, lookup func(string) (string, bool)) (APIKey, error) {
	if path == "" {
		k, err := KeyFromEnv(lookup)
		if err == nil && name != "" && k.Key != name {
			return APIKey{}, fmt.Errorf("key %q: %s holds the key %q, and no key file is given to choose %q from", name, EnvAPIKey, k.Key, name)
		}
		if err != nil && name != "" {
			return APIKey{}, fmt.Errorf("key %q: no key file is given to choose it from, and %w", name, err)
		}
		return k, err
	}
	for _, v := range []string{EnvAPIKey, EnvAPISecret} {
		if _, ok := lookup(v); ok {
			return APIKey{}, fmt.Errorf("key file %s: %s is set too; give the key one way", path, v)
		}
	}
	return LoadKeyFile(path, name)
}

// KeyFromEnv reads the key from USHER_LIVEKIT_API_KEY and
// USHER_LIVEKIT_API_SECRET.
func KeyFromEnv(lookup func(string) (string, bool)) (APIKey, error) {
	var k APIKey
	for _, v := range []struct {
		name string
		dst  *string
	}{{EnvAPIKey, &k.Key}, {EnvAPISecret, &k.Secret}} {
		val, ok := lookup(v.name)
		if !ok || val == "" {
			return APIKey{}, fmt.Errorf("%s: not set; set %s and %s, or give a key file", v.name, EnvAPIKey, EnvAPISecret)
		}
		*v.dst = val
	}
	if err := k.Validate(); err != nil {
		return APIKey{}, fmt.Errorf("%s: %w", EnvAPISecret, err)
	}
	return k, nil
}

// LoadKeyFile reads a key file in LiveKit's own format, one `key: secret`
// line per key, the file livekit-server's --key-file reads. With several
// keys, name chooses one; with one, name may be empty. Like livekit-server,
// it refuses a file that others than its owner may read.
func LoadKeyFile(path, name string) (APIKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return APIKey{}, fmt.Errorf("key file: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return APIKey{}, fmt.Errorf("key file %s: mode %04o lets others read the secrets; make it 0600", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return APIKey{}, fmt.Errorf("key file: %w", err)
	}
	keys, err := parseKeyFile(data)
	if err != nil {
		return APIKey{}, fmt.Errorf("key file %s: %w", path, err)
	}
	if name == "" {
		if len(keys) != 1 {
			return APIKey{}, fmt.Errorf("key file %s: holds %d keys (%v); name the one to use", path, len(keys), slices.Sorted(maps.Keys(keys)))
		}
		for k := range keys {
			name = k
		}
	}
	secret, ok := keys[name]
	if !ok {
		return APIKey{}, fmt.Errorf("key file %s: no key %q; it holds %v", path, name, slices.Sorted(maps.Keys(keys)))
	}
	k := APIKey{Key: name, Secret: secret}
	if err := k.Validate(); err != nil {
		return APIKey{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// parseKeyFile decodes the YAML map. Errors from the YAML decoder are not
// passed on: they may quote the line, and the line holds a secret.
func parseKeyFile(data []byte) (map[string]string, error) {
	var node yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&node); err != nil {
		return nil, errors.New("not a YAML map of key: secret lines")
	}
	if yamldoc.One(data) != nil {
		return nil, errors.New("holds more than one YAML document; the keys are a single map of key: secret lines")
	}
	doc := &node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode || len(doc.Content) == 0 {
		return nil, errors.New("not a YAML map of key: secret lines")
	}
	keys := make(map[string]string, len(doc.Content)/2)
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode || k.Value == "" {
			return nil, fmt.Errorf("line %d: not a key: secret line", k.Line)
		}
		if _, dup := keys[k.Value]; dup {
			return nil, fmt.Errorf("line %d: key %q appears twice", k.Line, k.Value)
		}
		keys[k.Value] = v.Value
	}
	return keys, nil
}
