package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt trusts its file: it reads pages through pointers into a memory map,
// and a damaged page sends it into an endless descent (a child pointer to an
// ancestor), a runaway allocation (a free list that claims 2^40 entries), a
// read past the map, or a panic on a goroutine of its own, none of which a
// recover can stop. checkPages reads the file's structure with plain reads
// first, so that bbolt only meets files whose every page is where it should
// be and says what it should say: the meta page bbolt will choose, the free
// list, and every page of every bucket. It does not read values, which the
// record format checks as it decodes them.
//
// It knows bbolt's file format version 2 (bbolt v1.3 and v1.4): a page
// starts with a 16-byte header (id, flags, count, overflow); a meta page
// holds the root bucket, the free list's page, the high-water mark and a
// checksum; branch and leaf elements are 16 bytes, their keys and values
// placed relative to the element; a bucket is a 16-byte header (root page,
// sequence), followed by its page when it is inline (root 0).

const (
	pageHeaderSize   = 16
	elementSize      = 16
	bucketHeaderSize = 16
	metaSize         = 64

	metaMagic   = 0xED0CDAED
	metaVersion = 2
	noFreelist  = ^uint64(0)

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	// maxDepth bounds bucket nesting and tree height together; a bbolt
	// tree of 4 KiB pages that deep would hold more keys than can exist.
	maxDepth = 64
)

// meta is the part of a meta page checkPages uses.
type meta struct {
	pageSize uint32
	root     uint64 // the root bucket's root page
	freelist uint64
	pages    uint64 // the high-water mark: pages in use are below it
	txid     uint64
}

