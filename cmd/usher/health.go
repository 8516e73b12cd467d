package main

import (
	"context"
	"flag"
	"fmt"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// health asks a server's grpc.health.v1 service whether it is serving, and
// fails unless it is: an exec probe for a container whose port serves TLS,
// which the kubelet's own gRPC probe cannot speak, and a check for scripts.
func health(args []string) error {
	service := ""
	flags := func(fs *flag.FlagSet) {
		fs.StringVar(&service, "service", "",
			"the service to ask about, e.g. usher.v1.AuthorizationService, which turns NOT_SERVING while the server drains (default: the server as a whole)")
	}
	return runClientWith("health", "", 0, args, flags, func(ctx context.Context, conn *grpc.ClientConn, _ []string) (proto.Message, error) {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return nil, err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return resp, fmt.Errorf("%s", resp.GetStatus())
		}
		return resp, nil
	})
}
