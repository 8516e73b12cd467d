package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// adminLoad runs an administrator beside Check, and alone: one client that
// pages through a resource's grants (the crowd's, when the platform has one,
// else every resource's in turn), pages through the change log with a
// filter (by a subject of the populated history, by a call, by a subject
// nothing matches), and moves a workspace to another account and back. It
// shares its time between the three, half to the grants and a quarter to
// each of the others: the next call goes to the one that is furthest behind
// its share, so a cheap page does not wait for an expensive one's turn.
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
	a := &adminClient{admin: admin, pageSize: int32(f.pageSize), calls: p.Levels[bench.LevelCall]}
	if p.Crowd != "" {
		a.listed, a.grantsKind = []string{p.Crowd}, "ListGrants of "+p.Crowd
	} else {
		for _, r := range p.Snapshot.Resources {
			a.listed = append(a.listed, r.Name)
		}
		a.grantsKind = "ListGrants of each resource"
		fmt.Println("WARNING: no crowd: populate with --crowd for one resource with many grants to page through")
	}
	if a.move, err = pickMove(p); err != nil {
		return nil, err
	}
	// A run cut short between the move and its return left the workspace
	// away; the platform's checks expect it at home.
	if _, err := admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: a.move.name, Parent: a.move.home}); err != nil {
		return nil, fmt.Errorf("putting %s back below %s: %w", a.move.name, a.move.home, err)
	}
	return func(int) sideLoad {
		beside, alone := *a, *a
		l := &bench.Lister{Name: besideName("admin", f), Rate: f.rate, Next: beside.next}
		lonely := &bench.Lister{Name: "admin alone", Rate: f.rate, Next: alone.next}
		return sideLoad{
			phases:  []sidePhase{{name: l.Name, background: l.Run}, {name: lonely.Name, background: lonely.Run, alone: true}},
			listers: []*bench.Lister{lonely, l},
			compare: []comparison{{phase: l.Name, maxP99: adminMaxP99}},
		}
	}, nil
}

// adminClient is the administrator's place in each of its listings.
type adminClient struct {
	admin      usherv1.AdminServiceClient
	pageSize   int32
	calls      []string
	listed     []string
	grantsKind string
	move       *move

	spent                   [3]time.Duration // by activity: grants, changes, moves
	grant, filter           int
	grantToken, changeToken string
}

// The administrator's activities, and the share of its time each takes.
const (
	listingGrants = iota
	listingChanges
	moving
)

var adminShares = [3]time.Duration{2, 1, 1}

// next makes a call of the activity furthest behind its share of the time.
func (a *adminClient) next(ctx context.Context, _ int) (bench.Step, error) {
	act := listingGrants
	for i := range a.spent {
		if a.spent[i]/adminShares[i] < a.spent[act]/adminShares[act] {
			act = i
		}
	}
	start := time.Now()
	defer func() { a.spent[act] += time.Since(start) }()
	switch act {
	case moving:
		// The move and its return are one step, so that no run ends with
		// the workspace away.
		_, err := a.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: a.move.name, Parent: a.move.to})
		if err == nil {
			_, err = a.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: a.move.name, Parent: a.move.home})
		}
		return bench.Step{Kind: "PutResource, a workspace moved and back", Last: true}, err
	case listingGrants:
		resp, err := a.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: a.listed[a.grant], PageSize: a.pageSize, PageToken: a.grantToken})
		a.grantToken = resp.GetNextPageToken()
		if err != nil || a.grantToken == "" {
			a.grant, a.grantToken = (a.grant+1)%len(a.listed), ""
		}
		return bench.Step{Kind: a.grantsKind, Items: len(resp.GetGrants()), Last: a.grantToken == ""}, err
	}
	req := &usherv1.ListChangesRequest{PageSize: a.pageSize, PageToken: a.changeToken}
	var kind string
	switch a.filter % 3 {
	case 0:
		req.Subject, kind = bench.HistorySubject(a.filter/3), "ListChanges by subject"
	case 1:
		req.Resource, kind = a.calls[(a.filter/3)%len(a.calls)], "ListChanges by call"
	default:
		req.Subject, kind = "user:nobody", "ListChanges matching nothing"
	}
	resp, err := a.admin.ListChanges(ctx, req)
	a.changeToken = resp.GetNextPageToken()
	if err != nil || a.changeToken == "" {
		a.filter, a.changeToken = a.filter+1, ""
	}
	return bench.Step{Kind: kind, Items: len(resp.GetChanges()), Last: a.changeToken == ""}, err
}

// move is a workspace the admin load moves to another account and back.
type move struct{ name, home, to string }

// pickMove chooses the last workspace of the first account (the crowd's is
// the first) and the second account.
func pickMove(p bench.Platform) (*move, error) {
	accounts := p.Levels[bench.LevelAccount]
	if len(accounts) < 2 {
		return nil, fmt.Errorf("the admin load moves a workspace between two accounts; the platform has %d", len(accounts))
	}
	var m *move
	for _, r := range p.Snapshot.Resources {
		if r.Parent == accounts[0] {
			m = &move{name: r.Name, home: accounts[0], to: accounts[1]}
		}
	}
	if m == nil {
		return nil, fmt.Errorf("%s has no workspace to move", accounts[0])
	}
	return m, nil
}
