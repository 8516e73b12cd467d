package storage

import (
	"fmt"

	"github.com/usher-authz/usher/authz"
)

// Versions remembers, for a window of recent revisions, which guard keys
// each commit touched, so that a backend whose commits all pass through one
// process (bbolt, memory) can tell whether a write planned at some revision
// read anything that changed since. A write planned before the window is
// treated as conflicting: it is planned again, on a newer index. The window
// also ends where the keys it remembers would take more than
// MaxVersionBytes: writes of many keys (large policies) would otherwise
// hold gigabytes.
type Versions struct {
	window  authz.Revision
	horizon authz.Revision            // plans at or after it are judged exactly
	last    map[string]authz.Revision // key -> revision of its last touch
	log     []touched                 // touches in revision order, for forgetting
	held    int                       // what log's keys take, by keyBytes
}

type touched struct {
	rev  authz.Revision
	keys []string
}

// DefaultVersionWindow is how many revisions Versions remembers.
const DefaultVersionWindow = 1 << 16

// MaxVersionBytes bounds what the keys Versions remembers take, by
// keyBytes; the latest commit's are remembered whatever they take.
const MaxVersionBytes = 32 << 20

// keyBytes is about what remembering key takes: its bytes, its place in
// the log and its entry in the map.
func keyBytes(key string) int { return len(key) + 64 }

// NewVersions returns a tracker that starts at revision rev, the store's
// latest: every plan at or after it is exact.
func NewVersions(rev authz.Revision, window authz.Revision) *Versions {
	if window == 0 {
		window = DefaultVersionWindow
	}
	return &Versions{window: window, horizon: rev, last: map[string]authz.Revision{}}
}

// Conflict returns the first guard of w touched after w.Planned, or "".
func (v *Versions) Conflict(w authz.Write) string {
	if w.Planned < v.horizon {
		return fmt.Sprintf("(planned at revision %d, before the last %d revisions)", w.Planned, v.window)
	}
	for _, k := range w.Guards {
		if v.last[k] > w.Planned {
			return k
		}
	}
	return ""
}

// Touch records that the commit at rev touched keys.
func (v *Versions) Touch(rev authz.Revision, keys []string) {
	for _, k := range keys {
		v.last[k] = rev
		v.held += keyBytes(k)
	}
	v.log = append(v.log, touched{rev: rev, keys: keys})
	for len(v.log) > 0 && (v.log[0].rev+v.window <= rev || len(v.log) > 1 && v.held > MaxVersionBytes) {
		for _, k := range v.log[0].keys {
			if v.last[k] == v.log[0].rev {
				delete(v.last, k)
			}
			v.held -= keyBytes(k)
		}
		// A plan before the next touch remembered may have read what the
		// forgotten one changed.
		v.horizon = v.log[0].rev
		v.log[0] = touched{}
		v.log = v.log[1:]
	}
}
