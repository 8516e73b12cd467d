package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// printer prints answers as --output says: JSON, protojson's mapping of
// the response message (what grpcurl prints too), or an aligned table.
type printer struct {
	w     io.Writer
	table bool
}

// A tableFunc writes a message as a table, for a command whose answer
// reads better in a form of its own than in the generic one.
type tableFunc func(w io.Writer, m proto.Message)

// print writes one answer: indented JSON, or a table written by table (the
// generic one when table is nil).
func (p *printer) print(m proto.Message, table tableFunc) {
	if !p.table {
		raw, err := protojson.Marshal(m)
		if err != nil {
			fmt.Fprintln(p.w, err)
			return
		}
		// protojson's own spacing is deliberately unstable; encoding/json
		// lays it out.
		var out bytes.Buffer
		json.Indent(&out, raw, "", "  ")
		fmt.Fprintln(p.w, out.String())
		return
	}
	if table == nil {
		table = writeTable
	}
	var out bytes.Buffer
	tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	table(tw, m)
	tw.Flush()
	// A row whose last cells are empty ends in the padding of the others.
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		body, ended := strings.CutSuffix(line, "\n")
		fmt.Fprint(p.w, strings.TrimRight(body, " "))
		if ended {
			fmt.Fprintln(p.w)
		}
	}
}

// line prints one message of a stream: a line of compact JSON (JSON
// Lines, for jq and friends), or the line text makes of it for a table.
func (p *printer) line(m proto.Message, text func(proto.Message) string) {
	if !p.table {
		raw, err := protojson.Marshal(m)
		if err != nil {
			fmt.Fprintln(p.w, err)
			return
		}
		var out bytes.Buffer
		json.Compact(&out, raw)
		fmt.Fprintln(p.w, out.String())
		return
	}
	fmt.Fprintln(p.w, text(m))
}

// writeTable is the generic table of a message. A message that is a list
// (one repeated field, beside the revision, the page token and such) is a
// table with a row per entry and a column per field any entry sets. Any
// other message is a "field value" line per field, those of nested
// messages inline, followed by a table per list of messages it holds.
func writeTable(w io.Writer, m proto.Message) {
	msg := m.ProtoReflect()
	if fd := listField(msg.Descriptor()); fd != nil {
		writeList(w, msg.Get(fd).List(), fd)
		return
	}
	scalars := flatten(msg, "")
	for _, kv := range scalars {
		fmt.Fprintf(w, "%s\t%s\n", kv[0], kv[1])
	}
	sep := len(scalars) > 0
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !isTableList(fd) {
			continue
		}
		if l := msg.Get(fd).List(); l.Len() > 0 {
			if sep {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%s:\n", fd.Name())
			writeList(w, l, fd)
			sep = true
		}
	}
}

// listMetadata are the fields a list answer carries beside its list.
var listMetadata = map[protoreflect.Name]bool{"revision": true, "next_page_token": true, "resource_known": true}

// listField is the list of a message that is one, or nil.
func listField(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	var list protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && list == nil:
			list = fd
		case !listMetadata[fd.Name()]:
			return nil
		}
	}
	return list
}

// isTableList says whether a field is a list of messages, which a table of
// its own lays out; a list of values is a cell.
func isTableList(fd protoreflect.FieldDescriptor) bool {
	return fd.IsList() && fd.Message() != nil && !isWellKnown(fd.Message())
}

// flatten lists a message's set fields (and its bools, set or not) as
// name and value, those of nested messages under their own names, or
// prefix.name when the nesting would make a name ambiguous. Lists of
// messages are left out, for writeTable to lay out.
func flatten(msg protoreflect.Message, prefix string) [][2]string {
	var out [][2]string
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if isTableList(fd) || fd.ContainingOneof() != nil && !msg.Has(fd) {
			continue
		}
		name := prefix + string(fd.Name())
		if fd.Message() != nil && !fd.IsMap() && !isWellKnown(fd.Message()) {
			if msg.Has(fd) {
				out = append(out, flatten(msg.Get(fd).Message(), name+".")...)
			}
			continue
		}
		if !msg.Has(fd) && fd.Kind() != protoreflect.BoolKind {
			continue
		}
		out = append(out, [2]string{name, cell(fd, msg.Get(fd))})
	}
	// Nested names stand alone where no other field has them.
	count := map[string]int{}
	for _, kv := range out {
		count[kv[0][strings.LastIndex(kv[0], ".")+1:]]++
	}
	for i, kv := range out {
		if short := kv[0][strings.LastIndex(kv[0], ".")+1:]; count[short] == 1 {
			out[i][0] = short
		}
	}
	return out
}

