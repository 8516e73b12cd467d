//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/bolt"
)

// slowProxy forwards connections to target, the server's answers at about
// rate bytes a second, and counts the bytes it has forwarded that way.
func slowProxy(t *testing.T, target string, rate int) (addr string, forwarded *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	forwarded = &atomic.Int64{}
	go func() {
		for {
			client, err := lis.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			go func() {
				io.Copy(server, client)
				server.Close()
			}()
			go func() {
				defer client.Close()
				buf := make([]byte, rate/16)
				for {
					n, err := server.Read(buf)
					if n > 0 {
						if _, err := client.Write(buf[:n]); err != nil {
							return
						}
						forwarded.Add(int64(n))
						time.Sleep(time.Second * time.Duration(n) / time.Duration(rate))
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return lis.Addr().String(), forwarded
}

// openIn lists the files process pid has open in dir, as /proc shows them:
// a file without a name shows as "#inode (deleted)".
func openIn(pid int, dir string) []string {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(link, dir+"/") {
			out = append(out, strings.TrimPrefix(link, dir+"/"))
		}
	}
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// A usher backup killed with SIGKILL halfway through its stream leaves the
// backup it would have replaced as it was and no file of its own, not even
// a temporary one: the copy it was writing had no name.
func TestAKilledBackupLeavesNothingBehind(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "data", "usher.db")
	store, err := bolt.Open(data, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		cs := authz.ChangeSet{Caller: "test"}
		for j := range 500 {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d-%d", i, j), Role: "user", Resource: "root"}})
		}
		if _, err := store.Commit(context.Background(), []authz.Write{{Set: cs}}); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()
	server := serveOn(t, bin, data)

	backups := filepath.Join(dir, "backups")
	os.MkdirAll(backups, 0o750)
	file := filepath.Join(backups, "usher.backup")
	if out, err := exec.Command(bin, "backup", "--addr", server.addr, file).CombinedOutput(); err != nil {
		t.Fatalf("usher backup: %v\n%s", err, out)
	}
	earlier, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	const rate = 256 << 10
	proxy, forwarded := slowProxy(t, server.addr, rate)
	cmd := exec.Command(bin, "backup", "--addr", proxy, "--timeout", "1m", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	// Halfway through the stream: more than the first chunks in, far from
	// the end.
	deadline := time.Now().Add(30 * time.Second)
	for forwarded.Load() < int64(len(earlier)/3) {
		select {
		case <-exited:
			t.Fatalf("usher backup ended (%v) before it was killed:\n%s", waitErr, &out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy forwarded only %d bytes in 30s", forwarded.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	open := openIn(cmd.Process.Pid, backups)
	names := dirNames(t, backups)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	t.Logf("killed after %d of %d bytes; it had open in the backup directory %v, which then held %v", forwarded.Load(), len(earlier), open, names)
	if len(open) == 0 {
		t.Errorf("usher backup had no file open in %s when it was killed: it was not writing the copy there", backups)
	}
	if got := dirNames(t, backups); !slices.Equal(got, []string{"usher.backup"}) {
		t.Errorf("after the kill %s holds %v, want only usher.backup", backups, got)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, earlier) {
		t.Error("the killed backup changed the earlier backup it would have replaced")
	}
	if got := dirNames(t, filepath.Dir(data)); !slices.Equal(got, []string{"usher.db"}) {
		t.Errorf("the server's data directory holds %v, want only usher.db", got)
	}

	// The next backup runs as if nothing had happened.
	if out, err := exec.Command(bin, "backup", "--addr", server.addr, file).CombinedOutput(); err != nil {
		t.Fatalf("usher backup after the kill: %v\n%s", err, out)
	}
	if _, err := bolt.VerifyBackup(file); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, backups); !slices.Equal(got, []string{"usher.backup"}) {
		t.Errorf("after another backup %s holds %v, want only usher.backup", backups, got)
	}
}
