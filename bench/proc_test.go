package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseProcFiles(t *testing.T) {
	// A command name may hold spaces and parentheses.
	stat := []byte("4242 (usher (x) y) S 1 4242 4242 0 -1 4194560 2466 0 0 0 1234 567 0 0 20 0 9 0 100 1000000 3000 18446744073709551615\n")
	if got, err := parseStatCPU(stat); err != nil || got != 18010*time.Millisecond {
		t.Errorf("CPU of utime 1234 and stime 567 ticks = %s, %v; want 18.01s", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (usher) S 1 2")); err == nil {
		t.Error("a short stat line parsed")
	}
	status := []byte("Name:\tusher\nVmPeak:\t  900 kB\nVmRSS:\t  307200 kB\nThreads:\t9\n")
	if got, err := parseStatusRSS(status); err != nil || got != 300<<20 {
		t.Errorf("VmRSS 307200 kB = %d, %v; want 300 MiB", got, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("a status without VmRSS parsed")
	}
	if got, err := parseLoadAverage([]byte("1.50 0.75 0.25 3/120 4242\n")); err != nil || got != (LoadAverage{1.5, 0.75, 0.25}) {
		t.Errorf("loadavg = %v, %v", got, err)
	}
	if _, err := parseLoadAverage([]byte("1.50 x 0.25 3/120 4242\n")); err == nil {
		t.Error("a malformed loadavg parsed")
	}
}

// This process's own figures are readable where /proc is.
func TestReadThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	if rss, err := ProcessRSS(os.Getpid()); err != nil || rss < 1<<20 {
		t.Errorf("RSS = %d, %v", rss, err)
	}
	if _, err := ProcessCPU(os.Getpid()); err != nil {
		t.Error(err)
	}
	if _, err := ReadLoadAverage(); err != nil {
		t.Error(err)
	}
}
