package server

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// serveLoopback serves srv (an Usher server, or a bare gRPC one) on a
// loopback listener until the test ends, and returns a connection to it
// dialled with opts, closed when the test ends; ServeLoopback to the tests
// of package server_test.
func serveLoopback(t testing.TB, srv interface {
	Serve(net.Listener) error
	Stop()
}, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	conn, err := grpc.NewClient(lis.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ServeLoopback is serveLoopback, for the tests of package server_test.
var ServeLoopback = serveLoopback
