package server_test

import (
	"testing"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

func TestGetRevisionAnswersWhereTheServerIs(t *testing.T) {
	f := newServer(t)
	for _, write := range []func() uint64{
		f.world,
		func() uint64 { return f.grant("user:alice", "host", stream42) },
	} {
		rev := write()
		resp, err := f.authz.GetRevision(f.ctx(), &usherv1.GetRevisionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetRevision() != rev || resp.GetLatest() != rev || !resp.GetServing() {
			t.Errorf("after the write at %d: revision %d, latest %d, serving %t; want %d, %d, true",
				rev, resp.GetRevision(), resp.GetLatest(), resp.GetServing(), rev, rev)
		}
	}
}
