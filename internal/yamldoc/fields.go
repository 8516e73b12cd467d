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

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

func spelt(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return nil // the type reads its JSON its own way
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		fields := map[string]reflect.Type{}
		fieldsOf(t, fields)
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

// fieldsOf adds to fields the JSON names of t's fields, by their types, as
// encoding/json reads them: the fields of an untagged embedded struct as
// t's own, after t's, which win over them.
func fieldsOf(t reflect.Type, fields map[string]reflect.Type) {
	var embedded []reflect.Type
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if ft := f.Type; f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if f.IsExported() {
			fields[cmp.Or(name, f.Name)] = f.Type
		}
	}
	for _, e := range embedded {
		inner := map[string]reflect.Type{}
		fieldsOf(e, inner)
		for name, ft := range inner {
			if _, ok := fields[name]; !ok {
				fields[name] = ft
			}
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
