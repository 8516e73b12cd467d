package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage/memory"
)

// readCounting is a backend that counts the changes its log answers.
type readCounting struct {
	*memory.Memory
	read atomic.Int64
}

func (b *readCounting) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	sets, err := b.Memory.Changes(ctx, after, limit)
	for _, cs := range sets {
		b.read.Add(int64(len(cs.Changes)))
	}
	return sets, err
}

// A ListChanges page whose filter matches nothing reads a bounded part of
// the log, however large its change sets: at most 10,000 changes, but for
// one change set that holds more, and the batch that reached them. It ends
// short, with a token to go on; following the tokens reads each change set
// once.
func TestAListChangesPageReadsABoundedPartOfTheLog(t *testing.T) {
	const sets, each = 6, 5_000
	b := &readCounting{Memory: memory.New()}
	for i := range sets {
		cs := authz.ChangeSet{Caller: "importer"}
		for j := range each {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: fmt.Sprintf("doc:%d-%d", i, j), Parent: authz.RootName}})
		}
		if _, err := b.Commit(context.Background(), []authz.Write{{Set: cs}}); err != nil {
			t.Fatal(err)
		}
	}
	engine, err := authz.Start(context.Background(), b, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	f := serveEngine(t, engine)

	req := &usherv1.ListChangesRequest{Caller: "nobody"}
	pages := 0
	for {
		b.read.Store(0)
		resp, err := f.admin.ListChanges(f.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if n := len(resp.GetChanges()); n != 0 {
			t.Fatalf("page %d holds %d records of a caller that wrote none", pages, n)
		}
		if read := b.read.Load(); read > 10_000+2*each {
			t.Fatalf("page %d read %d changes of a log of %d change sets of %d; want at most 10,000 and the batch that reached them", pages, read, sets, each)
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if pages < 2 {
		t.Errorf("the log of %d changes was read in %d page; want it cut into several", sets*each, pages)
	}
}
