package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

var writeCorruptible = flag.Bool("write-corruptible", false, "write testdata/corruptible.db anew")

const corruptiblePath = "testdata/corruptible.db"

// validFile is the data file the corruption tests damage, read from
// testdata: bbolt spills buckets in map order, so a file built afresh would
// differ from run to run, and a fuzzer's findings would not replay.
var validFile = sync.OnceValues(func() ([]byte, error) { return os.ReadFile(corruptiblePath) })

// TestCorruptibleFile checks that the file the corruption tests damage is a
// whole data file with every kind of page: branch pages in the grants
// bucket and the change log, a change set spanning several pages, freed
// pages on the free list. With -write-corruptible it writes it first.
func TestCorruptibleFile(t *testing.T) {
	if *writeCorruptible {
		writeCorruptibleFile(t)
	}
	b, err := validFile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(corruptiblePath); err != nil {
		t.Fatal(err)
	}
	m, err := chooseMeta(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[uint16]int{}
	overflow := false
	for id := uint64(2); id < m.pages; id++ {
		p := b[id*uint64(m.pageSize):]
		kinds[binary.LittleEndian.Uint16(p[8:])]++
		overflow = overflow || binary.LittleEndian.Uint32(p[12:]) > 0 && binary.LittleEndian.Uint16(p[8:]) == leafPageFlag
	}
	if kinds[branchPageFlag] < 2 || !overflow || binary.LittleEndian.Uint16(b[m.freelist*uint64(m.pageSize)+10:]) == 0 {
		t.Errorf("%s has pages of kinds %v, a leaf with overflow pages %v, free pages listed %d: want several branch pages, overflow and free pages",
			corruptiblePath, kinds, overflow, binary.LittleEndian.Uint16(b[m.freelist*uint64(m.pageSize)+10:]))
	}
}

func writeCorruptibleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	commit := func(changes ...authz.Change) {
		at = at.Add(time.Second)
		if _, err := s.Commit(context.Background(), []authz.Write{{Set: authz.ChangeSet{Time: at, Caller: "test", Changes: changes}}}); err != nil {
			t.Fatal(err)
		}
	}
	commit(authz.Change{Op: authz.OpPutPermission, Permission: &authz.Permission{Name: "join-call"}},
		authz.Change{Op: authz.OpPutRole, Role: &authz.Role{Name: "host", Scope: "root", Permissions: []string{"join-call"}}})
	var bulk []authz.Change
	for i := range 250 {
		bulk = append(bulk, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:bulk-%d", i), Role: "host", Resource: "root"}})
	}
	commit(bulk...)
	for i := range 100 {
		event := fmt.Sprintf("event:e%d", i)
		changes := []authz.Change{
			{Op: authz.OpPutResource, Resource: &authz.Resource{Name: event, Parent: "root"}},
			{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "host", Resource: event}},
		}
		if i%5 == 0 {
			changes = append(changes, authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: fmt.Sprintf("user:u%d", i), Resource: event, ID: "b", Permissions: []string{"join-call"}, Reason: "test"}})
		}
		if i%3 == 2 {
			changes = append(changes, authz.Change{Op: authz.OpDeleteGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:bulk-%d", i), Role: "host", Resource: "root"}})
		}
		commit(changes...)
	}
	var copy bytes.Buffer
	if _, err := s.Backup(&copy, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(corruptiblePath, copy.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// childPointer is where a branch element keeps the page of a child, and the
// pages above that element.
type childPointer struct {
	at        int // offset of the page id in the file
	ancestors []uint64
}

// childPointers lists every branch element's child pointer in b.
func childPointers(t testing.TB, b []byte) []childPointer {
	m, err := chooseMeta(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	ps := int(m.pageSize)
	le := binary.LittleEndian
	var out []childPointer
	var walk func(id uint64, above []uint64)
	walk = func(id uint64, above []uint64) {
		p := b[int(id)*ps:]
		flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
		path := append(above[:len(above):len(above)], id)
		for i := range count {
			e := p[pageHeaderSize+i*elementSize:]
			switch {
			case flags == branchPageFlag:
				out = append(out, childPointer{at: int(id)*ps + pageHeaderSize + i*elementSize + 8, ancestors: path})
				walk(le.Uint64(e[8:]), path)
			case le.Uint32(e) == bucketLeafFlag:
				v := e[le.Uint32(e[4:])+le.Uint32(e[8:]):]
				if root := le.Uint64(v); root != 0 {
					walk(root, path)
				}
			}
		}
	}
	walk(m.root, nil)
	return out
}

// corrupt returns a damaged copy of the valid file b, and what was done.
func corrupt(r *rand.Rand, b []byte, pointers []childPointer) ([]byte, string) {
	m, _ := chooseMeta(bytes.NewReader(b), int64(len(b)))
	used := int(m.pages) * int(m.pageSize)
	out := bytes.Clone(b)
	flip := func(bit int) { out[bit/8] ^= 1 << (bit % 8) }
	switch n := r.IntN(100); {
	case n < 35:
		bit := r.IntN(used * 8)
		flip(bit)
		return out, fmt.Sprintf("bit %d flipped", bit)
	case n < 50:
		k := 2 + r.IntN(15)
		for range k {
			flip(r.IntN(used * 8))
		}
		return out, fmt.Sprintf("%d bits flipped", k)
	case n < 70:
		// The bytes that say where things are: a page header or the
		// elements after it.
		page := 2 + r.IntN(int(m.pages)-2)
		bit := page*int(m.pageSize)*8 + r.IntN((pageHeaderSize+4*elementSize)*8)
		flip(bit)
		return out, fmt.Sprintf("bit %d flipped, in the head of page %d", bit, page)
	case n < 80:
		// The bits that make a child pointer point back up at an ancestor:
		// an endless descent for bbolt.
		p := pointers[r.IntN(len(pointers))]
		up := p.ancestors[r.IntN(len(p.ancestors))]
		old := binary.LittleEndian.Uint64(out[p.at:])
		binary.LittleEndian.PutUint64(out[p.at:], up)
		return out, fmt.Sprintf("the bits %#x of the child pointer at %d flipped, pointing it at its ancestor page %d", old^up, p.at, up)
	default:
		n := r.IntN(used)
		return out[:n], fmt.Sprintf("cut off after %d of %d bytes", n, len(b))
	}
}

// openAndLoad opens and loads the file at path as usher serve does, and
// says how far it got; it fails the test on a panic, which Open and Load
// must turn into errors. A descent that never ends (bbolt following a
// pointer back up) would eat the machine's memory before a test timeout:
// after a while the watchdog stops the whole test binary, with the stack
// that shows where.
func openAndLoad(t *testing.T, path string) (outcome string, err error) {
	watchdog := time.AfterFunc(20*time.Second, func() {
		panic(fmt.Sprintf("Open and Load of %s still run after 20s", path))
	})
	defer watchdog.Stop()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("%s: panic: %v", path, p)
		}
	}()
	s, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		return "refused by Open", err
	}
	defer s.Close()
	var c authz.Collector
	if _, err := s.Load(context.Background(), &c); err != nil {
		return "refused by Load", err
	}
	return "loaded", nil
}

func TestCorruptedDataFilesAreRefusedNotCrashedOn(t *testing.T) {
	b, err := validFile()
	if err != nil {
		t.Fatal(err)
	}
	pointers := childPointers(t, b)
	if len(pointers) < 5 {
		t.Fatalf("the valid file has %d child pointers: too few branch pages to corrupt", len(pointers))
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(2026, 10))
	outcomes := map[string]int{}
	recovered := 0
	const variants = 300
	for i := range variants {
		damaged, what := corrupt(r, b, pointers)
		path := filepath.Join(dir, fmt.Sprintf("variant-%d.db", i))
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		outcome, err := openAndLoad(t, path)
		outcomes[outcome]++
		// A panic or fault that unpanicked caught: survived, but with
		// the runtime's words rather than the damage named.
		if err != nil && strings.Contains(err.Error(), "corrupt: ") {
			recovered++
			t.Logf("variant %d (%s): %v", i, what, err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("variant %d (%s): the error does not name the file: %v", i, what, err)
		}
		os.Remove(path)
	}
	t.Logf("%d variants: %v; %d caught only as a panic or fault", variants, outcomes, recovered)
	if outcomes["loaded"] == variants {
		t.Error("every damaged variant loaded: the variants do not damage the file")
	}
}

func FuzzOpenCorrupted(f *testing.F) {
	b, err := validFile()
	if err != nil {
		f.Fatal(err)
	}
	pointers := childPointers(f, b)
	// Seeds: the bit flips and cuts the deterministic test makes.
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		damaged, _ := corrupt(r, b, pointers)
		var flips []byte
		for i := range min(len(damaged), len(b)) {
			if d := damaged[i] ^ b[i]; d != 0 {
				flips = binary.LittleEndian.AppendUint32(flips, uint32(i))
				flips = append(flips, d)
			}
		}
		cut := uint32(0)
		if len(damaged) < len(b) {
			cut = uint32(len(damaged))
		}
		f.Add(flips, cut)
	}
	f.Fuzz(func(t *testing.T, flips []byte, cut uint32) {
		damaged := bytes.Clone(b)
		// flips is a list of 5-byte edits: an offset, and the bits to
		// flip in the byte there.
		for ; len(flips) >= 5; flips = flips[5:] {
			damaged[int(binary.LittleEndian.Uint32(flips))%len(damaged)] ^= flips[4]
		}
		if cut != 0 {
			damaged = damaged[:int(cut)%len(damaged)]
		}
		path := filepath.Join(t.TempDir(), "usher.db")
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		openAndLoad(t, path)
	})
}

// The check Open makes reads the file through a memory mapping; it must
// refuse what the check that reads the file with plain reads refuses, for
// the same reason, and accept the rest.
func TestMappedCheckAgreesWithReadCheck(t *testing.T) {
	b, err := validFile()
	if err != nil {
		t.Fatal(err)
	}
	pointers := childPointers(t, b)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(2026, 11))
	refused := 0
	for i := range 300 {
		damaged, what := corrupt(r, b, pointers)
		path := filepath.Join(dir, fmt.Sprintf("variant-%d.db", i))
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		read, mapped := checkPages(f, int64(len(damaged))), checkMapped(f, int64(len(damaged)))
		f.Close()
		if fmt.Sprint(read) != fmt.Sprint(mapped) {
			t.Errorf("variant %d (%s): read check says %v, mapped check %v", i, what, read, mapped)
		}
		if read != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no variant was refused: the variants do not damage the file")
	}
}
