package server_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/memory"
)

// changeCounter counts the changes a backend's log answers, in all and at
// most at once.
type changeCounter struct {
	read, most atomic.Int64
}

func (c *changeCounter) count(sets []authz.ChangeSet) {
	var n int64
	for _, cs := range sets {
		n += int64(len(cs.Changes))
	}
	c.read.Add(n)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
}

// readCounting is a memory backend that counts the changes its log
// answers.
type readCounting struct {
	*memory.Memory
	changeCounter
}

func (b *readCounting) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	sets, err := b.Memory.Changes(ctx, after, limit)
	b.count(sets)
	return sets, err
}

// boltCounting is a data file that counts the changes its log answers
// whole; it reads parts of change sets too (authz.PartReader).
type boltCounting struct {
	*bolt.Store
	changeCounter
}

func (b *boltCounting) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	sets, err := b.Store.Changes(ctx, after, limit)
	b.count(sets)
	return sets, err
}

// serveLogOfLargeChangeSets serves an engine on a memory backend whose log
// holds sets change sets of each resources registered (commitDocs).
func serveLogOfLargeChangeSets(t *testing.T, sets, each int) (*readCounting, *fixture) {
	t.Helper()
	b := &readCounting{Memory: memory.New()}
	commitDocs(t, b, slices.Repeat([]int{each}, sets)...)
	return b, serveBackend(t, b)
}

// commitDocs commits to b a change set for each of sizes, the i-th
// registering sizes[i] resources doc:i-0, doc:i-1, ... under root, written
// by "importer", at the revisions that follow b's.
func commitDocs(t *testing.T, b authz.Backend, sizes ...int) {
	t.Helper()
	for i, n := range sizes {
		cs := authz.ChangeSet{Caller: "importer"}
		for j := range n {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: fmt.Sprintf("doc:%d-%d", i, j), Parent: authz.RootName}})
		}
		if _, err := b.Commit(context.Background(), []authz.Write{{Set: cs}}); err != nil {
			t.Fatal(err)
		}
	}
}

