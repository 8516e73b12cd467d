package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/rfc3339"
)

// Document is a policy file as read: the message, and where each of its
// fields is written, so that a finding about any field can point at its
// line.
type Document struct {
	// Name is the file's name in messages.
	Name   string
	Policy *usherv1.Policy
	values map[string]Position // a field's path -> where its value starts
	keys   map[string]Position // a field's path -> where its name is written
	// broken holds the top-level fields with schema errors: Check does not
	// judge references into a list that was not read whole.
	broken map[string]bool
	// read holds the schema errors Read found.
	read Diagnostics
	// kept holds, for a list some of whose items were dropped (empty, or of
	// the wrong shape), the file's index of each item the message holds, by
	// the list's path in the file.
	kept map[string][]int
}

// Position returns where the field at path is written: its value, or for
// a path the file does not hold (a required field left out), the nearest
// enclosing field that it does. A leading "policy." (as the engine and the
// server name fields) is ignored.
func (d *Document) Position(path string) Position {
	return d.filePosition(d.filePath(strings.TrimPrefix(strings.TrimPrefix(path, "policy"), ".")))
}

// filePath is path, a field's in the message, with each list index turned
// into the file's: an item the reader dropped shifts the indexes after it.
func (d *Document) filePath(path string) string {
	if len(d.kept) == 0 {
		return path
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(path, '[')
		j := strings.IndexByte(path, ']')
		if i < 0 || j < i {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:i])
		index := path[i+1 : j]
		if n, err := strconv.Atoi(index); err == nil {
			if kept, ok := d.kept[b.String()]; ok && n < len(kept) {
				index = strconv.Itoa(kept[n])
			}
		}
		b.WriteString("[" + index + "]")
		path = path[j+1:]
	}
}

// filePosition is Position of a path in the file.
func (d *Document) filePosition(path string) Position {
	for {
		if p, ok := d.values[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return d.values[""]
		}
		path = path[:i]
	}
}

// keyPosition is where the name of the field at path is written, or its
// value's position when it has no name (a list item).
func (d *Document) keyPosition(path string) Position {
	if p, ok := d.keys[path]; ok {
		return p
	}
	return d.Position(path)
}

// Diagnose places a finding about the field at path (with or without the
// engine's "policy." prefix) in the file.
func (d *Document) Diagnose(path string, warning bool, format string, args ...any) Diagnostic {
	path = d.filePath(strings.TrimPrefix(strings.TrimPrefix(path, "policy"), "."))
	return Diagnostic{File: d.Name, Position: d.filePosition(path), Path: path, Message: fmt.Sprintf(format, args...), Warning: warning}
}

// Read parses a policy written as YAML or JSON, with the usher.v1.Policy
// message as its schema: field names are the proto's, in snake_case or
// lowerCamelCase. It reports every schema error at once (unknown fields, a
// list where a value belongs, a number out of range...), each at its line
// and column; the Document holds whatever could be read. name is the file's
// name in messages.
func Read(name string, data []byte) (*Document, Diagnostics) {
	r := &reader{doc: &Document{Name: name, Policy: &usherv1.Policy{}, values: map[string]Position{}, keys: map[string]Position{}, broken: map[string]bool{}}}
	r.doc.values[""] = Position{1, 1}
	r.read(data)
	r.doc.read = r.diags
	return r.doc, r.diags
}

func (r *reader) read(data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			r.add(Position{}, "", "%s", noPolicy)
		} else {
			r.syntax(err)
		}
		return
	}
	var second yaml.Node
	if err := dec.Decode(&second); err == nil {
		r.add(Position{second.Line, second.Column}, "", "a policy file holds one YAML document; a second one starts here")
	} else if !errors.Is(err, io.EOF) {
		r.syntax(err)
	}
	if len(root.Content) == 0 || isNull(resolve(root.Content[0])) {
		r.add(Position{}, "", "%s", noPolicy)
		return
	}
	r.message(resolve(root.Content[0]), r.doc.Policy.ProtoReflect(), "")
}

const noPolicy = "the file holds no policy; a policy is a mapping with permissions, roles and the rest"

type reader struct {
	doc   *Document
	diags Diagnostics
	// visits counts the nodes read, an alias's each time it is named: a
	// few anchors named by many entries expand past what the file's size
	// says, and past maxVisits the reader stops.
	visits int
}

// maxVisits bounds the nodes a file's aliases may expand to.
const maxVisits = 1_000_000

