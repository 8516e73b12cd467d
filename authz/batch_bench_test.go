package authz_test

import (
	"context"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/policy"
)

// BenchmarkCheckBatch measures Index.CheckBatch of 100 checks, a third each
// allowed on the call, allowed from above and denied, on the load tool's
// platform of 200,000 grants of 100,000 users (usher bench checkbatch's
// shape). ns/op is one batch.
func BenchmarkCheckBatch(b *testing.B) {
	msg, err := policy.Load("default")
	if err != nil {
		b.Fatal(err)
	}
	shape := bench.Shape{Accounts: 10, WorkspacesPerAccount: 10, CallTypesPerSpace: 1, CallsPerType: 100,
		Users: 100_000, Grants: 200_000, Blocks: 2_000, Seed: 1}
	eng, p, err := bench.Start(context.Background(), shape, policy.ToAuthz(msg))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	var qs []authz.Query
	for _, q := range bench.Queries(p, eng.Index(), 30_000, 1) {
		qs = append(qs, q.Query)
	}
	idx := eng.Index()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		at := i % (len(qs) / 100) * 100
		if _, errs, _ := idx.CheckBatch(qs[at : at+100]); errs != nil {
			b.Fatal(errs)
		}
		i++
	}
}
