package main

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// adminLoad runs an administrator beside Check: one client that, back to
// back, pages through a resource's grants (the crowd's, when the platform
// has one, else every resource's in turn), pages through the change log
// with a filter (by a subject of the populated history, by a call, by a
// subject nothing matches), and now and then moves a workspace to another
// account and back. Of every ten calls, four are ListGrants pages, four
// ListChanges pages and two the move and its return.
func adminLoad(ctx context.Context, f *loadFlags, p bench.Platform, conn *grpc.ClientConn) (func(workers int) sideLoad, error) {
	admin := usherv1.NewAdminServiceClient(conn)
	rev, err := usherv1.NewAuthorizationServiceClient(conn).GetRevision(ctx, &usherv1.GetRevisionRequest{})
	if err != nil {
		return nil, err
	}
	fmt.Printf("the change log holds %d change sets\n", rev.GetRevision())
	if rev.GetRevision() < 10_000 {
		fmt.Println("WARNING: a short change log: populate with --history for ListChanges to read through a long one")
	}
	listed := []string{p.Crowd}
	grantsKind := "ListGrants of " + p.Crowd
	if p.Crowd == "" {
		listed = listed[:0]
		for _, r := range p.Snapshot.Resources {
			listed = append(listed, r.Name)
		}
		grantsKind = "ListGrants of each resource"
		fmt.Println("WARNING: no crowd: populate with --crowd for one resource with many grants to page through")
	}
	mv, err := pickMove(p)
	if err != nil {
		return nil, err
	}
	// A run cut short between the move and its return leaves the workspace
	// away; the platform's checks expect it at home.
	if _, err := admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: mv.name, Parent: mv.home}); err != nil {
		return nil, fmt.Errorf("putting %s back below %s: %w", mv.name, mv.home, err)
	}
	calls := p.Levels[bench.LevelCall]
	return func(int) sideLoad {
		var (
			grant, filter           int
			grantToken, changeToken string
		)
		next := func(ctx context.Context, seq int) (bench.Step, error) {
			switch pos := seq % 10; {
			case pos == 8 || pos == 9:
				parent := mv.away
				if pos == 9 {
					parent = mv.home
				}
				_, err := admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: mv.name, Parent: parent})
				return bench.Step{Kind: "PutResource, a workspace moved and back", Last: pos == 9}, err
			case pos%2 == 0:
				resp, err := admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: listed[grant], PageSize: int32(f.pageSize), PageToken: grantToken})
				grantToken = resp.GetNextPageToken()
				if err != nil || grantToken == "" {
					grant, grantToken = (grant+1)%len(listed), ""
				}
				return bench.Step{Kind: grantsKind, Items: len(resp.GetGrants()), Last: grantToken == ""}, err
			default:
				req := &usherv1.ListChangesRequest{PageSize: int32(f.pageSize), PageToken: changeToken}
				var kind string
				switch filter % 3 {
				case 0:
					req.Subject, kind = bench.HistorySubject(filter/3), "ListChanges by subject"
				case 1:
					req.Resource, kind = calls[(filter/3)%len(calls)], "ListChanges by call"
				default:
					req.Subject, kind = "user:nobody", "ListChanges matching nothing"
				}
				resp, err := admin.ListChanges(ctx, req)
				changeToken = resp.GetNextPageToken()
				if err != nil || changeToken == "" {
					filter, changeToken = filter+1, ""
				}
				return bench.Step{Kind: kind, Items: len(resp.GetChanges()), Last: changeToken == ""}, err
			}
		}
		l := &bench.Lister{Name: besideName("admin", f), Rate: f.rate, Next: next}
		return sideLoad{
			phases:  []sidePhase{{name: l.Name, background: l.Run}},
			listers: []*bench.Lister{l},
			compare: []comparison{{phase: l.Name, maxP99: adminMaxP99}},
		}
	}, nil
}

// move is a workspace the admin load moves to another account and back.
type move struct{ name, home, away string }

// pickMove chooses the last workspace of the first account (the crowd's is
// the first) and the second account.
func pickMove(p bench.Platform) (move, error) {
	accounts := p.Levels[bench.LevelAccount]
	if len(accounts) < 2 {
		return move{}, fmt.Errorf("the admin load moves a workspace between two accounts; the platform has %d", len(accounts))
	}
	var m move
	for _, r := range p.Snapshot.Resources {
		if r.Parent == accounts[0] {
			m = move{name: r.Name, home: accounts[0], away: accounts[1]}
		}
	}
	if m.name == "" {
		return m, fmt.Errorf("%s has no workspace to move", accounts[0])
	}
	return m, nil
}
