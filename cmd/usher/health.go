package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// healthCommand asks a server's grpc.health.v1 service whether it is
// serving, and fails unless it is: an exec probe for a container whose port
// serves TLS, which the kubelet's own gRPC probe cannot speak, and a check
// for scripts.
func healthCommand() *cobra.Command {
	service := ""
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask a running server whether it is serving, as a probe would",
		Long: `Health asks the server's grpc.health.v1 service whether it is serving, and
prints the answer. It exits 0 when the server is SERVING and 1 otherwise,
for an exec probe (the kubelet's own gRPC probe cannot speak TLS) or a
script.`,
		Example: `  usher health
  usher health --service usher.v1.AuthorizationService
  usher health --addr 127.0.0.1:7070 --tls-ca /etc/usher/tls/ca.crt --tls-server-name usher --timeout 2s`,
		Args: argsExactly(),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.Flags().StringVar(&service, "service", "",
		"the service to ask about, e.g. usher.v1.AuthorizationService, which turns NOT_SERVING while the server drains (default: the server as a whole)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return nil, err
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return resp, fmt.Errorf("%s", resp.GetStatus())
			}
			return resp, nil
		}, nil)
	}
	return cmd
}