// serveBackend serves an engine on b until the test ends.
func serveBackend(t *testing.T, b authz.Backend) *fixture {
	t.Helper()
	engine, err := authz.Start(context.Background(), b, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return serveEngine(t, engine)
}

// A ListChanges page whose filter matches nothing reads a bounded part of
// the log, however large its change sets: at most 10,000 changes, but for
// one change set that holds more (which a page sends in parts), and the
// batch that reached them. It ends
// short, with a token to go on; following the tokens reads each change set
// once.
func TestAListChangesPageReadsABoundedPartOfTheLog(t *testing.T) {
	const sets, each = 6, 5_000
	b, f := serveLogOfLargeChangeSets(t, sets, each)

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

// A Watch that catches up over large change sets reads the log at most
// 10,000 changes at a time (but for one change set that holds more), not
// a page of 64 change sets whatever they hold: a policy's apply may write a
// hundred thousand changes in one. It sends every change set, in order.
func TestAWatchReadsTheLogAtMostTenThousandChangesAtATime(t *testing.T) {
	const sets, each = 7, 5_000
	b, f := serveLogOfLargeChangeSets(t, sets, each)

	ctx, cancel := context.WithCancel(f.ctx())
	defer cancel()
	stream, err := f.authz.Watch(ctx, &usherv1.WatchRequest{AfterRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(2); want <= sets; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Watch, waiting for revision %d: %v", want, err)
		}
		rec := resp.GetChange()
		if rec == nil {
			continue // the first message, or progress
		}
		if rec.GetRevision() != want || len(rec.GetChanges()) != each {
			t.Fatalf("Watch sent revision %d of %d changes, want revision %d of %d", rec.GetRevision(), len(rec.GetChanges()), want, each)
		}
		want++
	}
	if most := b.most.Load(); most > 10_000 {
		t.Errorf("the log was read %d changes at once; want at most 10,000", most)
	}
}

// A ListChanges page reads the log at most 10,000 changes at a time (but
// for one change set that holds more), also where small change sets that
// made it read many at once are followed by large ones: it counts them
// before it reads them. Following the tokens reads each change set once.
func TestAListChangesPageReadsLargeChangeSetsAfterSmallOnesABitAtATime(t *testing.T) {
	const small, large, each = 20, 6, 5_000
	b := &readCounting{Memory: memory.New()}
	commitDocs(t, b, append(slices.Repeat([]int{1}, small), slices.Repeat([]int{each}, large)...)...)
	f := serveBackend(t, b)

	req := &usherv1.ListChangesRequest{Caller: "nobody"}
	for pages := 1; ; pages++ {
		resp, err := f.admin.ListChanges(f.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetChanges()); n != 0 {
			t.Fatalf("page %d holds %d records of a caller that wrote none", pages, n)
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		if pages > small+large {
			t.Fatalf("%d pages of a log of %d change sets", pages, small+large)
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if read, want := b.read.Load(), int64(small+large*each); read != want {
		t.Errorf("the pages read %d changes of a log of %d", read, want)
	}
	if most := b.most.Load(); most > 10_000 {
		t.Errorf("the log was read %d changes at once; want at most 10,000", most)
	}
}

// A ListChanges after a revision past the latest committed one, as a client
// that followed a data file later restored from an older backup, or
// another server's, asks, is refused FAILED_PRECONDITION FUTURE_REVISION
// naming the revision, as Watch refuses it: an empty last page would have
// the client ask again from there, and be handed, once the log reaches
// past it, the change sets that follow as if they followed what it read,
// without those between.
func TestListChangesPastTheLatestRevisionIsRefused(t *testing.T) {
	long := newServer(t)
	long.world()
	rev := long.grant("user:ann", "call-member", stream42)
	// The token of a page that ends at the long log's last revision, from
	// after the one before it.
	page, err := long.admin.ListChanges(long.ctx(), &usherv1.ListChangesRequest{AfterRevision: rev - 1, PageSize: 1})
	if err != nil || len(page.GetChanges()) != 1 || page.GetNextPageToken() == "" {
		t.Fatalf("the page after %d: %v, next page token %q, %v", rev-1, page.GetChanges(), page.GetNextPageToken(), err)
	}
	short := newServer(t)
	latest := short.revision()
	for _, c := range []struct {
		name         string
		req          *usherv1.ListChangesRequest
		field, value string
	}{
		{"after_revision past the latest", &usherv1.ListChangesRequest{AfterRevision: latest + 1}, "after_revision", fmt.Sprint(latest + 1)},
		{"after_revision of the largest number", &usherv1.ListChangesRequest{AfterRevision: 1<<64 - 1}, "after_revision", fmt.Sprint(uint64(1<<64 - 1))},
		{"a page token of a longer log", &usherv1.ListChangesRequest{AfterRevision: rev - 1, PageToken: page.GetNextPageToken()}, "page_token", page.GetNextPageToken()},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := short.admin.ListChanges(short.ctx(), c.req)
			if err == nil {
				t.Fatalf("answered %d change sets (next page token %q) at revision %d, want FAILED_PRECONDITION", len(r.GetChanges()), r.GetNextPageToken(), latest)
			}
			info := wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "FUTURE_REVISION", field: c.field, value: c.value})
			if got := info.GetMetadata()["latest_revision"]; got != fmt.Sprint(latest) {
				t.Errorf("latest_revision %q, want %d", got, latest)
			}
		})
	}
	if r, err := short.admin.ListChanges(short.ctx(), &usherv1.ListChangesRequest{AfterRevision: latest}); err != nil || len(r.GetChanges()) != 0 || r.GetNextPageToken() != "" {
		t.Errorf("after the latest revision itself: %v, next page token %q, %v; want an empty last page", r.GetChanges(), r.GetNextPageToken(), err)
	}
}

// A change set may hold a million changes (the deletion of a call with a
// livestream's audience granted on it): ListChanges and Watch send it in
// parts of at most 10,000 changes and about 2 MiB, continued but for the
// last, which a client taking gRPC's default of 4 MiB a message reads;
// whole, the log past it could not be read, nor a Watch go past it.
func TestALargeChangeSetComesInPartsAClientTakes(t *testing.T) {
	// Revision 2 holds 25,000 changes of some 230 bytes each, revision 3
	// 25,000 short ones; 1 and 4 one each.
	sizes := []int{1, 25_000, 25_000, 1}
	var sets []authz.ChangeSet
	var want [][]string // the resources each revision registers, in order
	for i, n := range sizes {
		cs := authz.ChangeSet{Caller: "importer"}
		var names []string
		for j := range n {
			name := fmt.Sprintf("doc:%d-%d", i, j)
			if i == 1 {
				name = fmt.Sprintf("doc:%d-%0220d", i, j)
			}
			names = append(names, name)
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: name, Parent: authz.RootName}})
		}
		sets, want = append(sets, cs), append(want, names)
	}
	commit := func(b authz.Backend) {
		for _, cs := range sets {
			if _, err := b.Commit(context.Background(), []authz.Write{{Set: cs}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("memory", func(t *testing.T) {
		b := &readCounting{Memory: memory.New()}
		commit(b)
		changeSetsInParts(t, b, &b.changeCounter, want)
	})
	t.Run("data file", func(t *testing.T) {
		// Reopened: its log is read from the file.
		path := filepath.Join(t.TempDir(), "usher.db")
		store, err := bolt.Open(path, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		commit(store)
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
		if store, err = bolt.Open(path, bolt.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		b := &boltCounting{Store: store}
		changeSetsInParts(t, b, &b.changeCounter, want)
	})
}

// changeSetsInParts checks that ListChanges and Watch send the change sets
// of b, which register the resources of want, each revision's in order, in
// parts that fit a page. Where b reads parts of change sets, an unfiltered
// ListChanges reads none of more than a page whole.
func changeSetsInParts(t *testing.T, b authz.Backend, counted *changeCounter, want [][]string) {
	f := serveBackend(t, b)
	_, parts := b.(authz.PartReader)

	// got gathers the records of each revision, in the order they came,
	// and checks that each holds a part a page or message may hold.
	type gathered struct {
		names []string
		parts []bool // continued, of each part
	}
	gather := func(got map[uint64]*gathered, rec *usherv1.ChangeRecord) {
		t.Helper()
		if n := len(rec.GetChanges()); n > authz.MaxPageChanges {
			t.Errorf("revision %d came with %d changes in one record; want at most %d", rec.GetRevision(), n, authz.MaxPageChanges)
		}
		if size := proto.Size(rec); size > authz.MaxPageBytes+authz.MaxPageBytes/4 {
			t.Errorf("revision %d came in a record of %d bytes; want about %d at most", rec.GetRevision(), size, authz.MaxPageBytes)
		}
		g := got[rec.GetRevision()]
		if g == nil {
			g = &gathered{}
			got[rec.GetRevision()] = g
		}
		for _, c := range rec.GetChanges() {
			g.names = append(g.names, c.GetResource().GetName())
		}
		g.parts = append(g.parts, rec.GetContinued())
	}
	// check checks revisions from+1 to to.
	check := func(what string, got map[uint64]*gathered, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			g := got[uint64(i+1)]
			if g == nil {
				t.Errorf("%s: revision %d never came", what, i+1)
				continue
			}
			if !slices.Equal(g.names, want[i]) {
				t.Errorf("%s: revision %d came with %d changes, want its %d in order", what, i+1, len(g.names), len(want[i]))
			}
			parts := max(1, len(want[i])/authz.MaxPageChanges) // 25,000 short changes: 3 parts at least
			if len(g.parts) < parts {
				t.Errorf("%s: revision %d came in %d parts, want %d at least", what, i+1, len(g.parts), parts)
			}
			for k, continued := range g.parts {
				if last := k == len(g.parts)-1; continued == last {
					t.Errorf("%s: part %d of %d of revision %d: continued = %v", what, k+1, len(g.parts), i+1, continued)
				}
			}
		}
	}

	// checkAll checks what a read of every revision after from, filtered
	// by resource or not, gathered; and, where the backend reads parts
	// and whole is false, that it read no change set whole.
	checkAll := func(what string, got map[uint64]*gathered, resource string, from int, whole bool) {
		t.Helper()
		if most := counted.most.Load(); parts && !whole && most > authz.MaxPageChanges {
			t.Errorf("%s read %d changes of the log whole at once; want the large change sets read a part at a time", what, most)
		}
		switch {
		case resource == "":
			check(what, got, from, len(want))
		case len(got) != 1 || got[2] == nil:
			t.Errorf("%s: revisions %v, want 2 alone", what, slices.Sorted(maps.Keys(got)))
		default:
			check(what, got, 1, 2)
		}
	}

	t.Run("ListChanges", func(t *testing.T) {
		for _, filter := range []*usherv1.ListChangesRequest{
			{PageSize: authz.MaxPageSize},
			{Resource: want[1][12_345]}, // matches revision 2 alone, by one of its changes
		} {
			got, req := map[uint64]*gathered{}, proto.Clone(filter).(*usherv1.ListChangesRequest)
			counted.most.Store(0)
			for pages := 1; ; pages++ {
				resp, err := f.admin.ListChanges(f.ctx(), req)
				if err != nil {
					t.Fatalf("ListChanges(%v), page %d: %v", filter, pages, err)
				}
				for i, rec := range resp.GetChanges() {
					if rec.GetContinued() && (len(resp.GetChanges()) > 1 || resp.GetNextPageToken() == "") {
						t.Fatalf("ListChanges(%v), page %d: record %d of %d continued, with next page token %q; want a part alone in its page, with a token",
							filter, pages, i+1, len(resp.GetChanges()), resp.GetNextPageToken())
					}
					gather(got, rec)
				}
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			// A filter on a resource decodes the change sets whole.
			whole := filter.Resource != ""
			checkAll(fmt.Sprintf("ListChanges(%v)", filter), got, filter.Resource, 0, whole)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		for _, filter := range []*usherv1.WatchRequest{
			{AfterRevision: 1},
			{AfterRevision: 1, Resource: want[1][12_345]}, // matches revision 2 alone, by one of its changes
		} {
			ctx, cancel := context.WithCancel(f.ctx())
			defer cancel()
			counted.most.Store(0)
			stream, err := f.authz.Watch(ctx, filter)
			if err != nil {
				t.Fatal(err)
			}
			got := map[uint64]*gathered{}
			for {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("Watch(%v): %v", filter, err)
				}
				rec := resp.GetChange()
				if rec == nil {
					continue // the first message, or progress
				}
				// A stream resumed from a part's revision sends its change
				// set again whole.
				if rec.GetContinued() != (resp.GetRevision() < rec.GetRevision()) || resp.GetRevision() > rec.GetRevision() {
					t.Fatalf("Watch(%v): a part of revision %d, continued = %v, came at revision %d", filter, rec.GetRevision(), rec.GetContinued(), resp.GetRevision())
				}
				gather(got, rec)
				if resp.GetRevision() == uint64(len(want)) || filter.Resource != "" && resp.GetRevision() == 2 {
					break
				}
			}
			cancel()
			checkAll(fmt.Sprintf("Watch(%v)", filter), got, filter.Resource, 1, false)
		}
	})

	t.Run("a token past its change set", func(t *testing.T) {
		req := &usherv1.ListChangesRequest{AfterRevision: 1}
		resp, err := f.admin.ListChanges(f.ctx(), req)
		if err != nil || len(resp.GetChanges()) != 1 || !resp.GetChanges()[0].GetContinued() {
			t.Fatalf("ListChanges after revision 1: %d records, %v", len(resp.GetChanges()), err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(resp.GetNextPageToken())
		if err != nil {
			t.Fatal(err)
		}
		// The same token, its part placed past the change set's end.
		body := append(raw[:16:16], "25000"...)
		req.PageToken = base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint32(body, crc32.ChecksumIEEE(body)))
		_, err = f.admin.ListChanges(f.ctx(), req)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), fmt.Sprintf("page_token %q", req.PageToken)) {
			t.Errorf("ListChanges with a token past its change set: %v, want InvalidArgument naming page_token", err)
		}
	})
}

// gatedReads is a memory backend whose reads of a change set of more than
// a page wait for gate, however long, counting how many wait at once.
type gatedReads struct {
	*memory.Memory
	gate     chan struct{}
	in, most atomic.Int64
}

func (b *gatedReads) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	sets, err := b.Memory.Changes(ctx, after, limit)
	if len(sets) > 0 && len(sets[0].Changes) > authz.MaxPageChanges {
		n := b.in.Add(1)
		for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
		}
		<-b.gate // whatever ctx says: the read holds its turn till then
		b.in.Add(-1)
	}
	return sets, err
}

// A ListChanges filtered by a resource reads a change set of more than a
// page whole, to match it: some 700 MB for a million changes. Such reads
// go one at a time, however many clients ask at once.
func TestLargeChangeSetsAreReadWholeOneAtATime(t *testing.T) {
	b := &gatedReads{Memory: memory.New(), gate: make(chan struct{})}
	commitDocs(t, b, 1, 12_000, 1)
	f := serveBackend(t, b)

	const clients = 3
	errs := make(chan error, clients)
	for range clients {
		go func() {
			resp, err := f.admin.ListChanges(f.ctx(), &usherv1.ListChangesRequest{Resource: "doc:1-7"})
			if err == nil && (len(resp.GetChanges()) != 1 || !resp.GetChanges()[0].GetContinued()) {
				err = fmt.Errorf("%d records, want the first part of revision 2", len(resp.GetChanges()))
			}
			errs <- err
		}()
	}
	// One read reaches the log; the others wait their turn before it.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n := b.in.Load(); n > 1 {
			t.Fatalf("%d ListChanges read the large change set whole at once; want one at a time", n)
		}
	}
	close(b.gate)
	for range clients {
		if err := <-errs; err != nil {
			t.Errorf("ListChanges of doc:1-7: %v", err)
		}
	}
	if most := b.most.Load(); most != 1 {
		t.Errorf("%d reads of the large change set at once; want 1", most)
	}
}

// A read that waits its turn to decode a large change set past the bound
// of a read of the log (Options.CommitTimeout) is UNAVAILABLE, as a read of
// a log out of reach is; the read that holds the turn is answered.
func TestALargeReadWaitingPastItsBoundIsUnavailable(t *testing.T) {
	b := &gatedReads{Memory: memory.New(), gate: make(chan struct{})}
	commitDocs(t, b, 1, 12_000, 1)
	engine, err := authz.Start(context.Background(), b, authz.Options{CommitTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	f := serveEngine(t, engine)

	first := make(chan error, 1)
	go func() {
		_, err := f.admin.ListChanges(f.ctx(), &usherv1.ListChangesRequest{Resource: "doc:1-7"})
		first <- err
	}()
	for b.in.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	_, err = f.admin.ListChanges(f.ctx(), &usherv1.ListChangesRequest{Resource: "doc:1-8"})
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable || reasonOf(st) != string(authz.KindUnavailableStorage) {
		t.Errorf("ListChanges waiting its turn past its bound: %v (reason %q), want Unavailable UNAVAILABLE_STORAGE", err, reasonOf(st))
	}
	close(b.gate)
	if err := <-first; err != nil {
		t.Errorf("ListChanges holding the turn: %v", err)
	}
}
