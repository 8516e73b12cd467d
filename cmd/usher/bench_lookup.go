package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// lookup is one lookup the background client follows page by page to its
// end: the calls a user may join (subject set), or the users who may join a
// call (resource set).
type lookup struct {
	kind              string
	subject, resource string
}

// The permission and types the lookups ask about: the call list of an app,
// and the participant list of a call.
const (
	lookupPermission = "join-call"
	lookupType       = "call"
	lookupKind       = "user"
)

func (l lookup) name() string { return l.subject + l.resource }

// page asks for one page of l and returns its answers and the next token.
func (l lookup) page(ctx context.Context, client usherv1.AuthorizationServiceClient, size int, token string) (int, string, error) {
	if l.subject != "" {
		resp, err := client.LookupResources(ctx, &usherv1.LookupResourcesRequest{
			Subject: l.subject, Permission: lookupPermission, ResourceType: lookupType, PageSize: int32(size), PageToken: token})
		return len(resp.GetResources()), resp.GetNextPageToken(), err
	}
	resp, err := client.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{
		Resource: l.resource, Permission: lookupPermission, SubjectKind: lookupKind, PageSize: int32(size), PageToken: token})
	return len(resp.GetSubjects()), resp.GetNextPageToken(), err
}

// lookupLoad runs lookups beside Check, and alone: LookupResources of the
// calls a user may join and LookupSubjects of the users who may join a
// call, for the f.pick users and calls with the largest answers and as many
// with typical (median) ones, each followed to its last page.
func lookupLoad(ctx context.Context, f *loadFlags, p bench.Platform, conn *grpc.ClientConn) (func(workers int) sideLoad, error) {
	lookups := pickLookups(p, f.pick)
	client := usherv1.NewAuthorizationServiceClient(conn)
	// Each once, to say what the load looks up, and that it can.
	sizes := map[string][]int{}
	var kinds []string
	for _, l := range lookups {
		items, pages := 0, 0
		for token := ""; ; {
			n, next, err := l.page(ctx, client, f.pageSize, token)
			if err != nil {
				return nil, fmt.Errorf("%s of %s: %w", l.kind, l.name(), err)
			}
			items, pages, token = items+n, pages+1, next
			if next == "" {
				break
			}
		}
		if sizes[l.kind] == nil {
			kinds = append(kinds, l.kind)
		}
		sizes[l.kind] = append(sizes[l.kind], items)
	}
	for _, k := range kinds {
		fmt.Printf("%s (%s): %v answers\n", k, lookupPermission, sizes[k])
	}
	return func(int) sideLoad {
		beside := &bench.Lister{Name: besideName("lookups", f), Rate: f.rate, Next: lookupNext(client, lookups, f.pageSize)}
		alone := &bench.Lister{Name: "lookups alone", Rate: f.rate, Next: lookupNext(client, lookups, f.pageSize)}
		return sideLoad{
			phases:  []sidePhase{{name: beside.Name, background: beside.Run}, {name: alone.Name, background: alone.Run, alone: true}},
			listers: []*bench.Lister{alone, beside},
			compare: []comparison{{phase: beside.Name, maxP99: lookupMaxP99}},
		}
	}, nil
}

// lookupNext follows each lookup to its last page, then the next, round and
// round.
func lookupNext(client usherv1.AuthorizationServiceClient, lookups []lookup, size int) func(context.Context, int) (bench.Step, error) {
	cur, token := 0, ""
	return func(ctx context.Context, _ int) (bench.Step, error) {
		l := lookups[cur]
		n, next, err := l.page(ctx, client, size, token)
		token = next
		if err != nil || next == "" {
			cur, token = (cur+1)%len(lookups), ""
		}
		return bench.Step{Kind: l.kind, Items: n, Last: next == ""}, err
	}
}

// pickLookups chooses the users and calls to look up, from what the
// platform's grants reach: a user's calls are those of and below their
// grants, a call's users those granted on it and above it. It takes the
// pick largest of each and pick around the median, and interleaves them.
func pickLookups(p bench.Platform, pick int) []lookup {
	parent := map[string]string{}
	for _, r := range p.Snapshot.Resources {
		parent[r.Name] = r.Parent
	}
	reach := map[string]int{}   // user -> calls their grants reach
	granted := map[string]int{} // resource -> grants on it
	for _, g := range p.Snapshot.Grants {
		if g.Resource == p.Crowd {
			continue
		}
		granted[g.Resource]++
		if below := p.CallsBelow[g.Resource]; len(below) > 0 {
			reach[g.Subject] += len(below)
		} else if strings.HasPrefix(g.Resource, "call:") {
			reach[g.Subject]++
		}
	}
	holders := map[string]int{} // call -> grants on it and above
	for _, call := range p.Levels[bench.LevelCall] {
		for r := call; r != ""; r = parent[r] {
			holders[call] += granted[r]
		}
	}
	users := ranked(reach, pick)
	calls := ranked(holders, pick)
	var out []lookup
	for i := range pick {
		for _, c := range []struct {
			kind string
			from [2][]string
			make func(string) lookup
		}{
			{"LookupResources", users, func(s string) lookup { return lookup{subject: s} }},
			{"LookupSubjects", calls, func(r string) lookup { return lookup{resource: r} }},
		} {
			for j, which := range []string{"large answers", "typical answers"} {
				if i < len(c.from[j]) {
					l := c.make(c.from[j][i])
					l.kind = c.kind + ", " + which
					out = append(out, l)
				}
			}
		}
	}
	return out
}

// ranked returns the n names of the largest counts and the n around the
// median, ties by name.
func ranked(counts map[string]int, n int) [2][]string {
	names := make([]string, 0, len(counts))
	for k := range counts {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), strings.Compare(a, b))
	})
	mid := max(len(names)/2-n/2, 0)
	return [2][]string{names[:min(n, len(names))], names[mid:min(mid+n, len(names))]}
}
