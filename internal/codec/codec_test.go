package codec_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

// standard is grpc-go's codec, which the registered one stands in for.
var standard = codec.Standard

// batch is a CheckBatch of 100 checks and its answer, as the load tool's
// platform has them.
func batch() (*usherv1.CheckBatchRequest, *usherv1.CheckBatchResponse) {
	req := &usherv1.CheckBatchRequest{}
	resp := &usherv1.CheckBatchResponse{Revision: 1_234_567}
	for i := range 100 {
		req.Checks = append(req.Checks, &usherv1.CheckItem{
			Subject:    fmt.Sprintf("user:u%06d", i*997),
			Permission: "call.join",
			Resource:   fmt.Sprintf("call:acct-%d/ws-%d/type-0/call-%d", i%10, i%7, i),
		})
		d := &usherv1.Decision{Allowed: i%3 != 0}
		if d.Allowed {
			d.Role, d.Scope = "participant", fmt.Sprintf("workspace:acct-%d/ws-%d", i%10, i%7)
		}
		resp.Decisions = append(resp.Decisions, d)
	}
	resp.Errors = []*usherv1.CheckError{{Index: 7, Code: 3, Message: "resource \"call:\": id must not be empty",
		Field: "resource", Value: "call:", Reason: "INVALID_NAME"}}
	return req, resp
}

// messages are messages of every kind of field gen/ has: repeated and
// nested messages, strings (some not ASCII), varints past one byte,
// well-known types, a oneof and a map.
func messages() map[string]proto.Message {
	req, resp := batch()
	at := time.Date(2026, 11, 30, 14, 0, 0, 123, time.UTC)
	return map[string]proto.Message{
		"empty":            &usherv1.CheckRequest{},
		"a check":          &usherv1.CheckRequest{Subject: "user:zoë", Permission: "call.join", Resource: "call:x", MinRevision: 1 << 40},
		"a batch of 100":   req,
		"a batch's answer": resp,
		"a join with a token": &usherv1.JoinResponse{Outcome: usherv1.Outcome_OUTCOME_ADMITTED, Capabilities: []string{"publish", "subscribe"},
			SessionId: "s-1", ExpireTime: timestamppb.New(at), Lease: durationpb.New(90 * time.Second),
			LivekitToken: "eyJhbGciOiJIUzI1NiJ9." + strings.Repeat("x", 2000), Revision: 99,
			LivekitGrant: &usherv1.LiveKitGrant{Room: "call:x", RoomJoin: true, CanPublishSources: []string{"camera", "microphone"}},
			OpenTime:     timestamppb.New(at.Add(-time.Hour))},
		"a change record with a oneof and a map": &usherv1.ChangeRecord{Revision: 300, Time: timestamppb.New(at), Caller: "admin", Changes: []*usherv1.Change{
			{Op: usherv1.Op_OP_PUT_GRANT, Entity: &usherv1.Change_Grant{Grant: &usherv1.Grant{Subject: "user:a", Role: "host", Resource: "call:x", ExpireTime: timestamppb.New(at)}}},
			{Op: usherv1.Op_OP_PUT_ADMISSION, Entity: &usherv1.Change_Admission{Admission: &usherv1.Admission{Scope: "account:a", JoinAhead: durationpb.New(time.Minute),
				Livekit: &usherv1.LiveKitMapping{RoomJoin: "call.join", CanPublishSources: map[string]string{"camera": "call.video", "microphone": "call.audio", "écran": "call.screen"}}}}},
			{Op: usherv1.Op_OP_DELETE_GRANT},
		}},
	}
}

func init() {
	// As the server marks it: the package's tests decode batches as the
	// server does, and single checks as a type that is not marked.
	codec.Alias(&usherv1.CheckBatchRequest{})
	// As the server marks its answers to joins.
	codec.Built(&usherv1.JoinResponse{})
}

