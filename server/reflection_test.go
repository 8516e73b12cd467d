package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/usher-authz/usher/server"
)

// reflectionStream opens a server reflection stream on conn, v1alpha's or
// v1's, and asks one question; a refusal comes as the answer's error. end
// ends the stream, which the server counts out before it sends its
// status.
func reflectionStream(ctx context.Context, conn *grpc.ClientConn, alpha bool) (end func() error, err error) {
	if alpha {
		stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if _, err := stream.Recv(); err != nil {
			return nil, err
		}
		return func() error { stream.CloseSend(); _, err := stream.Recv(); return err }, nil
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return func() error { stream.CloseSend(); _, err := stream.Recv(); return err }, nil
}

// A server reflection stream stays open for as long as its client keeps it,
// asking or not, so each connection may hold MaxReflectionStreamsPerConn of
// them, v1 and v1alpha together. One more is refused, naming the limit,
// while another connection still opens its own; a stream that ends makes
// room.
func TestAConnectionHoldsAtMostFourReflectionStreams(t *testing.T) {
	const perConn = server.MaxReflectionStreamsPerConn
	f := newServer(t)
	ctx := f.ctx()
	open := func(conn *grpc.ClientConn, alpha bool) (func() error, error) {
		return reflectionStream(ctx, conn, alpha)
	}
	refused := func(conn *grpc.ClientConn) {
		t.Helper()
		_, err := open(conn, false)
		if err == nil {
			t.Fatalf("reflection stream %d on one connection opened; want it refused", perConn+1)
		}
		st := wantCode(t, err, codes.ResourceExhausted)
		wantDetails(t, st, refusal{reason: "CONNECTION_REFLECTION_LIMIT", meta: map[string]string{"limit": fmt.Sprint(perConn)}})
	}

	var first func() error
	for i := range perConn {
		end, err := open(f.conn, i%2 == 1)
		if err != nil {
			t.Fatalf("reflection stream %d of %d on one connection: %v", i+1, perConn, err)
		}
		if i == 0 {
			first = end
		}
	}
	refused(f.conn)

	other, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i := range perConn {
		if _, err := open(other, false); err != nil {
			t.Fatalf("reflection stream %d on another connection: %v", i+1, err)
		}
	}
	refused(other)

	if err := first(); !errors.Is(err, io.EOF) {
		t.Fatalf("ending a reflection stream: %v", err)
	}
	if _, err := open(f.conn, false); err != nil {
		t.Fatalf("a reflection stream once one on its connection ended: %v", err)
	}
	refused(f.conn)
}

// At most MaxReflectionStreams server reflection streams are open at once,
// however many connections hold them; one past it is refused with
// RESOURCE_EXHAUSTED, and a stream that ends makes room.
func TestReflectionStreamsAreBounded(t *testing.T) {
	f := newServer(t)
	// The streams last the whole test, whose 1,024 opens one after another
	// may take longer than a call's usual deadline on a loaded machine.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	first, err := reflectionStream(ctx, f.conn, false)
	if err != nil {
		t.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for len(conns)*server.MaxReflectionStreamsPerConn < server.MaxReflectionStreams {
		conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
	}
	for i := 1; i < server.MaxReflectionStreams; i++ {
		if _, err := reflectionStream(ctx, conns[i/server.MaxReflectionStreamsPerConn], false); err != nil {
			t.Fatalf("reflection stream %d of %d: %v", i+1, server.MaxReflectionStreams, err)
		}
	}
	_, err = reflectionStream(ctx, f.conn, true)
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "REFLECTION_LIMIT", meta: map[string]string{"limit": fmt.Sprint(server.MaxReflectionStreams)}})

	if err := first(); !errors.Is(err, io.EOF) {
		t.Fatalf("ending a reflection stream: %v", err)
	}
	if _, err := reflectionStream(ctx, f.conn, true); err != nil {
		t.Fatalf("a reflection stream once one of the limit's ended: %v", err)
	}
}
