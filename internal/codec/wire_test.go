package codec_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

type vtMessage interface {
	proto.Message
	UnmarshalVT([]byte) error
	MarshalVT() ([]byte, error)
}

// wire builds an encoding field by field: a tag, then a value of its type.
func wire(parts ...any) []byte {
	var b []byte
	for i := 0; i < len(parts); i += 2 {
		num, typ := parts[i].(int), protowire.VarintType
		switch v := parts[i+1].(type) {
		case uint64:
			b = protowire.AppendVarint(protowire.AppendTag(b, protowire.Number(num), typ), v)
		case string:
			b = protowire.AppendString(protowire.AppendTag(b, protowire.Number(num), protowire.BytesType), v)
		case []byte: // raw, after the tag: a value as it is, or a varint too long
			b = append(protowire.AppendTag(b, protowire.Number(num), protowire.VarintType), v...)
		}
	}
	return b
}

// The encodings on which vtproto's UnmarshalVT, left to itself, disagrees
// with protobuf-go: the codec gives protobuf-go's answer on each.
func TestUnmarshalAgreesWithProtobufGo(t *testing.T) {
	for _, c := range []struct {
		name string
		into func() vtMessage
		b    []byte
	}{
		{"a string that is not UTF-8", func() vtMessage { return &usherv1.CheckItem{} },
			wire(1, "user:\xff")},
		{"a string in a batch that is not UTF-8", func() vtMessage { return &usherv1.CheckBatchRequest{} },
			wire(1, string(wire(1, "user:a")), 1, string(wire(3, "call:\xc3")))},
		{"a map's key that is not UTF-8", func() vtMessage { return &usherv1.LiveKitMapping{} },
			wire(3, string(wire(1, "cam\xe9ra", 2, "call.video")))},
		{"a string sent as a number", func() vtMessage { return &usherv1.CheckItem{} },
			wire(1, uint64(5), 2, "call.join")},
		{"a message sent as a number", func() vtMessage { return &usherv1.Change{} },
			wire(5, uint64(1))},
		{"a map's key sent as a number", func() vtMessage { return &usherv1.LiveKitMapping{} },
			wire(3, string(wire(1, uint64(3), 2, "x")))},
		{"a field it does not know under a tag longer than need be", func() vtMessage { return &usherv1.CheckItem{} },
			append(wire(1, "user:a"), 0x80, 0xff, 0x00, 0x30)}, // field 2032, a varint
		{"a field number past the largest", func() vtMessage { return &usherv1.CheckItem{} },
			wire(1, "user:a", 1<<29, uint64(1))},
		{"a field a Timestamp does not know", func() vtMessage { return &usherv1.JoinResponse{} },
			wire(5, string(wire(1, uint64(1_700_000_000), 9, "later")))},
		{"a varint past 64 bits", func() vtMessage { return &usherv1.CheckRequest{} },
			wire(1, "user:a", 4, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, vt, got := c.into(), c.into(), c.into()
			wantErr := proto.Unmarshal(c.b, want)
			if vtErr := vt.UnmarshalVT(c.b); (vtErr == nil) == (wantErr == nil) && (wantErr != nil || proto.Equal(vt, want)) {
				t.Fatalf("UnmarshalVT agrees with proto.Unmarshal here (%v): the case proves nothing", vtErr)
			}
			err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(c.b)}, got)
			if (err == nil) != (wantErr == nil) || err == nil && !proto.Equal(got, want) {
				t.Errorf("got %v, %v; protobuf-go has %v, %v", got, err, want, wantErr)
			}
		})
	}
}

// A string that is not UTF-8 is not sent, as protobuf-go would not send it.
func TestMarshalRefusesWhatProtobufGoRefuses(t *testing.T) {
	for _, m := range []vtMessage{
		&usherv1.CheckItem{Subject: "user:\xff"},
		&usherv1.LiveKitMapping{CanPublishSources: map[string]string{"camera": "call.\xc3"}},
		// Large enough to be written into a buffer of grpc-go's pool.
		&usherv1.CheckItem{Subject: "user:" + strings.Repeat("a", 4096) + "\xff"},
	} {
		if _, err := m.MarshalVT(); err != nil {
			t.Fatalf("MarshalVT refuses %v: the case proves nothing", m)
		}
		if _, err := proto.Marshal(m); err == nil {
			t.Fatalf("proto.Marshal sends %v", m)
		}
		if _, err := (codec.Codec{}).Marshal(m); err == nil {
			t.Errorf("%v was marshalled", m)
		}
	}
}