// A type marked by Built is written by vtproto's code although it holds
// Timestamps and Durations: what protobuf-go writes of the values the
// process builds, which hold no fields their types do not declare. A
// Timestamp decoded from a peer may, and vtprotobuf's code leaves those out,
// which shows which code wrote a message; an unmarked type keeps them.
func TestBuiltMessagesAreWrittenByVTProto(t *testing.T) {
	at := time.Date(2026, 11, 30, 14, 0, 0, 123, time.UTC)
	built := &usherv1.JoinResponse{Outcome: usherv1.Outcome_OUTCOME_ADMITTED, SessionId: "s-1", Reason: "user:a joins call:x",
		ExpireTime: timestamppb.New(at), Lease: durationpb.New(90 * time.Second), Capabilities: []string{"publish"},
		LivekitGrant: &usherv1.LiveKitGrant{Room: "call:x", RoomJoin: true, CanPublishSources: []string{"camera"}}}
	want, err := proto.Marshal(built)
	if err != nil {
		t.Fatal(err)
	}
	if got := marshal(t, built); string(got) != string(want) {
		t.Errorf("a built JoinResponse is written as\n%x, not as protobuf-go writes it,\n%x", got, want)
	}

	stray := func() *timestamppb.Timestamp {
		ts := timestamppb.New(at)
		ts.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1))
		return ts
	}
	withStray := proto.Clone(built).(*usherv1.JoinResponse)
	withStray.ExpireTime = stray()
	if got, all := marshal(t, withStray), must(proto.Marshal(withStray)); len(got) >= len(all) {
		t.Errorf("a built JoinResponse is written by protobuf-go (%d bytes, the Timestamp's stray field kept), not by vtproto's code", len(got))
	}
	unmarked := &usherv1.KeepAliveResponse{Outcome: usherv1.Outcome_OUTCOME_ADMITTED, ExpireTime: stray()}
	if got, all := marshal(t, unmarked), must(proto.Marshal(unmarked)); string(got) != string(all) {
		t.Errorf("an unmarked KeepAliveResponse is written as\n%x, without the Timestamp's stray field,\n%x", got, all)
	}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	data, err := (codec.Codec{}).Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	return data.Materialize()
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A type marked by Alias is decoded into memory of its own: the message
// stays whole once gRPC reuses its buffer, and its strings are not
// allocated one by one.
func TestAliasedMessagesOutliveGRPCsBuffer(t *testing.T) {
	req, _ := batch()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got usherv1.CheckBatchRequest
	if err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:100]), mem.SliceBuffer(b[100:])}, &got); err != nil {
		t.Fatal(err)
	}
	clear(b) // gRPC's buffers, reused for the next message
	if !proto.Equal(&got, req) {
		t.Fatalf("got %v, want %v", &got, req)
	}
	b, _ = proto.Marshal(req)
	data := mem.BufferSlice{mem.SliceBuffer(b)}
	allocs := testing.AllocsPerRun(100, func() {
		var m usherv1.CheckBatchRequest
		if err := (codec.Codec{}).Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
	})
	// One for each check, the copy, and the list of checks as it grows;
	// a string each would be 300 more.
	if limit := float64(len(req.Checks) + 20); allocs > limit {
		t.Errorf("decoding a batch of %d checks allocates %.0f times, more than %.0f", len(req.Checks), allocs, limit)
	}
}

func TestRegistered(t *testing.T) {
	if c, ok := encoding.GetCodecV2("proto").(codec.Codec); !ok {
		t.Fatalf("the codec registered as proto is %T, not codec.Codec", c)
	}
}

// Each message comes out of the codec as it went in, and the codec and
// grpc-go's read each other's bytes.
func TestRoundTrip(t *testing.T) {
	for name, m := range messages() {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // and the types' shapes are made at once
			for _, c := range []struct{ enc, dec encoding.CodecV2 }{
				{codec.Codec{}, codec.Codec{}}, {codec.Codec{}, standard}, {standard, codec.Codec{}},
			} {
				data, err := c.enc.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				got := m.ProtoReflect().New().Interface()
				if err := c.dec.Unmarshal(data, got); err != nil {
					t.Fatal(err)
				}
				data.Free()
				if !proto.Equal(got, m) {
					t.Errorf("%T: got %v, want %v", c.dec, got, m)
				}
			}
		})
	}
}

// Unmarshal replaces what the message held, as proto.Unmarshal does.
func TestUnmarshalReplaces(t *testing.T) {
	got := &usherv1.CheckRequest{Subject: "user:old", MinRevision: 5}
	want := &usherv1.CheckRequest{Permission: "call.join"}
	if err := (codec.Codec{}).Unmarshal(encode(t, want), got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// Fields the reader does not know are kept and sent on.
func TestUnknownFieldsKept(t *testing.T) {
	b, err := proto.Marshal(&usherv1.CheckItem{Subject: "user:a", Permission: "call.join", Resource: "call:x"})
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 300)
	b = protowire.AppendTag(b, 100, protowire.BytesType)
	b = protowire.AppendString(b, "later")
	var got, want usherv1.CheckItem
	if err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(got.ProtoReflect().GetUnknown()) == 0 || !proto.Equal(&got, &want) {
		t.Fatalf("got %v, want %v", &got, &want)
	}
	var again usherv1.CheckItem
	if err := sent(&got, &again); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&again, &want) {
		t.Errorf("sent on: got %v, want %v", &again, &want)
	}
}

