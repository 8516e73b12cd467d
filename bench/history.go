package bench

import (
	"fmt"
	"math/rand/v2"

	"github.com/usher-authz/usher/authz"
)

// HistorySubjects is how many subjects a generated history's grants go to.
const HistorySubjects = 1000

// HistorySubject is the i-th subject of a generated history.
func HistorySubject(i int) string { return fmt.Sprintf("user:h%d", i%HistorySubjects) }

// History is n change sets for a populated data file's change log: in
// pairs, a subject of HistorySubject is granted call-member on one of the
// platform's calls, then revoked. The platform ends as it began, so loads
// drawn from it still get the answers they expect, and the log is long, as a
// server's is after months of grants: what a filtered ListChanges reads
// through. Each of the HistorySubjects subjects appears about
// n/HistorySubjects times, spread over the whole log.
func History(p Platform, n int, seed uint64) []authz.ChangeSet {
	calls := p.Levels[LevelCall]
	if len(calls) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, seed+4))
	out := make([]authz.ChangeSet, 0, n)
	var g authz.Grant
	for i := range n {
		op := authz.OpDeleteGrant
		if i%2 == 0 {
			op = authz.OpPutGrant
			g = authz.Grant{Subject: HistorySubject(rng.IntN(HistorySubjects)), Role: "call-member", Resource: calls[rng.IntN(len(calls))]}
		}
		grant := g
		out = append(out, authz.ChangeSet{Caller: "usher bench populate", Actor: "user:history-admin",
			Changes: []authz.Change{{Op: op, Grant: &grant}}})
	}
	return out
}
