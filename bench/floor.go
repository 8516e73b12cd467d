package bench

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Floor is the bare gRPC server the load tool measures Usher against: it
// serves grpc.health.v1 only, always SERVING, with grpc-go's default options
// and no interceptor. No gRPC server answers a unary call for less, so the
// ratio of a load on Usher to the same load on the floor is what Usher costs
// beyond gRPC itself.
func Floor() *grpc.Server {
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	return s
}
