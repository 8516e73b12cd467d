package authz

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestCollapseBacksMemoryWithHugePages asks for huge pages under 8 MiB of
// memory mapped apart from Go's heap, where nothing else asks, and reads
// what the kernel reports of that mapping.
func TestCollapseBacksMemoryWithHugePages(t *testing.T) {
	const n = 8 << 20
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i * 7)
	}
	if got := anonHugeKiB(t, mem); got != 0 {
		t.Fatalf("before: %d KiB in huge pages", got)
	}
	collapse(hugeArray{unsafe.Pointer(&mem[0]), n})
	for i := range mem {
		if mem[i] != byte(i*7) {
			t.Fatalf("byte %d changed: %d, want %d", i, mem[i], byte(i*7))
		}
	}
	got := anonHugeKiB(t, mem)
	mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if strings.Contains(string(mode), "[never]") || len(mode) == 0 {
		t.Logf("transparent huge pages are off here (%q): %d KiB in huge pages", mode, got)
		return
	}
	// The mapping may start off a huge page's boundary: three of the four
	// huge pages it spans lie wholly inside it.
	if got < 3*hugePage>>10 {
		t.Errorf("after: %d KiB of 8,192 in huge pages, want at least %d (transparent huge pages: %q)", got, 3*hugePage>>10, mode)
	}
}

// anonHugeKiB is what /proc/self/smaps says of the mapping that holds mem.
func anonHugeKiB(t *testing.T, mem []byte) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr := uintptr(unsafe.Pointer(&mem[0]))
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err == nil && strings.Contains(line, " ") && !strings.HasSuffix(strings.Fields(line)[0], ":") {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "AnonHugePages:") {
			var kib int
			fmt.Sscanf(strings.TrimPrefix(line, "AnonHugePages:"), "%d", &kib)
			return kib
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping of %#x in /proc/self/smaps", addr)
	return 0
}