// readMeta decodes and validates the meta page at the start of b, as bbolt's
// Meta.Validate does.
func readMeta(b []byte) (meta, error) {
	if len(b) < pageHeaderSize+metaSize {
		return meta{}, errors.New("too short")
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != metaMagic {
		return meta{}, errors.New("no bbolt magic number")
	}
	if v := le.Uint32(m[4:]); v != metaVersion {
		return meta{}, fmt.Errorf("bbolt file format %d, not %d", v, metaVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return meta{}, errors.New("its checksum does not match")
	}
	return meta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pages:    le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, nil
}

// pageChecker walks one file's pages.
type pageChecker struct {
	r        io.ReaderAt
	mapped   []byte // the file, when it is mapped in memory: read without copying
	pageSize uint64
	pages    uint64
	seen     []bool // by page id: reached from a bucket or the free list
}

// checkPages checks the structure of the bbolt file r, size bytes long,
// as bbolt will read it. The pages in use must lie within size.
func checkPages(r io.ReaderAt, size int64) error { return checkPagesOf(r, nil, size) }

// checkMapped is checkPages of the first size bytes of f, read through a
// memory mapping where there is one: a page is then looked at where it
// lies, rather than copied out of the file with a system call each. A
// mapped file that shrinks meanwhile faults, which is an error here too.
func checkMapped(f *os.File, size int64) error {
	data, unmap, err := mapFile(f, size)
	if err != nil || data == nil {
		return checkPages(f, size)
	}
	defer unmap()
	return unpanicked(func() error { return checkPagesOf(bytes.NewReader(data), data, size) })
}

// checkPagesOf is checkPages, reading pages out of mapped when it is not
// nil.
func checkPagesOf(r io.ReaderAt, mapped []byte, size int64) error {
	m, err := chooseMeta(r, size)
	if err != nil {
		return err
	}
	ps := uint64(m.pageSize)
	if m.pages < 3 || m.pages > uint64(size)/ps {
		if m.pages >= 3 && m.pages <= 1<<50 {
			return fmt.Errorf("the file is cut off: %d bytes, its pages need %d", size, m.pages*ps)
		}
		return fmt.Errorf("the meta page counts %d pages, the file holds %d", m.pages, uint64(size)/ps)
	}
	if m.root < 2 || m.root >= m.pages {
		return fmt.Errorf("the root bucket's page %d is not among the %d pages", m.root, m.pages)
	}
	c := &pageChecker{r: r, mapped: mapped, pageSize: ps, pages: m.pages, seen: make([]bool, m.pages)}
	if err := c.tree(m.root, nil, 0); err != nil {
		return fmt.Errorf("root bucket: %w", err)
	}
	if m.freelist != noFreelist {
		if err := c.freelist(m.freelist); err != nil {
			return fmt.Errorf("free list: %w", err)
		}
	}
	return nil
}

// chooseMeta finds the meta page bbolt will use: it takes the page size from
// the first meta page or, if that is damaged, from the second wherever a page
// size would put it, then uses the valid one of the two with the higher
// transaction id.
func chooseMeta(r io.ReaderAt, size int64) (meta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	read := func(off int64) (meta, error) {
		if _, err := r.ReadAt(buf, off); err != nil {
			return meta{}, fmt.Errorf("unreadable: %w", err)
		}
		return readMeta(buf)
	}
	first, err0 := read(0)
	pageSize := first.pageSize
	if err0 != nil {
		for i := range 15 {
			off := int64(1024) << i
			if off >= size-1024 {
				break
			}
			if m, err := read(off); err == nil {
				pageSize = m.pageSize
				break
			}
		}
	}
	if pageSize < 512 || pageSize > 16<<20 || pageSize&(pageSize-1) != 0 {
		if err0 != nil {
			return meta{}, fmt.Errorf("not a bbolt file: meta page 0: %v, and no valid meta page 1", err0)
		}
		return meta{}, fmt.Errorf("the meta page gives a page size of %d bytes", pageSize)
	}
	if int64(pageSize)*2 > size {
		return meta{}, fmt.Errorf("the file is cut off: %d bytes, less than its two meta pages", size)
	}
	if err0 == nil && first.pageSize != pageSize {
		err0 = fmt.Errorf("a page size of %d bytes, meta page 1 says %d", first.pageSize, pageSize)
	}
	m0 := first
	m1, err1 := read(int64(pageSize))
	if err1 == nil && m1.pageSize != pageSize {
		err1 = fmt.Errorf("a page size of %d bytes, not %d", m1.pageSize, pageSize)
	}
	switch {
	case err0 != nil && err1 != nil:
		return meta{}, fmt.Errorf("both meta pages are damaged: %v; %v", err0, err1)
	case err0 != nil:
		return m1, nil
	case err1 != nil:
		return m0, nil
	case m1.txid > m0.txid:
		return m1, nil
	default:
		return m0, nil
	}
}

// page reads page id and its overflow, marking them reached.
func (c *pageChecker) page(id uint64) (flags, count uint16, b []byte, err error) {
	if id < 2 || id >= c.pages {
		return 0, 0, nil, fmt.Errorf("page %d is not among the %d pages", id, c.pages)
	}
	head, err := c.read(id, pageHeaderSize)
	if err != nil {
		return 0, 0, nil, err
	}
	le := binary.LittleEndian
	if got := le.Uint64(head); got != id {
		return 0, 0, nil, fmt.Errorf("page %d says it is page %d", id, got)
	}
	flags, count = le.Uint16(head[8:]), le.Uint16(head[10:])
	overflow := uint64(le.Uint32(head[12:]))
	if id+overflow >= c.pages {
		return 0, 0, nil, fmt.Errorf("page %d runs %d pages past the last", id, id+overflow-c.pages+1)
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p] {
			return 0, 0, nil, fmt.Errorf("page %d is reached twice: from two places, or in a loop", p)
		}
		c.seen[p] = true
	}
	if b, err = c.read(id, (overflow+1)*c.pageSize); err != nil {
		return 0, 0, nil, err
	}
	return flags, count, b, nil
}

// read returns n bytes from the start of page id, which with its overflow
// lies within the pages in use.
func (c *pageChecker) read(id, n uint64) ([]byte, error) {
	off := id * c.pageSize
	if c.mapped != nil {
		return c.mapped[off : off+n : off+n], nil
	}
	b := make([]byte, n)
	if _, err := c.r.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return b, nil
}

// tree checks the bucket tree rooted at page id. last is the greatest key
// seen so far in the bucket, for the order of keys across its pages.
func (c *pageChecker) tree(id uint64, last *[]byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d is more than %d levels deep", id, maxDepth)
	}
	if last == nil {
		last = new([]byte)
	}
	flags, count, b, err := c.page(id)
	if err != nil {
		return err
	}
	switch flags {
	case leafPageFlag:
		if err := c.leaf(b, count, last, depth); err != nil {
			return fmt.Errorf("leaf page %d: %w", id, err)
		}
		return nil
	case branchPageFlag:
	default:
		return fmt.Errorf("page %d has flags %#x, not a branch or a leaf", id, flags)
	}
	if count == 0 {
		return fmt.Errorf("branch page %d is empty", id)
	}
	if pageHeaderSize+int(count)*elementSize > len(b) {
		return fmt.Errorf("branch page %d: %d elements do not fit in it", id, count)
	}
	var prev []byte
	for i := range int(count) {
		at := pageHeaderSize + i*elementSize
		e := b[at : at+elementSize]
		le := binary.LittleEndian
		key, err := span(b, at, le.Uint32(e), le.Uint32(e[4:]), 0)
		if err != nil {
			return fmt.Errorf("branch page %d, element %d: key %w", id, i, err)
		}
		if i > 0 && bytes.Compare(prev, key) >= 0 {
			return fmt.Errorf("branch page %d: key %d is out of order", id, i)
		}
		prev = key
		if err := c.tree(le.Uint64(e[8:]), last, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks the elements of a leaf page, b from its header on, and the
// buckets nested in it.
func (c *pageChecker) leaf(b []byte, count uint16, last *[]byte, depth int) error {
	if pageHeaderSize+int(count)*elementSize > len(b) {
		return fmt.Errorf("%d elements do not fit in %d bytes", count, len(b))
	}
	le := binary.LittleEndian
	for i := range int(count) {
		at := pageHeaderSize + i*elementSize
		e := b[at : at+elementSize]
		flags, pos, ksize, vsize := le.Uint32(e), le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		key, err := span(b, at, pos, ksize, 0)
		if err != nil {
			return fmt.Errorf("element %d: key %w", i, err)
		}
		value, err := span(b, at, pos, vsize, ksize)
		if err != nil {
			return fmt.Errorf("element %d: value %w", i, err)
		}
		if *last != nil && bytes.Compare(*last, key) >= 0 {
			return fmt.Errorf("element %d: its key is out of order", i)
		}
		*last = key
		switch flags {
		case 0:
		case bucketLeafFlag:
			if err := c.bucket(value, depth+1); err != nil {
				return fmt.Errorf("bucket %q: %w", key, err)
			}
		default:
			return fmt.Errorf("element %d has flags %#x", i, flags)
		}
	}
	return nil
}

// bucket checks a nested bucket from its header.
func (c *pageChecker) bucket(v []byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested more than %d deep", maxDepth)
	}
	if len(v) < bucketHeaderSize {
		return fmt.Errorf("its header is %d bytes", len(v))
	}
	if root := binary.LittleEndian.Uint64(v); root != 0 {
		return c.tree(root, nil, depth)
	}
	// An inline bucket: its one leaf page follows the header.
	page := v[bucketHeaderSize:]
	if len(page) < pageHeaderSize {
		return fmt.Errorf("its inline page is %d bytes", len(page))
	}
	if flags := binary.LittleEndian.Uint16(page[8:]); flags != leafPageFlag {
		return fmt.Errorf("its inline page has flags %#x, not a leaf", flags)
	}
	if err := c.leaf(page, binary.LittleEndian.Uint16(page[10:]), new([]byte), depth); err != nil {
		return fmt.Errorf("inline page: %w", err)
	}
	return nil
}

// span returns the n bytes that start skip bytes after pos bytes past the
// element at offset at of b, or an error if they are not all within b.
func span(b []byte, at int, pos, n, skip uint32) ([]byte, error) {
	start := uint64(at) + uint64(pos) + uint64(skip)
	end := start + uint64(n)
	if end > uint64(len(b)) {
		return nil, fmt.Errorf("at %d..%d runs past its page's %d bytes", start, end, len(b))
	}
	return b[start:end], nil
}

// freelist checks the free list's page: every free page exists, is not a
// meta page, is listed once, and is reached from no bucket.
func (c *pageChecker) freelist(id uint64) error {
	flags, count, b, err := c.page(id)
	if err != nil {
		return err
	}
	if flags != freelistPageFlag {
		return fmt.Errorf("page %d has flags %#x, not a free list", id, flags)
	}
	le := binary.LittleEndian
	room := uint64(len(b)-pageHeaderSize) / 8
	first, n := uint64(0), uint64(count)
	if count == 0xFFFF {
		// A longer list keeps its length in its first element.
		first, n = 1, le.Uint64(b[pageHeaderSize:])
	}
	if n > room-first {
		return fmt.Errorf("page %d lists %d pages, it has room for %d", id, n, room-first)
	}
	free := make(map[uint64]bool, n)
	for i := first; i < first+n; i++ {
		p := le.Uint64(b[pageHeaderSize+8*i:])
		switch {
		case p < 2 || p >= c.pages:
			return fmt.Errorf("page %d is not among the %d pages", p, c.pages)
		case free[p]:
			return fmt.Errorf("page %d is listed twice", p)
		case c.seen[p]:
			return fmt.Errorf("page %d is free and in use", p)
		}
		free[p] = true
	}
	return nil
}
