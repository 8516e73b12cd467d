package authz

import (
	"bufio"
	"errors"
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
	// A mapping a huge page larger, of which mem is the part that starts on
	// a huge page's boundary: the huge pages collapse asks for lie in it.
	mapped, err := unix.Mmap(-1, 0, n+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mapped)
	skip := -int(uintptr(unsafe.Pointer(&mapped[0]))) & (hugePage - 1)
	mem := mapped[skip : skip+n]
	for i := range mem {
		mem[i] = byte(i * 7)
	}
	mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	// Where huge pages are given only where asked, nothing has been asked.
	if got := anonHugeKiB(t, mem); got != 0 && strings.Contains(string(mode), "[madvise]") {
		t.Fatalf("before: %d KiB in huge pages", got)
	}
	err = collapse(hugeArray{unsafe.Pointer(&mem[0]), n})
	for i := range mem {
		if mem[i] != byte(i*7) {
			t.Fatalf("byte %d changed: %d, want %d", i, mem[i], byte(i*7))
		}
	}
	got := anonHugeKiB(t, mem)
	switch {
	case strings.Contains(string(mode), "[never]") || len(mode) == 0:
		t.Logf("transparent huge pages are off here (%q): %v, %d KiB in huge pages", mode, err, got)
		return
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOMEM):
		t.Logf("the kernel had no huge page free: %v, %d KiB in huge pages", err, got)
		return
	case errors.Is(err, unix.EINVAL) && !kernelAtLeast(t, 6, 1):
		t.Logf("the kernel has no MADV_COLLAPSE before Linux 6.1: %v", err)
		return
	case err != nil:
		t.Fatalf("collapse: %v (transparent huge pages: %q)", err, mode)
	}
	if got < n>>10 {
		t.Errorf("after: %d KiB of %d in huge pages (transparent huge pages: %q)", got, n>>10, mode)
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

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var gotMajor, gotMinor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &gotMajor, &gotMinor); err != nil {
		t.Fatalf("kernel release %q: %v", unix.ByteSliceToString(u.Release[:]), err)
	}
	return gotMajor > major || gotMajor == major && gotMinor >= minor
}
