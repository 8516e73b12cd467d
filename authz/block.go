package authz

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// MaxBlocksPerBinding is the most blocks one subject may carry on one
// resource. A new block past it takes the place of blocks that ran out,
// or else of live ones it covers and outlasts, so that one who may only
// mute cannot keep a ban out; lifted early, it does not bring them back.
const MaxBlocksPerBinding = 100

// Block denies b.Subject the listed permissions (all when none are listed),
// with everything they imply, on b.Resource and below. Blocks are additive:
// a new block never weakens another (see MaxBlocksPerBinding). A block with an ID that
// exists replaces that block; without an ID, the block gets a new one.
func (e *Engine) Block(ctx context.Context, by Author, b Block) (Revision, string, error) {
	asked := b.Permissions // errors index the request's list, not the sorted one
	b.Permissions = sortedSet(b.Permissions)
	if b.ID == "" {
		b.ID = newBlockID()
	}
	rev, err := e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("block %q on %q", b.Subject, b.Resource)
		res, err := x.registered("resource", b.Resource)
		if err != nil {
			return err
		}
		p.guard(resourceKey(b.Resource), keyCatalog)
		if i := x.cat.undeclared(asked, false); i >= 0 {
			return errorf(Invalid, fmt.Sprintf("permissions[%d]", i), asked[i], "permission is not declared in the catalog").as(KindUndeclaredPermission)
		}
		if by.Actor != "" && b.Subject == by.Actor {
			return p.selfService("block", "block itself")
		}
		if err := p.requireBlock(res, b.Permissions, "blocking a subject on it"); err != nil {
			return err
		}
		if err := checkExpiry(b.Expires, p.now); err != nil {
			return err
		}
		b.Expires = b.Expires.UTC()
		p.guard(subjectKey(b.Subject))
		var existing []*blockEntry
		if s := x.subj.lookup(b.Subject); s != noName {
			existing = x.blocksOn(s, res)
		}
		if i, found := searchBlock(existing, b.ID); found {
			if sameBlock(existing[i].Block, b) {
				return nil
			}
		} else if len(existing) >= MaxBlocksPerBinding {
			// Blocks that ran out deny nothing: they make way for this
			// one, so that none can be filled with them to keep a ban
			// from being placed. Nor with live ones (an accomplice's
			// mutes): when those that ran out are too few, as few as
			// needed of the live ones this one covers and outlasts make
			// way, the soonest to run out first; while this one lives,
			// they deny nothing it does not.
			var spent, covered []*blockEntry
			for _, e := range existing {
				if !live(e.exp, p.now) {
					spent = append(spent, e)
				} else if covers(b, e) {
					covered = append(covered, e)
				}
			}
			if short := len(existing) - len(spent) - MaxBlocksPerBinding + 1; short > 0 && len(covered) >= short {
				slices.SortStableFunc(covered, func(c, d *blockEntry) int { return cmpExpiry(c.exp, d.exp) })
				spent = append(spent, covered[:short]...)
			}
			if n := len(existing) - len(spent); n >= MaxBlocksPerBinding {
				e := errorf(ResourceExhausted, "subject", b.Subject,
					"subject already carries %d unexpired blocks on %q, the most one subject may carry on one resource; unblock some first", n, b.Resource)
				e.Meta = map[string]string{"resource": b.Resource, "limit": fmt.Sprint(MaxBlocksPerBinding), "used": fmt.Sprint(n)}
				return e
			}
			for _, e := range spent {
				p.change(Change{Op: OpDeleteBlock, Block: &Block{Subject: b.Subject, Resource: b.Resource, ID: e.ID}})
			}
		}
		p.change(Change{Op: OpPutBlock, Block: &b})
		return nil
	})
	return rev, b.ID, err
}

