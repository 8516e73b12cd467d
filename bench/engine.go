package bench

import (
	"context"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/memory"
)

// Start generates the platform of shape over base and starts an engine on
// it, in memory, for a benchmark in process. Close the engine when done.
func Start(ctx context.Context, shape Shape, base authz.Policy) (*authz.Engine, Platform, error) {
	p := Generate(shape, base)
	be := memory.New()
	if _, err := be.Commit(ctx, []authz.Write{{Set: authz.ChangeSet{Caller: "bench", Changes: storage.Puts(p.Snapshot)}}}); err != nil {
		return nil, p, err
	}
	eng, err := authz.Start(ctx, be, authz.Options{})
	return eng, p, err
}