// visit counts a node read, and reports false, once, past maxVisits.
func (r *reader) visit(n *yaml.Node, path string) bool {
	r.visits++
	if r.visits == maxVisits+1 {
		r.add(pos(n), path, "the file's aliases expand to more than %d nodes; name fewer anchors from fewer places", maxVisits)
	}
	return r.visits <= maxVisits
}

func (r *reader) add(at Position, path, format string, args ...any) {
	if m := lostEntry.FindStringSubmatch(path); m != nil {
		r.doc.broken[m[1]] = true
	}
	r.diags = append(r.diags, Diagnostic{File: r.doc.Name, Position: at, Path: path, Message: fmt.Sprintf(format, args...)})
}

// lostEntry matches the path of an error that loses a list's entry, or
// its name: a reference to that name cannot be judged.
var lostEntry = regexp.MustCompile(`^([a-z_]+)(\[\d+\](\.name)?)?$`)

// yamlLine finds the line in the YAML parser's messages, which carry no
// column: "yaml: line 4: did not find expected key".
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func (r *reader) syntax(err error) {
	msg := err.Error()
	at := Position{}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		at = Position{line, 1}
		msg = strings.TrimPrefix(msg, m[0])
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	r.add(at, "", "not valid YAML: %s", msg)
}

func pos(n *yaml.Node) Position { return Position{n.Line, n.Column} }

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "want X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return n.Value
	case "!!null":
		return "nothing"
	}
	return strconv.Quote(n.Value)
}

// pairs returns a mapping's key and value nodes, expanding merge keys
// (<<: *defaults): a key written in the mapping wins over a merged one,
// and one merged earlier over one merged later. Each mapping is merged
// once, the mapping itself never, and counts as a node read: a mapping
// that merges itself, or a chain of mappings each merging the one before
// from many places, is read as what it says.
func (r *reader) pairs(n *yaml.Node, path string) [][2]*yaml.Node {
	return r.merge(n, path, map[*yaml.Node]bool{n: true})
}

