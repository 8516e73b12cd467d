package yamldoc

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Spelt returns an error naming the first key of js, a file's YAML read as
// JSON, that names a field of v's type only when case is ignored, as
// encoding/json matches keys to fields even when it disallows unknown
// ones: a file's "Kind: admin" would otherwise set kind. A key that names
// no field at all is left to the decoder; path is where js sits in the
// file ("" at its top).
func Spelt(js []byte, v any, path string) error {
	var doc any
	if json.Unmarshal(js, &doc) != nil {
		return nil // the decoder says what is wrong
	}
	return spelt(doc, reflect.TypeOf(v), path)
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

func spelt(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			fields[cmp.Or(name, f.Name)] = f.Type
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			at := join(path, key)
			ft, ok := fields[key]
			if !ok {
				for _, name := range slices.Sorted(maps.Keys(fields)) {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("%s: unknown field %q: field names are matched exactly; this one is %q", at, key, name)
					}
				}
				continue
			}
			if err := spelt(obj[key], ft, at); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		list, ok := doc.([]any)
		if !ok || t == rawMessage {
			return nil
		}
		for i, e := range list {
			if err := spelt(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			if err := spelt(obj[key], t.Elem(), join(path, key)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
