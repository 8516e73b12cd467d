// Package codec is the gRPC codec for protobuf that Usher's server and
// clients use in place of grpc-go's own. The messages of gen/ are encoded and
// decoded by the code protoc-gen-go-vtproto generated for them (SizeVT,
// MarshalToSizedBufferVT, UnmarshalVT), which does without protobuf-go's
// reflection; any other message (grpc.health.v1, Envoy's ext_authz, server
// reflection, ...) goes to grpc-go's codec as before.
//
// It reads and writes exactly what grpc-go's codec would. vtproto's code on
// its own does not: it does not check that strings are UTF-8, which proto3
// requires and protobuf-go enforces; it lets through a few malformed
// encodings that protobuf-go refuses; and its code for the well-known types
// (Timestamp, Duration) drops the fields they do not declare, which
// protobuf-go keeps. So a message is read by UnmarshalVT only when its bytes
// pass a check against its descriptor (wire.go), and written by
// MarshalToSizedBufferVT only when no well-known type (nor a oneof of
// messages, where vtproto leaves out a member set to nil) is within its
// reach, or the type is marked by Built, and the strings made are UTF-8;
// protobuf-go does the rest.
//
// Importing the package registers the codec under the name "proto", for the
// whole process. It imports nothing of Usher's.
package codec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Name is the content subtype the codec serves, grpc-go's default.
const Name = grpcproto.Name

// standard is grpc-go's protobuf codec, which the import of its package
// registered before this package's init runs.
var standard = encoding.GetCodecV2(Name)

func init() {
	encoding.RegisterCodecV2(Codec{})
}

// vtMessage is a message with the methods protoc-gen-go-vtproto generates,
// and Reset, which protoc-gen-go's messages have.
type vtMessage interface {
	proto.Message
	Reset()
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// Codec is the codec; its zero value is ready to use.
type Codec struct{}

// Name is the content subtype, "proto".
func (Codec) Name() string { return Name }

// Marshal encodes v into one buffer, from grpc-go's pool when it is large
// enough to be worth pooling, as grpc-go's codec does.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return standard.Marshal(v)
	}
	s := shapeOf(m)
	if !s.marshalVT && !(s.marshalBuilt && s.built.Load()) {
		return standard.Marshal(v)
	}
	size := m.SizeVT()
	// A buffer of its own for a small message, from grpc-go's pool for one
	// large enough to be worth pooling, as grpc-go's codec does; but one
	// larger than the pool's 32 KiB tier has a buffer of its own too, since
	// the next tier is 1 MiB: an answer its client does not read would hold
	// up to 32 times its size.
	if mem.IsBelowBufferPoolingThreshold(size) || size > largestTier {
		b := make([]byte, size)
		if ok, err := fill(m, s, b); err != nil || !ok {
			return fallBack(v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	b := pool.Get(size)
	if ok, err := fill(m, s, *b); err != nil || !ok {
		pool.Put(b)
		return fallBack(v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(b, pool)}, nil
}

// largestTier is the largest of grpc-go's default buffer pool's tiers
// below 1 MiB.
const largestTier = 32 << 10

// fill marshals m, whose shape is s, into b, and reports whether what it
// wrote is what protobuf-go would write: bytes all ASCII hold no string
// that is not UTF-8.
func fill(m vtMessage, s *shape, b []byte) (bool, error) {
	if _, err := m.MarshalToSizedBufferVT(b); err != nil {
		return false, err
	}
	return ascii(b) || s.check(b, 0), nil
}

// fallBack is err, or v marshalled by grpc-go's codec.
func fallBack(v any, err error) (mem.BufferSlice, error) {
	if err != nil {
		return nil, err
	}
	return standard.Marshal(v)
}

// Unmarshal decodes data into v, replacing what v held, as proto.Unmarshal
// does. data stays gRPC's: UnmarshalVT copies the strings and bytes it keeps,
// and a type marked by Alias is read from a copy of data of its own.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	g, _ := v.(*Screened)
	if g != nil {
		v = g.Msg
	}
	m, ok := v.(vtMessage)
	if !ok {
		if g == nil {
			return standard.Unmarshal(data, v)
		}
		pm, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("codec: %T is not a protobuf message", v)
		}
		// As grpc-go's codec decodes it, once screened.
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b := buf.ReadOnlyData()
		if g.screen(b) != nil {
			return nil
		}
		return g.malformed(pm, b, proto.Unmarshal(b, pm))
	}
	s := shapeOf(m)
	if a, ok := m.(aliasing); ok && s.alias.Load() {
		b := data.Materialize()
		if g != nil && g.screen(b) != nil {
			return nil
		}
		return g.malformed(m, b, decode(s, b, m, a))
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if g != nil && g.screen(b) != nil {
		return nil
	}
	return g.malformed(m, b, decode(s, b, m, nil))
}

// Screened is a message to decode, Msg, whose encoded bytes Screen, when
// set, sees first: when Screen returns an error, Unmarshal decodes nothing,
// leaves Msg as it was, keeps the error in Refused and returns nil. A
// server passes one to a call's decoding function to refuse, from its
// encoding, a request that would decode into many times its size (4 MiB of
// empty repeated entries make some 280 MB of messages), with a status of
// its own: grpc-go answers an error of Unmarshal at once, as INTERNAL. For
// the same reason, bytes that do not decode into Msg are refused the same
// way, with a *Malformed. Screen must not keep the bytes.
type Screened struct {
	Msg     any
	Screen  func([]byte) error
	Refused error
}

// screen runs Screen on b, keeping its refusal.
func (g *Screened) screen(b []byte) error {
	if g.Screen == nil {
		return nil
	}
	g.Refused = g.Screen(b)
	return g.Refused
}

// malformed is err, the failure to decode b into m; but nil when g is set,
// which keeps it in Refused as a *Malformed.
func (g *Screened) malformed(m proto.Message, b []byte, err error) error {
	if err == nil || g == nil {
		return err
	}
	md := m.ProtoReflect().Descriptor()
	field, value := invalidString(md, b, 0)
	g.Refused = &Malformed{Message: string(md.FullName()), Size: len(b), Field: field, Value: value, Err: err}
	return nil
}

// Malformed is the refusal of bytes that are not an encoding of Message
// protobuf-go reads, Size bytes long. Field is the path in Message of the
// first string that is not UTF-8, as proto3 requires every string to be
// ("checks[2].subject"), and Value that string; Field is "" when none is
// not, and Err says what protobuf-go could not read.
type Malformed struct {
	Message string
	Size    int
	Field   string
	Value   string
	Err     error
}

func (e *Malformed) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s %q: not UTF-8", e.Field, e.Value)
	}
	return fmt.Sprintf("%d bytes that are not an encoding of %s: %v", e.Size, e.Message, e.Err)
}