func (r *reader) merge(n *yaml.Node, path string, merged map[*yaml.Node]bool) [][2]*yaml.Node {
	var own, from [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			v = resolve(v)
			sources := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				sources = v.Content
			}
			for _, s := range sources {
				if s = resolve(s); s.Kind != yaml.MappingNode {
					// YAML's merge takes mappings only: anything else
					// would be merged as nothing, silently.
					r.add(pos(s), path, "a merge key (<<) takes a mapping or a list of mappings, got %s", describe(s))
					continue
				}
				if !merged[s] && r.visit(s, path) {
					merged[s] = true
					from = append(from, r.merge(s, path, merged)...)
				}
			}
			continue
		}
		own = append(own, [2]*yaml.Node{k, v})
	}
	written := map[string]bool{}
	for _, p := range own {
		written[p[0].Value] = true
	}
	for _, m := range from {
		if !written[m[0].Value] {
			written[m[0].Value] = true
			own = append(own, m)
		}
	}
	return own
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// message reads a mapping into m, field by field. It reports false, with
// nothing read, for a node that is not a mapping: a list drops that item,
// whose empty fields are not the file's mistakes.
func (r *reader) message(n *yaml.Node, m protoreflect.Message, path string) bool {
	if !r.visit(n, path) {
		return false
	}
	desc := m.Descriptor()
	if n.Kind != yaml.MappingNode {
		r.add(pos(n), path, "want a mapping of %s fields, got %s", desc.Name(), describe(n))
		return false
	}
	fields := desc.Fields()
	seen := map[protoreflect.FieldNumber]*yaml.Node{}
	for _, kv := range r.pairs(n, path) {
		key, value := kv[0], resolve(kv[1])
		if key.Kind != yaml.ScalarNode {
			r.add(pos(key), path, "a field name must be a plain word, not %s", describe(key))
			continue
		}
		fd := fields.ByTextName(key.Value)
		if fd == nil {
			fd = fields.ByJSONName(key.Value)
		}
		if fd == nil {
			r.add(pos(key), join(path, key.Value), "unknown field %q%s", key.Value, suggestField(key.Value, desc))
			if path == "" {
				// A misspelt list: what it meant to hold was not read.
				r.doc.broken[closest(strings.ToLower(key.Value), fieldNames(desc))] = true
			}
			continue
		}
		p := join(path, string(fd.Name()))
		if first, dup := seen[fd.Number()]; dup {
			r.add(pos(key), p, "the field is given twice (first at line %d)", first.Line)
			continue
		}
		seen[fd.Number()] = key
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if other := m.WhichOneof(od); other != nil {
				r.add(pos(key), p, "only one of %s may be given; %s is given too", oneofNames(od), other.Name())
				continue
			}
		}
		r.doc.keys[p] = pos(key)
		r.doc.values[p] = pos(value)
		r.field(value, m, fd, p)
	}
	return true
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	var names []string
	for i := 0; i < od.Fields().Len(); i++ {
		names = append(names, string(od.Fields().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

// field reads the value of one field of m.
func (r *reader) field(n *yaml.Node, m protoreflect.Message, fd protoreflect.FieldDescriptor, path string) {
	if !r.visit(n, path) || isNull(n) {
		return // null leaves the field unset, as in JSON
	}
	switch {
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			r.add(pos(n), path, "want a list, got %s", describe(n))
			return
		}
		list := m.Mutable(fd).List()
		var kept []int // the file's index of each item list holds
		defer func() {
			if len(kept) < len(n.Content) {
				if r.doc.kept == nil {
					r.doc.kept = map[string][]int{}
				}
				r.doc.kept[path] = kept
			}
		}()
		for i, item := range n.Content {
			item = resolve(item)
			p := fmt.Sprintf("%s[%d]", path, i)
			if !r.visit(item, p) {
				return
			}
			r.doc.values[p] = pos(item)
			if isNull(item) {
				r.add(pos(item), p, "a list item must not be empty")
				continue
			}
			if isMessage(fd) {
				elem := list.NewElement()
				if !r.message(item, elem.Message(), p) {
					continue
				}
				list.Append(elem)
				kept = append(kept, i)
				continue
			}
			if v, ok := r.scalar(item, fd, p); ok {
				list.Append(v)
				kept = append(kept, i)
			}
		}
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			r.add(pos(n), path, "want a mapping, got %s", describe(n))
			return
		}
		mp := m.Mutable(fd).Map()
		seen := map[string]int{}
		for _, kv := range r.pairs(n, path) {
			key, value := kv[0], resolve(kv[1])
			p := join(path, key.Value)
			if !r.visit(value, p) {
				return
			}
			if line, dup := seen[key.Value]; dup {
				r.add(pos(key), p, "the key is given twice (first at line %d)", line)
				continue
			}
			seen[key.Value] = key.Line
			k, ok := r.scalar(key, fd.MapKey(), p)
			if !ok {
				continue
			}
			r.doc.keys[p] = pos(key)
			r.doc.values[p] = pos(value)
			if isMessage(fd.MapValue()) {
				v := mp.NewValue()
				r.message(value, v.Message(), p)
				mp.Set(k.MapKey(), v)
				continue
			}
			if isNull(value) {
				r.add(pos(value), p, "a value must be given")
				continue
			}
			if v, ok := r.scalar(value, fd.MapValue(), p); ok {
				mp.Set(k.MapKey(), v)
			}
		}
	case isMessage(fd):
		r.message(n, m.Mutable(fd).Message(), path)
	default:
		if v, ok := r.scalar(n, fd, path); ok {
			m.Set(fd, v)
		}
	}
}

// isMessage reports whether fd holds a message written as a mapping; the
// well-known Timestamp and Duration are written as strings.
func isMessage(fd protoreflect.FieldDescriptor) bool {
	md := fd.Message()
	return md != nil && md.FullName() != timestampName && md.FullName() != durationName
}

const (
	timestampName protoreflect.FullName = "google.protobuf.Timestamp"
	durationName  protoreflect.FullName = "google.protobuf.Duration"
)

// scalar reads a single value of fd's kind.
func (r *reader) scalar(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) (protoreflect.Value, bool) {
	fail := func(format string, args ...any) (protoreflect.Value, bool) {
		r.add(pos(n), path, format, args...)
		return protoreflect.Value{}, false
	}
	if md := fd.Message(); md != nil {
		if n.Kind != yaml.ScalarNode {
			return fail("want a %s, got %s", wellKnownWant(md.FullName()), describe(n))
		}
		switch md.FullName() {
		case timestampName:
			t, err := rfc3339.Parse(n.Value)
			if errors.Is(err, rfc3339.ErrLeapSecond) {
				return fail("%v, got %s", err, describe(n))
			}
			if err != nil {
				return fail("want a time such as 2030-01-01T09:00:00Z, got %s", describe(n))
			}
			return protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()), true
		case durationName:
			d, err := time.ParseDuration(n.Value)
			if err != nil {
				return fail("want a duration such as 30s or 15m, got %s", describe(n))
			}
			return protoreflect.ValueOfMessage(durationpb.New(d).ProtoReflect()), true
		}
		return fail("cannot read a %s here", md.FullName())
	}
	if n.Kind != yaml.ScalarNode {
		return fail("want %s, got %s", kindWant(fd), describe(n))
	}
	tag := n.ShortTag()
	switch fd.Kind() {
	case protoreflect.StringKind:
		// A word YAML reads as a number or a boolean is still the word
		// written: a permission may be called 404.
		return protoreflect.ValueOfString(n.Value), true
	case protoreflect.BoolKind:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			return fail("want true or false, got %s", describe(n))
		}
		return protoreflect.ValueOfBool(b), true
	case protoreflect.EnumKind:
		if tag == "!!int" {
			i, err := strconv.ParseInt(n.Value, 0, 32)
			if err == nil && fd.Enum().Values().ByNumber(protoreflect.EnumNumber(i)) != nil {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(i)), true
			}
		} else if v := fd.Enum().Values().ByName(protoreflect.Name(n.Value)); v != nil {
			return protoreflect.ValueOfEnum(v.Number()), true
		}
		return fail("want one of %s, got %s", enumNames(fd.Enum()), describe(n))
	case protoreflect.BytesKind:
		b, err := base64.StdEncoding.DecodeString(n.Value)
		if err != nil {
			return fail("want base64, got %s", describe(n))
		}
		return protoreflect.ValueOfBytes(b), true
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(n.Value, 64)
		if (tag != "!!float" && tag != "!!int" && tag != "!!str") || err != nil {
			return fail("want a number, got %s", describe(n))
		}
		if fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), true
		}
		return protoreflect.ValueOfFloat64(f), true
	}
	// Integers: written as numbers, or as quoted digits (as JSON writes
	// 64-bit ones).
	lo, hi := intRange(fd.Kind())
	var (
		i   int64
		u   uint64
		err error
	)
	switch tag {
	case "!!int":
		if lo < 0 {
			err = n.Decode(&i)
		} else if strings.HasPrefix(n.Value, "-") {
			return fail("must not be negative, got %s", n.Value)
		} else {
			err = n.Decode(&u)
		}
	case "!!str":
		if lo < 0 {
			i, err = strconv.ParseInt(n.Value, 10, 64)
		} else {
			u, err = strconv.ParseUint(n.Value, 10, 64)
		}
	default:
		return fail("want a whole number, got %s", describe(n))
	}
	if err != nil {
		return fail("want a whole number from %d to %d, got %s", lo, hi, describe(n))
	}
	if lo < 0 {
		if i < lo || i > int64(hi) {
			return fail("want a whole number from %d to %d, got %s", lo, hi, n.Value)
		}
		switch fd.Kind() {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			return protoreflect.ValueOfInt32(int32(i)), true
		}
		return protoreflect.ValueOfInt64(i), true
	}
	if u > hi {
		return fail("want a whole number from 0 to %d, got %s", hi, n.Value)
	}
	switch fd.Kind() {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(u)), true
	}
	return protoreflect.ValueOfUint64(u), true
}

