package authz

import (
	"slices"
	"strings"
)

// putBlock stores b, replacing a block with the same subject, resource and
// ID.
func (x *Index) putBlock(b Block) {
	res := x.lookupNode(b.Resource)
	s := x.subj.lookup(b.Subject)
	if s != noName {
		list := x.blocks[pairKey(s, res)]
		if i, found := searchBlock(list, b.ID); found {
			list[i] = x.blockEntry(b)
			return
		}
	}
	s = x.refSubject(b.Subject)
	k := pairKey(s, res)
	list := x.blocks[k]
	i, _ := searchBlock(list, b.ID)
	x.blocks[k] = slices.Insert(list, i, x.blockEntry(b))
	if len(list) == 0 {
		x.subjBlocks[s] = insertSorted(x.subjBlocks[s], res)
		x.blockedOn[res] = insertSorted(x.blockedOn[res], s)
		x.nodes[res].flags |= nodeBlocks
	}
	x.nblocks++
}

// deleteBlock removes the block with b's subject, resource and ID.
func (x *Index) deleteBlock(b Block) {
	res, s := x.lookupNode(b.Resource), x.subj.lookup(b.Subject)
	if res == noNode || s == noName {
		return
	}
	k := pairKey(s, res)
	list := x.blocks[k]
	i, found := searchBlock(list, b.ID)
	if !found {
		return
	}
	list = slices.Delete(list, i, i+1)
	x.nblocks--
	if len(list) > 0 {
		x.blocks[k] = list
	} else {
		delete(x.blocks, k)
		x.subjBlocks[s] = removeSorted(x.subjBlocks[s], res)
		if len(x.subjBlocks[s]) == 0 {
			delete(x.subjBlocks, s)
		}
		x.blockedOn[res] = removeSorted(x.blockedOn[res], s)
		if len(x.blockedOn[res]) == 0 {
			delete(x.blockedOn, res)
			x.nodes[res].flags &^= nodeBlocks
		}
	}
	x.unrefSubject(s)
}

func (x *Index) blockEntry(b Block) *blockEntry {
	e := &blockEntry{Block: b, exp: expiry(b.Expires)}
	e.Permissions = slices.Clone(b.Permissions)
	if len(b.Permissions) > 0 {
		e.perms = x.cat.closure(b.Permissions)
	}
	return e
}

// blocksOn returns s's blocks on res, by ID.
func (x *Index) blocksOn(s, res uint32) []*blockEntry {
	if x.nodes[res].flags&nodeBlocks == 0 {
		return nil
	}
	return x.blocks[pairKey(s, res)]
}

// blockedAlong returns what the live blocks of s on path take away: every
// permission the catalog declares, for a block of everything.
func (x *Index) blockedAlong(s uint32, path []uint32, now int64) bitset {
	out := newBitset(len(x.cat.perms))
	for _, a := range path {
		for _, b := range x.blocksOn(s, a) {
			if !live(b.exp, now) {
				continue
			}
			if b.perms == nil {
				for i := range x.cat.perms {
					out.set(int32(i))
				}
				return out
			}
			out.union(b.perms)
		}
	}
	return out
}

// covers reports whether a live block takes perm away.
func (b *blockEntry) covers(perm int32, now *instant) bool {
	return now.live(b.exp) && (b.perms == nil || b.perms.has(perm))
}

func searchBlock(list []*blockEntry, id string) (int, bool) {
	return slices.BinarySearchFunc(list, id, func(e *blockEntry, id string) int { return strings.Compare(e.ID, id) })
}