func (e *Malformed) Unwrap() error { return e.Err }

// decode reads b into m, whose shape is s: by vtproto's code when b passes
// the check (UnmarshalVTUnsafe when a is m, to share b's memory), else by
// protobuf-go, whose verdict is then grpc-go's codec's; either resets m
// first.
func decode(s *shape, b []byte, m vtMessage, a aliasing) error {
	if s.check(b, 0) {
		m.Reset()
		var err error
		if a != nil {
			err = a.UnmarshalVTUnsafe(b)
		} else {
			err = m.UnmarshalVT(b)
		}
		if err == nil {
			return nil
		}
	}
	return proto.Unmarshal(b, m)
}

// aliasing is a message whose vtproto code can decode strings and bytes
// that share the encoded message's memory instead of copying it.
type aliasing interface {
	UnmarshalVTUnsafe([]byte) error
}

// Built marks the types of msgs as ones whose values the process builds
// itself, Timestamps and Durations included (timestamppb.New,
// durationpb.New), and never fills with a well-known value decoded from a
// peer, which may hold fields its type does not declare: vtprotobuf's code
// for Timestamp and Duration leaves those out, and is otherwise what
// protobuf-go writes. Marshal then writes such a type with vtproto's code
// although it holds well-known types; a oneof of messages still goes to
// protobuf-go.
func Built(msgs ...proto.Message) {
	for _, m := range msgs {
		shapeOf(m).built.Store(true)
	}
}

// Alias marks the types of msgs as ones whose decoded strings and bytes may
// share memory with the encoded message: Unmarshal copies a message of such
// a type out of gRPC's buffers into a new array of its own, which nothing
// else writes or reuses, and decodes it there without copying each string
// out. A message with many strings (CheckBatch's hundred checks, each of
// three names) then costs one allocation instead of one for each string.
// The price: a string kept after the call keeps the whole array alive, so
// a type is marked only when whoever decodes it keeps none of its strings,
// or copies those it keeps. Types without vtproto's UnmarshalVTUnsafe are
// decoded as before.
func Alias(msgs ...proto.Message) {
	for _, m := range msgs {
		shapeOf(m).alias.Store(true)
	}
}
