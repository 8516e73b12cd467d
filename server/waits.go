package server

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
)

// MaxWaitingBytes bounds what reads waiting for their min_revision hold at
// once: a read holds its request, a CheckBatch's up to 4 MiB, for as long
// as it waits (at most 5 s), after the receive budget has stopped counting
// it, and its call besides, whatever its request's size (waitOverhead and
// its headers). One caller of the callers file holds at most a quarter of
// it, or one read when it holds none. A read past either waits not, and is
// refused RESOURCE_EXHAUSTED.
const MaxWaitingBytes = 64 << 20

// waitOverhead is what a read waiting for its min_revision holds besides
// its request and its headers: its handler's goroutine and the stream's
// state, as the receive budget counts a stream waiting for its request
// (streamOverhead), and the wait's context and timer. Counted by their
// encoded size alone, 6,400 Checks of some 60 bytes waiting at once from
// one address (64 connections of 100 calls) held 170 MB where the bound
// saw 400 KB, and 24,000 from four addresses 570 MB.
const waitOverhead = streamOverhead

// waitingBytesOption carries another bound than MaxWaitingBytes through
// New's grpc.ServerOption list, for tests that fill it without moving as
// many bytes; gRPC itself ignores it.
type waitingBytesOption struct {
	grpc.EmptyServerOption
	n int
}

// waitingBytes is the bound on what waiting reads hold among opts, or
// MaxWaitingBytes.
func waitingBytes(opts []grpc.ServerOption) int {
	if w, ok := optionOf[waitingBytesOption](opts); ok {
		return w.n
	}
	return MaxWaitingBytes
}

// optionOf finds the first option of type T among opts: the options New
// takes beside gRPC's own, which gRPC ignores.
func optionOf[T grpc.ServerOption](opts []grpc.ServerOption) (T, bool) {
	for _, o := range opts {
		if t, ok := o.(T); ok {
			return t, true
		}
	}
	var none T
	return none, false
}

// revisionWaits makes the reads of one server wait for their min_revision
// within MaxWaitingBytes.
type revisionWaits struct {
	engine  *authz.Engine
	all     *streamShares // one holder, "": every read that waits
	callers *streamShares // by caller
}

func newRevisionWaits(engine *authz.Engine, max int) *revisionWaits {
	return &revisionWaits{engine: engine, all: newStreamShares(max), callers: newStreamShares(shareOf(0, max))}
}

// await waits until the index reaches a read's min_revision, rev (0: no
// wait), holding req's size against the bound on what waiting reads hold.
// It stops waiting a little before the caller's deadline, so that the
// FAILED_PRECONDITION saying the revision was not reached arrives before
// the caller's own deadline fires and hides it behind DEADLINE_EXCEEDED: a
// quarter of the time left, at most a quarter of a second, which a busy
// server still answers within (a tenth, 30 ms of a 300 ms deadline, was
// not, on two loaded cores).
func (w *revisionWaits) await(ctx context.Context, rev uint64, req proto.Message) error {
	if rev == 0 || w.engine.Index().Revision() >= authz.Revision(rev) {
		return nil
	}
	release, err := w.take(ctx, rev, proto.Size(req)+waitOverhead+headerBytes(ctx))
	if err != nil {
		return err
	}
	defer release()
	if deadline, ok := ctx.Deadline(); ok {
		margin := min(time.Until(deadline)/4, 250*time.Millisecond)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
		defer cancel()
	}
	return toStatus(w.engine.Await(ctx, authz.Revision(rev)))
}

// headerBytes is what the headers of the call of ctx hold, counted as
// HTTP/2 counts a header list: each name and value, and 32 bytes for each
// entry.
func headerBytes(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	n := 0
	for k, vs := range md {
		for _, v := range vs {
			n += len(k) + len(v) + 32
		}
	}
	return n
}

// take counts n bytes of a read waiting for rev in, against the server's
// bound and its caller's share of it, or refuses the read.
func (w *revisionWaits) take(ctx context.Context, rev uint64, n int) (release func(), err error) {
	holder, reason, limit := "", reasonWaitLimit, w.all.limit
	c, named := callerIn(ctx)
	var mine func()
	if named {
		var ok bool
		if mine, ok = w.callers.takeN(c.Name, n); !ok {
			holder, reason, limit = c.Name, reasonCallerWaitLimit, w.callers.limit
		}
	}
	if reason == reasonWaitLimit {
		all, ok := w.all.takeN("", n)
		if ok {
			if mine == nil {
				return all, nil
			}
			return func() { all(); mine() }, nil
		}
		if mine != nil {
			mine()
		}
	}
	who := "reads waiting for their min_revision"
	meta := map[string]string{"limit": strconv.Itoa(limit)}
	if holder != "" {
		who = fmt.Sprintf("caller %q's reads waiting for their min_revision", holder)
		meta["caller"] = holder
	}
	value := strconv.FormatUint(rev, 10)
	return nil, refuse(codes.ResourceExhausted,
		fmt.Sprintf("min_revision %q: %s hold as many bytes as they may (%d); this one, of %d bytes with its call, does not wait: read again later, or without min_revision",
			value, who, limit, n),
		details{reason: reason, field: "min_revision", value: value, meta: meta,
			why: fmt.Sprintf("%s hold at most %d bytes at once", who, limit)})
}