// A message without vtproto's methods goes to grpc-go's codec.
func TestOtherMessages(t *testing.T) {
	m := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	if _, ok := any(m).(interface{ UnmarshalVT([]byte) error }); ok {
		t.Fatal("grpc.health.v1 has vtproto's methods: pick another message")
	}
	data, err := (codec.Codec{}).Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := data.Materialize(); string(got) != string(want) {
		t.Errorf("marshalled %x, want %x", got, want)
	}
	var got healthpb.HealthCheckResponse
	if err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, m) {
		t.Errorf("got %v, want %v", &got, m)
	}
	if _, err := (codec.Codec{}).Marshal("not a message"); err == nil {
		t.Error("a string was marshalled")
	}
}

func encode(t testing.TB, m proto.Message) mem.BufferSlice {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}
}

// A Screened message is decoded as the message would be once its screen
// lets its bytes through, on each of the codec's paths (aliased, copied,
// protobuf-go's); refused, it is left as it was, and Unmarshal returns nil
// with the refusal in Refused.
func TestScreened(t *testing.T) {
	req, _ := batch()
	refusal := fmt.Errorf("refused")
	for _, c := range []struct {
		name string
		m    proto.Message
		new  func() proto.Message
	}{
		{"aliased", req, func() proto.Message { return &usherv1.CheckBatchRequest{} }},
		{"copied", &usherv1.GrantRequest{Subject: "user:dana", Role: "host", Resource: "root"}, func() proto.Message { return &usherv1.GrantRequest{} }},
		{"protobuf-go's", &healthpb.HealthCheckRequest{Service: "usher"}, func() proto.Message { return &healthpb.HealthCheckRequest{} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, err := proto.Marshal(c.m)
			if err != nil {
				t.Fatal(err)
			}
			var seen []byte
			got := c.new()
			g := &codec.Screened{Msg: got, Screen: func(b []byte) error { seen = append([]byte(nil), b...); return nil }}
			if err := (codec.Codec{}).Unmarshal(encode(t, c.m), g); err != nil || g.Refused != nil {
				t.Fatalf("Unmarshal: %v, refused %v", err, g.Refused)
			}
			if string(seen) != string(want) {
				t.Errorf("the screen saw %x, want %x", seen, want)
			}
			if !proto.Equal(got, c.m) {
				t.Errorf("got %v, want %v", got, c.m)
			}
			got = c.new()
			g = &codec.Screened{Msg: got, Screen: func([]byte) error { return refusal }}
			if err := (codec.Codec{}).Unmarshal(encode(t, c.m), g); err != nil || g.Refused != refusal {
				t.Fatalf("Unmarshal: %v, refused %v; want nil, refused %v", err, g.Refused, refusal)
			}
			if !proto.Equal(got, c.new()) {
				t.Errorf("a refused message was decoded: %v", got)
			}
		})
	}
}

// Bytes that do not decode into a Screened message, on each of the codec's
// paths, are refused in Refused as a *codec.Malformed that names the first
// string that is not UTF-8 by its path, or else says what could not be
// read; Unmarshal returns nil. Unscreened, they are Unmarshal's error, as
// before.
func TestScreenedMalformed(t *testing.T) {
	req, _ := batch()
	req.Checks[7].Resource = "call:~~"
	for _, c := range []struct {
		name         string
		m            proto.Message
		new          func() proto.Message
		field, value string
	}{
		{"aliased", req, func() proto.Message { return &usherv1.CheckBatchRequest{} }, "checks[7].resource", "call:\xff\xfe"},
		{"copied", &usherv1.GrantRequest{Subject: "user:~~", Role: "host", Resource: "root"}, func() proto.Message { return &usherv1.GrantRequest{} }, "subject", "user:\xff\xfe"},
		{"protobuf-go's", &healthpb.HealthCheckRequest{Service: "us~~er"}, func() proto.Message { return &healthpb.HealthCheckRequest{} }, "service", "us\xff\xfeer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := proto.Marshal(c.m)
			if err != nil {
				t.Fatal(err)
			}
			bad := []byte(strings.ReplaceAll(string(b), "~~", "\xff\xfe"))
			for _, in := range []struct {
				b            []byte
				field, value string
			}{{bad, c.field, c.value}, {b[:len(b)-1], "", ""}} {
				g := &codec.Screened{Msg: c.new()}
				if err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(in.b)}, g); err != nil {
					t.Fatalf("Unmarshal: %v, want nil and the refusal kept", err)
				}
				m, ok := g.Refused.(*codec.Malformed)
				if !ok || m.Field != in.field || m.Value != in.value || m.Size != len(in.b) || m.Err == nil || m.Message != string(c.m.ProtoReflect().Descriptor().FullName()) {
					t.Errorf("refused %#v, want a Malformed of field %q value %q", g.Refused, in.field, in.value)
				}
				if err := (codec.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(in.b)}, c.new()); err == nil {
					t.Error("unscreened, the bytes decoded")
				}
			}
		})
	}
}
