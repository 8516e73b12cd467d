package bench

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

func TestRawCodecSendsTheBytesAndReadsTheFirstField(t *testing.T) {
	req, err := Encode(&usherv1.JoinRequest{Subject: "user:alice", Resource: "call:42"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := RawCodec{}.Marshal(&req)
	if err != nil || string(out.Materialize()) != string(req) {
		t.Fatalf("Marshal = %x, %v; want the encoded bytes %x", out.Materialize(), err, req)
	}
	if _, err := (RawCodec{}).Marshal(&usherv1.JoinRequest{}); err == nil {
		t.Error("Marshal of a message that is not pre-encoded succeeded")
	}
	resp, err := proto.Marshal(&usherv1.JoinResponse{Outcome: usherv1.Outcome_OUTCOME_LOBBY, Reason: "wait", LivekitToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]mem.BufferSlice{
		"one buffer":     {mem.SliceBuffer(resp)},
		"three buffers":  {mem.SliceBuffer(resp[:1]), mem.SliceBuffer(resp[1:3]), mem.SliceBuffer(resp[3:])},
		"empty response": {},
	} {
		var r Reply
		if err := (RawCodec{}).Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := Reply{Size: len(resp), Field1: uint64(usherv1.Outcome_OUTCOME_LOBBY)}
		if name == "empty response" {
			want = Reply{}
		}
		if r != want {
			t.Errorf("%s: %+v, want %+v", name, r, want)
		}
	}
	// Field 1 that is not a number, or absent, reads as 0.
	check, _ := proto.Marshal(&usherv1.CheckResponse{Decision: &usherv1.Decision{Allowed: true}, Revision: 9})
	noOutcome, _ := proto.Marshal(&usherv1.JoinResponse{Reason: "x", Revision: 3})
	for _, b := range [][]byte{check, noOutcome, {0xff}} {
		if got := field1(b); got != 0 {
			t.Errorf("field1(%x) = %d, want 0", b, got)
		}
	}
}

// The floor answers a pre-encoded health check SERVING and every Join with
// the answer it was given, and knows nothing else.
func TestFloorServesHealthAndJoinOnly(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	answer := &usherv1.JoinResponse{Outcome: usherv1.Outcome_OUTCOME_ADMITTED, LivekitToken: "t", SessionId: "s"}
	srv := Floor(answer)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := Encode(&healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var r Reply
	if err := conn.Invoke(context.Background(), healthpb.Health_Check_FullMethodName, &req, &r, CallOption()); err != nil {
		t.Fatal(err)
	}
	if r.Field1 != uint64(healthpb.HealthCheckResponse_SERVING) {
		t.Errorf("status %d, want SERVING", r.Field1)
	}
	admission := usherv1.NewAdmissionServiceClient(conn)
	for _, subject := range []string{"user:a", "user:b"} {
		got, err := admission.Join(context.Background(), &usherv1.JoinRequest{Subject: subject, Resource: "call:c"})
		if err != nil || !proto.Equal(got, answer) {
			t.Errorf("Join of %s = %v, %v; want %v", subject, got, err, answer)
		}
	}
	if _, err := admission.KeepAlive(context.Background(), &usherv1.KeepAliveRequest{SessionId: "s"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("KeepAlive: %v, want Unimplemented", err)
	}
	check, err := Encode(&usherv1.CheckRequest{Subject: "user:a", Permission: "p", Resource: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Invoke(context.Background(), usherv1.AuthorizationService_Check_FullMethodName, &check, &r, CallOption()); status.Code(err) != codes.Unimplemented {
		t.Errorf("Check: %v, want Unimplemented", err)
	}
}