func intRange(k protoreflect.Kind) (int64, uint64) {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 0, math.MaxUint64
	}
	return math.MinInt64, math.MaxInt64
}

func kindWant(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "a single value"
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.EnumKind:
		return "one of " + enumNames(fd.Enum())
	}
	return "a number"
}

func wellKnownWant(name protoreflect.FullName) string {
	if name == durationName {
		return "duration such as 30s"
	}
	return "time such as 2030-01-01T09:00:00Z"
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

// suggestField says which field an unknown name was probably meant to be,
// or lists the fields there are.
func suggestField(name string, md protoreflect.MessageDescriptor) string {
	names := fieldNames(md)
	if s := closest(strings.ToLower(name), names); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return fmt.Sprintf(" (%s has %s)", md.Name(), strings.Join(names, ", "))
}

func fieldNames(md protoreflect.MessageDescriptor) []string {
	var names []string
	for i := 0; i < md.Fields().Len(); i++ {
		names = append(names, string(md.Fields().Get(i).Name()))
	}
	return names
}

// closest returns the candidate nearest to word by edit distance, if it is
// near enough to be a misspelling of it: at most two edits, and fewer than
// half the word's length.
func closest(word string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		// Each edit changes the length by one at most: a candidate whose
		// length alone puts it as far as the best is not measured.
		if c == word || max(len(c)-len(word), len(word)-len(c)) >= bestDist {
			continue
		}
		if d := editDistance(word, c); d < bestDist && 2*d < max(len(word), 2) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and
// transpositions of neighbours that turn a into b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