// writeList writes a list as a table: a header of upper-case field names,
// then a row per entry.
func writeList(w io.Writer, l protoreflect.List, fd protoreflect.FieldDescriptor) {
	if fd.Message() == nil || isWellKnown(fd.Message()) {
		fmt.Fprintln(w, strings.ToUpper(string(fd.Name())))
		for i := range l.Len() {
			fmt.Fprintln(w, scalar(fd, l.Get(i)))
		}
		return
	}
	fields := fd.Message().Fields()
	var columns []protoreflect.FieldDescriptor
	for j := range fields.Len() {
		col := fields.Get(j)
		for i := range l.Len() {
			if shown(l.Get(i).Message(), col) {
				columns = append(columns, col)
				break
			}
		}
	}
	if l.Len() == 0 {
		for j := range fields.Len() {
			columns = append(columns, fields.Get(j))
		}
	}
	header := make([]string, len(columns))
	for j, col := range columns {
		header[j] = strings.ToUpper(string(col.Name()))
	}
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for i := range l.Len() {
		row := l.Get(i).Message()
		cells := make([]string, len(columns))
		for j, col := range columns {
			if shown(row, col) || col.Kind() == protoreflect.BoolKind {
				cells[j] = cell(col, row.Get(col))
			}
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
}

// shown reports whether a table shows col's value in row: when it is set,
// and when it is a number that has no presence apart from its value, whose
// zero is a value (a limit or a count of 0, which an empty cell, or no
// column, would show as none), unless its 0 means no limit.
func shown(row protoreflect.Message, col protoreflect.FieldDescriptor) bool {
	if row.Has(col) {
		return true
	}
	if col.HasPresence() || col.IsList() || col.IsMap() || noLimitAtZero[col.FullName()] {
		return false
	}
	switch col.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind,
		protoreflect.FloatKind, protoreflect.DoubleKind:
		return true
	}
	return false
}

// noLimitAtZero are the numbers whose 0 means no limit: a role's
// max_holders, a rule's max_participants. Shown as 0, they would read as a
// limit that lets no one in.
var noLimitAtZero = map[protoreflect.FullName]bool{
	"usher.v1.Role.max_holders":           true,
	"usher.v1.Admission.max_participants": true,
}

// cell renders one field's value for a table.
func cell(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.IsList():
		l := v.List()
		parts := make([]string, l.Len())
		for i := range l.Len() {
			parts[i] = scalar(fd, l.Get(i))
		}
		return strings.Join(parts, ",")
	case fd.IsMap():
		var parts []string
		v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			parts = append(parts, k.String()+"="+scalar(fd.MapValue(), v))
			return true
		})
		slices.Sort(parts)
		return strings.Join(parts, ",")
	}
	return scalar(fd, v)
}

// scalar renders one value: enums without their type's prefix
// (REASON_GRANTED is GRANTED), times in RFC 3339, bytes in hex, other
// messages as compact JSON, and text that holds a character that is not
// printable quoted, as Go quotes it.
func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		// Free text comes from end users too (a knock's note is a
		// display name): a tab, a newline or a terminal's escape in it
		// would forge rows of a table, or rewrite the screen, of the
		// operator who reads it.
		s := v.String()
		if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
			return strconv.Quote(s)
		}
		return s
	case protoreflect.EnumKind:
		return enumName(fd.Enum(), v.Enum())
	case protoreflect.BytesKind:
		return hex.EncodeToString(v.Bytes())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		switch m := v.Message().Interface().(type) {
		case *timestamppb.Timestamp:
			return m.AsTime().Format(time.RFC3339)
		case *durationpb.Duration:
			return m.AsDuration().String()
		}
		raw, _ := protojson.Marshal(v.Message().Interface())
		var out bytes.Buffer
		json.Compact(&out, raw)
		return out.String()
	}
	return v.String()
}

// enumName is a value's name without the prefix every value of its enum
// shares: GRANTED for REASON_GRANTED, JOINED for CALL_EVENT_KIND_JOINED.
func enumName(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	ev := ed.Values().ByNumber(n)
	if ev == nil {
		return fmt.Sprint(n)
	}
	name := string(ev.Name())
	prefix := string(ed.Values().Get(0).Name())
	prefix = strings.TrimSuffix(prefix, "UNSPECIFIED")
	if prefix != "" && strings.HasSuffix(prefix, "_") && strings.HasPrefix(name, prefix) && len(name) > len(prefix) {
		return name[len(prefix):]
	}
	return name
}

// isWellKnown says whether a message type prints as one value.
func isWellKnown(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Timestamp", "google.protobuf.Duration":
		return true
	}
	return false
}

// follow prints each message of a stream as a line until it ends; an error
// after the first message says the revision to resume after.
func follow[M proto.Message](recv func() (M, error), revision func(M) uint64, p *printer, text func(proto.Message) string) error {
	received, last := false, uint64(0)
	for {
		msg, err := recv()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && received:
			return fmt.Errorf("%w (resume with --after %d)", err, last)
		case err != nil:
			return err
		}
		received, last = true, revision(msg)
		p.line(msg, text)
	}
}

// readInput reads the file name, or stdin for "-", and returns its bytes
// and the name to report errors under.
func readInput(stdin io.Reader, name string) ([]byte, string, error) {
	if name == "-" {
		data, err := io.ReadAll(stdin)
		return data, "stdin", err
	}
	data, err := os.ReadFile(name)
	return data, name, err
}
