package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Block denies b.Subject the listed permissions (all when none are listed),
// with everything they imply, on b.Resource and below, replacing an earlier
// block of the subject there.
func (e *Engine) Block(ctx context.Context, by Author, b Block) (Revision, error) {
	asked := b.Permissions // errors index the request's list, not the sorted one
	b.Permissions = sortedSet(b.Permissions)
	return e.write(ctx, by, func(now time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("resource", b.Resource)
		if err != nil {
			return nil, err
		}
		if err := x.requirePermission(by, n, PermBlocksWrite, "blocking a subject on it"); err != nil {
			return nil, err
		}
		if i := x.cat.undeclared(asked, false); i >= 0 {
			return nil, errorf(Invalid, fmt.Sprintf("permissions[%d]", i), asked[i], "permission is not declared in the catalog")
		}
		if err := checkExpiry(b.Expires, now); err != nil {
			return nil, err
		}
		b.Expires = b.Expires.UTC()
		if old := n.blocks[b.Subject]; old != nil && sameBlock(old.Block, b) {
			return nil, nil
		}
		return []Change{{Op: OpPutBlock, Block: &b}}, nil
	})
}

// Unblock removes the block of subject on resource; NotFound when there is
// none.
func (e *Engine) Unblock(ctx context.Context, by Author, subject, resource string) (Revision, error) {
	return e.write(ctx, by, func(time.Time) ([]Change, error) {
		n, err := e.idx.registered("resource", resource)
		if err != nil {
			return nil, err
		}
		if err := e.idx.requirePermission(by, n, PermBlocksWrite, "unblocking a subject on it"); err != nil {
			return nil, err
		}
		if n.blocks[subject] == nil {
			return nil, errorf(NotFound, "subject", subject, "subject is not blocked on %q", resource)
		}
		return []Change{{Op: OpDeleteBlock, Block: &Block{Subject: subject, Resource: resource}}}, nil
	})
}

func sameBlock(a, b Block) bool {
	return a.Subject == b.Subject && a.Resource == b.Resource && a.Reason == b.Reason &&
		a.Expires.Equal(b.Expires) && slices.Equal(a.Permissions, b.Permissions)
}

// sortedBlocks returns the blocks on n by subject.
func sortedBlocks(n *node) []Block {
	out := make([]Block, 0, len(n.blocks))
	for _, b := range n.blocks {
		out = append(out, b.Block)
	}
	slices.SortFunc(out, func(a, b Block) int { return strings.Compare(a.Subject, b.Subject) })
	return out
}