// A Timestamp read with fields it does not know is sent on with them, as
// protobuf-go sends it, in a type Built did not mark; vtprotobuf's code for
// it would drop them.
func TestMarshalKeepsWhatTimestampsDoNotKnow(t *testing.T) {
	b := wire(3, string(wire(1, uint64(1_700_000_000), 9, "later")), 2, "renewed")
	var m usherv1.KeepAliveResponse
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var got usherv1.KeepAliveResponse
	if err := sent(&m, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.GetExpireTime().ProtoReflect().GetUnknown()) == 0 || !proto.Equal(&got, &m) {
		t.Errorf("sent %v, want %v", &got, &m)
	}
}

// A oneof's member set to a nil message is sent as an empty one, as
// protobuf-go sends it; vtproto's code would leave it out.
func TestMarshalSendsANilMemberOfAOneof(t *testing.T) {
	m := &usherv1.Change{Op: usherv1.Op_OP_DELETE_GRANT, Entity: &usherv1.Change_Grant{}}
	var got usherv1.Change
	if err := sent(m, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetGrant() == nil {
		t.Errorf("sent %v, without the grant", &got)
	}
}

// FuzzUnmarshal feeds the same bytes to the codec and to protobuf-go, as
// each message type that has a oneof, a map or many strings: they must
// accept and refuse alike, read the same message, and the codec must send
// it on as protobuf-go reads it.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range messages() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 1024 { // the fuzzer does better with short inputs
			f.Add(b)
		}
	}
	f.Add(wire(1, string(wire(1, "user:a", 2, "call.join", 3, "call:x")), 1, string(wire(3, "call:\xff")), 2, uint64(300)))
	f.Add(wire(1, string(wire(1, uint64(1), 3, "participant")), 2, uint64(7), 3, string(wire(1, uint64(1), 3, "bad"))))
	f.Add(wire(5, string(wire(10, uint64(17), 11, string(wire(13, string(wire(3, string(wire(1, "k", 2, "v"))))))))))
	f.Add(wire(3, string(wire(1, uint64(17), 9, "later")), 2, "renewed"))
	f.Fuzz(unmarshalLikeProtobufGo)
}

func unmarshalLikeProtobufGo(t *testing.T, b []byte) {
	for _, into := range []func() proto.Message{
		func() proto.Message { return &usherv1.CheckBatchRequest{} },
		func() proto.Message { return &usherv1.CheckBatchResponse{} },
		func() proto.Message { return &usherv1.ChangeRecord{} },
		func() proto.Message { return &usherv1.JoinResponse{} },
		func() proto.Message { return &usherv1.KeepAliveResponse{} },
	} {
		want, got := into(), into()
		wantErr := proto.Unmarshal(b, want)
		err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%T: codec says %v, protobuf-go %v", got, err, wantErr)
		}
		if err != nil {
			continue
		}
		if !proto.Equal(got, want) {
			t.Fatalf("codec read %v, protobuf-go %v", got, want)
		}
		again := into()
		if err := sent(got, again); err != nil || !proto.Equal(again, want) && !proto.Equal(again, withoutStrays(want)) {
			t.Fatalf("sent %v (%v), protobuf-go read %v", again, err, want)
		}
	}
}

// withoutStrays is m as vtproto's code may write it when Built marks its
// type (JoinResponse, in these tests): without the fields its Timestamps
// and Duration do not declare, which the server's never hold. Any other
// type is m.
func withoutStrays(m proto.Message) proto.Message {
	j, ok := m.(*usherv1.JoinResponse)
	if !ok {
		return m
	}
	j = proto.Clone(j).(*usherv1.JoinResponse)
	for _, wk := range []proto.Message{j.GetExpireTime(), j.GetOpenTime(), j.GetLease()} {
		if wk.ProtoReflect().IsValid() {
			wk.ProtoReflect().SetUnknown(nil)
		}
	}
	return j
}

// sent marshals m with the codec and reads what it sent into into with
// protobuf-go.
func sent(m, into proto.Message) error {
	data, err := (codec.Codec{}).Marshal(m)
	if err != nil {
		return err
	}
	return proto.Unmarshal(data.Materialize(), into)
}
