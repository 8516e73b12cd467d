package bench

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Encoded is a request marshalled once, before the load starts, and sent as
// it is by every call that replays it: the client's cost per call is then
// the same whatever the request, and the floor and Usher are driven alike.
type Encoded []byte

// Encode marshals m once for replay.
func Encode(m proto.Message) (Encoded, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

// Reply is what the load tool keeps of a response: its size and the first
// field, when that is a number (a Join's outcome, a health check's status),
// read without decoding the rest.
type Reply struct {
	Size   int
	Field1 uint64
}

// RawCodec sends *Encoded requests as they are and reads responses into
// *Reply. Its name is "proto", so servers see ordinary protobuf calls.
type RawCodec struct{}

// CallOption is the option that makes a call use RawCodec.
func CallOption() grpc.CallOption { return grpc.ForceCodecV2(RawCodec{}) }

// Name is the content subtype the calls carry.
func (RawCodec) Name() string { return "proto" }

// Marshal hands gRPC the pre-encoded bytes, which it only reads.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	e, ok := v.(*Encoded)
	if !ok {
		return nil, fmt.Errorf("bench.RawCodec sends *bench.Encoded, not %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*e)}, nil
}

// Unmarshal keeps the response's size and first field; data is gRPC's and
// is not kept.
func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*Reply)
	if !ok {
		return fmt.Errorf("bench.RawCodec reads into *bench.Reply, not %T", v)
	}
	r.Size = data.Len()
	switch len(data) {
	case 0:
		r.Field1 = 0
	case 1:
		r.Field1 = field1(data[0].ReadOnlyData())
	default:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		r.Field1 = field1(buf.ReadOnlyData())
		buf.Free()
	}
	return nil
}

// field1 is the value of field 1 of an encoded message when it is a varint,
// else 0.
func field1(b []byte) uint64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0
			}
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}
