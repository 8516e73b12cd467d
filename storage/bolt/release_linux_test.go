package bolt_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// mappedKiB is how much of the file at path this process's maps hold
// resident, in KiB, from /proc/self/smaps.
func mappedKiB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = fields[len(fields)-1] == path // a map's first line ends with its file
		case in && len(fields) == 3 && fields[0] == "Rss:":
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}

// A load reads every page of the file through bbolt's map; once the index
// holds what they say, the pages leave the process's resident memory: a
// server's RSS is its index, not its index and its file.
func TestLoadHandsBackTheFilesPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	store := openStore(t, path)
	snap := authz.Snapshot{
		Revision:    1,
		Permissions: []authz.Permission{{Name: "rooms.join"}},
		Resources:   []authz.Resource{{Name: "account:acme", Parent: "root"}},
		Roles:       []authz.Role{{Name: "guest", Scope: "root", Permissions: []string{"rooms.join"}}},
	}
	for i := range 40_000 {
		snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:u%06d", i), Role: "guest", Resource: "account:acme"})
	}
	if _, err := store.Import(snap, "test"); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	store = openStore(t, path)
	defer store.Close()
	b := authz.NewBuilder(authz.SystemClock{})
	rev, err := store.Load(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(rev); err != nil {
		t.Fatal(err)
	}
	// A page or two may be read again meanwhile (a revision, a meta page);
	// the file is over 1 MiB.
	if kib, file := mappedKiB(t, path), info.Size()>>10; file < 1024 || kib > 64 {
		t.Errorf("after the load, %d KiB of the %d KiB file stay resident in the map; want at most 64", kib, file)
	}
}
