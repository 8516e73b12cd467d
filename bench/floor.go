package bench

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// Floor is the bare gRPC server the load tool measures Usher against: it
// serves grpc.health.v1, always SERVING, with grpc-go's default options and
// no interceptor. No gRPC server answers a unary call for less, so the
// ratio of a load on Usher to the same load on the floor is what Usher costs
// beyond gRPC itself.
//
// It also serves usher.v1.AdmissionService's Join, answering join to every
// request and deciding nothing: what gRPC alone costs to carry a Join and
// an answer of that size, which a health check does not show. Its other
// methods are unimplemented.
func Floor(join *usherv1.JoinResponse) *grpc.Server {
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	usherv1.RegisterAdmissionServiceServer(s, answers{join: join})
	return s
}

// answers is the floor's AdmissionService: the same answer to every Join.
type answers struct {
	usherv1.UnimplementedAdmissionServiceServer
	join *usherv1.JoinResponse
}

func (a answers) Join(context.Context, *usherv1.JoinRequest) (*usherv1.JoinResponse, error) {
	return a.join, nil
}
