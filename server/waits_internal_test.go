package server

import (
	"testing"

	"google.golang.org/grpc"
)

// A server given no other bound holds MaxWaitingBytes of waiting reads'
// requests (the tests that fill the bound set a smaller one).
func TestWaitingReadsHoldMaxWaitingBytesByDefault(t *testing.T) {
	if n := waitingBytes(nil); n != MaxWaitingBytes {
		t.Errorf("waiting reads hold %d bytes by default; want MaxWaitingBytes, %d", n, MaxWaitingBytes)
	}
	if n := waitingBytes([]grpc.ServerOption{waitingBytesOption{n: 1 << 20}}); n != 1<<20 {
		t.Errorf("waiting reads hold %d bytes with a bound of 1 MiB", n)
	}
}