// Unblock lifts the block of subject on resource with the given ID, or,
// with no ID, every block of subject there that the author may lift (all of
// them for the platform). NotFound when there is none; PermissionDenied when
// an actor may lift none of them.
func (e *Engine) Unblock(ctx context.Context, by Author, subject, resource, id string) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("unblock %q on %q", subject, resource)
		res, err := x.registered("resource", resource)
		if err != nil {
			return err
		}
		p.guard(resourceKey(resource))
		if by.Actor != "" && subject == by.Actor {
			return p.selfService("unblock", "unblock itself")
		}
		// An actor who holds usher.blocks.write only narrowed to some
		// permissions lifts only the blocks that list no other.
		full := by.Actor == ""
		if !full {
			p.guardActor()
			full = p.actorHolds(res, PermBlocksWrite)
		}
		p.guard(subjectKey(subject))
		var blocks []*blockEntry
		if s := x.subj.lookup(subject); s != noName {
			blocks = x.blocksOn(s, res)
		}
		if !full {
			var may []*blockEntry
			for _, b := range blocks {
				if p.mayBlock(res, b.Permissions) {
					may = append(may, b)
				}
			}
			if len(may) == 0 || id != "" && !slices.ContainsFunc(may, func(b *blockEntry) bool { return b.ID == id }) {
				return p.lacks(res, PermBlocksWrite, "unblocking a subject on it")
			}
			blocks = may
		}
		if id != "" {
			i, found := searchBlock(blocks, id)
			if !found {
				return errorf(NotFound, "block_id", id, "%q carries no block with that ID on %q", subject, resource).as(KindBlockNotFound)
			}
			blocks = blocks[i : i+1]
		}
		if len(blocks) == 0 {
			return errorf(NotFound, "subject", subject, "subject is not blocked on %q", resource).as(KindBlockNotFound)
		}
		lift := func(b *blockEntry) Change {
			return Change{Op: OpDeleteBlock, Block: &Block{Subject: subject, Resource: resource, ID: b.ID}}
		}
		if by.Actor == "" || id != "" {
			for _, b := range blocks {
				p.change(lift(b))
			}
			return nil
		}
		// Every block the actor may lift, each judged with those before it.
		// Lifting more of them gives the subject more and takes nothing
		// away, so when the actor may lift them all at once it may lift
		// each after those before it: they are judged together first, and
		// one by one only when that is refused, within one budget.
		for _, b := range blocks {
			p.change(lift(b))
		}
		if err := p.judge.verify(); err == nil {
			p.judged = true
			return nil
		} else if CodeOf(err) != PermissionDenied {
			return err // judged beyond its budget, or given up by its caller
		}
		p.changes, p.touches = p.changes[:0], p.touches[:0]
		var first error
		for _, b := range blocks {
			p.change(lift(b))
			if err := p.judge.verify(); err != nil {
				// A verdict refuses this block; a write judged beyond its
				// budget, or given up by its caller, lifts none.
				if CodeOf(err) != PermissionDenied {
					return err
				}
				p.changes, p.touches = p.changes[:len(p.changes)-1], p.touches[:len(p.touches)-len(x.touches(lift(b)))]
				if first == nil {
					first = err
				}
			}
		}
		if len(p.changes) == 0 {
			return first
		}
		// The last verdict that held was on these changes.
		p.judged = true
		return nil
	})
}

// covers reports whether b denies all that e denies, for at least as long:
// it lists no permission, or every one e lists, and runs out no sooner.
func covers(b Block, e *blockEntry) bool {
	if cmpExpiry(expiry(b.Expires), e.exp) < 0 {
		return false
	}
	if len(b.Permissions) == 0 {
		return true
	}
	return len(e.Permissions) > 0 && !slices.ContainsFunc(e.Permissions, func(perm string) bool {
		_, found := slices.BinarySearch(b.Permissions, perm)
		return !found
	})
}

// cmpExpiry orders expiries soonest first, never last.
func cmpExpiry(a, b int64) int {
	switch {
	case a == b:
		return 0
	case a == 0:
		return 1
	case b == 0:
		return -1
	}
	return cmp.Compare(a, b)
}

func newBlockID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func sameBlock(a, b Block) bool {
	return a.Subject == b.Subject && a.Resource == b.Resource && a.ID == b.ID && a.Reason == b.Reason &&
		a.Expires.Equal(b.Expires) && slices.Equal(a.Permissions, b.Permissions)
}

// blocksAt returns every block on id, by subject and ID.
func (x *Index) blocksAt(id uint32) []Block {
	var out []Block
	for _, s := range x.blockedOn[id] {
		for _, b := range x.blocks[pairKey(s, id)] {
			out = append(out, b.Block)
		}
	}
	slices.SortFunc(out, func(a, b Block) int {
		if c := strings.Compare(a.Subject, b.Subject); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}
