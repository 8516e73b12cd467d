package codec

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// maxDepth is how deeply nested a message check may judge; a deeper one
// is left to protobuf-go, whose own limit is far higher.
const maxDepth = 100

// shape is what the codec needs to know of a message type.
type shape struct {
	fields []field // by number
	// dropsUnknown: the type's vtproto code skips the fields it does not
	// declare, where protobuf-go keeps them. So does vtprotobuf's code for
	// the well-known types (Timestamp, Duration), which cannot reach
	// protobuf-go's unexported field for them.
	dropsUnknown bool
	// marshalVT: MarshalToSizedBufferVT writes all that proto.Marshal
	// would (strings apart), no type that drops unknown fields, no oneof of
	// messages and no map to messages being within reach.
	marshalVT bool
	// marshalBuilt: MarshalToSizedBufferVT writes all that proto.Marshal
	// would of a value whose Timestamps and Durations hold no unknown
	// fields, as those the process builds itself do: marshalVT but for
	// those two, whose vtprotobuf code writes their declared fields alone.
	marshalBuilt bool
	// alias: Alias marked the type; built: Built did.
	alias, built atomic.Bool
}

// field is one declared field; the zero field is an undeclared one.
type field struct {
	declared bool
	wire     protowire.Type // the wire type of its kind
	packed   bool           // a repeated number, which may come packed
	utf8     bool           // a string
	group    bool           // a group, which check does not judge
	msg      *shape         // a message or a map's entry
}

var shapes sync.Map // protoreflect.MessageDescriptor -> *shape

func shapeOf(m proto.Message) *shape {
	md := m.ProtoReflect().Descriptor()
	if s, ok := shapes.Load(md); ok {
		return s.(*shape)
	}
	built := map[protoreflect.MessageDescriptor]*shape{}
	s := build(md, built)
	// A type holding one that is not marshalVT is not either, until
	// nothing changes; a loop of recursive types keeps it. So for
	// marshalBuilt.
	for changed := true; changed; {
		changed = false
		for _, s := range built {
			for _, f := range s.fields {
				if f.msg != nil && s.marshalVT && !f.msg.marshalVT {
					s.marshalVT, changed = false, true
				}
				if f.msg != nil && s.marshalBuilt && !f.msg.marshalBuilt {
					s.marshalBuilt, changed = false, true
				}
			}
		}
	}
	actual, _ := shapes.LoadOrStore(md, s)
	return actual.(*shape)
}

// build makes md's shape and those of the messages it holds, with
// marshalVT yet to be settled; building is where recursive types close
// their loops.
func build(md protoreflect.MessageDescriptor, built map[protoreflect.MessageDescriptor]*shape) *shape {
	if s, ok := built[md]; ok {
		return s
	}
	// protobuf-go drops the unknown fields of a map's entry too.
	s := &shape{dropsUnknown: !md.IsMapEntry() && !generated(md)}
	s.marshalVT = !s.dropsUnknown
	s.marshalBuilt = s.marshalVT || builtKnown[md.FullName()]
	built[md] = s
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		n := int(fd.Number())
		if n >= len(s.fields) {
			s.fields = append(s.fields, make([]field, n+1-len(s.fields))...)
		}
		f := field{declared: true}
		switch fd.Kind() {
		case protoreflect.StringKind:
			f.wire, f.utf8 = protowire.BytesType, true
		case protoreflect.BytesKind:
			f.wire = protowire.BytesType
		case protoreflect.MessageKind:
			f.wire, f.msg = protowire.BytesType, build(fd.Message(), built)
			// vtproto writes nothing for a oneof's member set to a nil
			// message, nor maybe for a map's nil value; protobuf-go
			// writes an empty message.
			if fd.ContainingOneof() != nil || fd.IsMap() && fd.MapValue().Message() != nil {
				s.marshalVT, s.marshalBuilt = false, false
			}
		case protoreflect.GroupKind:
			f.wire, f.group = protowire.StartGroupType, true
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			f.wire = protowire.Fixed32Type
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			f.wire = protowire.Fixed64Type
		default: // bool, enum and the varint integers
			f.wire = protowire.VarintType
		}
		f.packed = fd.IsList() && f.wire != protowire.BytesType && !f.group
		s.fields[n] = f
	}
	return s
}

// builtKnown are the well-known types whose vtprotobuf code writes what
// protobuf-go writes of a value without unknown fields.
var builtKnown = map[protoreflect.FullName]bool{
	"google.protobuf.Timestamp": true,
	"google.protobuf.Duration":  true,
}

// generated reports whether md's Go type has vtproto's methods of its own.
func generated(md protoreflect.MessageDescriptor) bool {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		return false
	}
	_, ok := mt.Zero().Interface().(vtMessage)
	return ok
}

// check reports whether b, at the given depth, is an encoding of s's type
// that UnmarshalVT reads exactly as proto.Unmarshal does: every tag and
// varint is one protobuf-go accepts, every field the type declares comes
// with the wire type of its kind (or packed, for a repeated number), every
// string is UTF-8, and fields that a type does not declare are only in
// types whose vtproto code keeps them, down to the last nested message.
// false means not sure. It is on the path of every call: tags, lengths and
// varints of one byte, the most of them, are read in line.
func (s *shape) check(b []byte, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for i := 0; i < len(b); {
		tag, n := uint64(b[i]), 1
		if tag >= 0x80 {
			if tag, n = protowire.ConsumeVarint(b[i:]); n < 0 {
				return false
			}
		}
		i += n
		if tag>>3 < uint64(protowire.MinValidNumber) || tag>>3 > uint64(protowire.MaxValidNumber) {
			return false // protobuf-go's bounds; ConsumeTag has no upper one
		}
		num, typ := tag>>3, protowire.Type(tag&7)
		var f *field
		if num < uint64(len(s.fields)) && s.fields[num].declared {
			f = &s.fields[num]
		} else if n != protowire.SizeVarint(tag) {
			return false // protobuf-go keeps the field under a shorter tag
		}
		if typ != protowire.BytesType {
			if f == nil && s.dropsUnknown || f != nil && (typ != f.wire || f.group) {
				return false
			}
			if typ == protowire.VarintType && i < len(b) && b[i] < 0x80 {
				i++
				continue
			}
			if n = protowire.ConsumeFieldValue(protowire.Number(num), typ, b[i:]); n < 0 {
				return false
			}
			i += n
			continue
		}
		if i == len(b) {
			return false
		}
		l, n := uint64(b[i]), 1
		if l >= 0x80 {
			if l, n = protowire.ConsumeVarint(b[i:]); n < 0 {
				return false
			}
		}
		rest := b[i+n:]
		if l > uint64(len(rest)) {
			return false
		}
		v := rest[:l]
		i += n + int(l)
		switch {
		case f == nil:
			if s.dropsUnknown {
				return false
			}
		case f.wire == protowire.BytesType:
			if f.utf8 && !ascii(v) && !utf8.Valid(v) || f.msg != nil && !f.msg.check(v, depth+1) {
				return false
			}
		case f.packed:
			if !packed(v, f.wire) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// packed reports whether b is a run of values of the wire type typ.
func packed(b []byte, typ protowire.Type) bool {
	for len(b) > 0 {
		n := protowire.ConsumeFieldValue(1, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// ascii reports whether b is all ASCII, reading it 8 bytes at a time.
func ascii(b []byte) bool {
	var x uint64
	if len(b) < 8 {
		for _, c := range b {
			x |= uint64(c)
		}
		return x < 0x80
	}
	for i := 0; i+8 <= len(b); i += 8 {
		x |= binary.LittleEndian.Uint64(b[i:])
	}
	x |= binary.LittleEndian.Uint64(b[len(b)-8:])
	return x&0x8080808080808080 == 0
}

// InvalidString is the path in md of the first string of b, an encoding of
// md, that is not UTF-8 where protobuf-go requires it to be, as
// "checks[2].subject", and that string; "" when there is none, or b cannot
// be read far enough to find it. It allocates nothing for each entry of
// b's lists, however many they hold: a server may look for one in a
// request it refuses unread.
func InvalidString(md protoreflect.MessageDescriptor, b []byte) (path, value string) {
	return invalidString(md, b, 0)
}

func invalidString(md protoreflect.MessageDescriptor, b []byte, depth int) (path, value string) {
	if depth > maxDepth {
		return "", ""
	}
	var seen map[protowire.Number]int // entries of lists and maps so far
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", ""
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return "", ""
		}
		v := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			continue
		}
		i := -1 // the entry's index in its list or map
		if fd.IsList() || fd.IsMap() {
			if seen == nil {
				seen = map[protowire.Number]int{}
			}
			i = seen[num]
			seen[num]++
		}
		v, _ = protowire.ConsumeBytes(v)
		switch fd.Kind() {
		case protoreflect.StringKind:
			if enforceUTF8(fd) && !utf8.Valid(v) {
				return entryName(fd, i), string(v)
			}
		case protoreflect.MessageKind:
			if p, s := invalidString(fd.Message(), v, depth+1); p != "" {
				return entryName(fd, i) + "." + p, s
			}
		}
	}
	return "", ""
}

// entryName is fd's name, with i, when it is not -1, its index: "checks[2]".
func entryName(fd protoreflect.FieldDescriptor, i int) string {
	if i < 0 {
		return string(fd.Name())
	}
	return fmt.Sprintf("%s[%d]", fd.Name(), i)
}

// enforceUTF8 reports whether protobuf-go requires fd's strings to be
// UTF-8: in proto3, or where an edition's features say so.
func enforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if f, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return f.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}
