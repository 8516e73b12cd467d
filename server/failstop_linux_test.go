package server_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// unwritable makes the process's descriptor of the file at path refuse
// writes, as a disk that fails them does, until the returned function
// gives the descriptor back its file. The descriptor is found by its path
// in /proc/self/fd, and must be the only one.
func unwritable(t *testing.T, path string) (restore func()) {
	t.Helper()
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			if fd >= 0 {
				t.Fatalf("%s is open on descriptors %d and %s", path, fd, e.Name())
			}
			fd, _ = strconv.Atoi(e.Name())
		}
	}
	if fd < 0 {
		t.Fatalf("%s is not open", path)
	}
	saved, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The file stays open, and locked, through saved.
	err = unix.Dup3(readOnly, fd, unix.O_CLOEXEC)
	unix.Close(readOnly)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
				t.Error(err)
			}
			unix.Close(saved)
		})
	}
	t.Cleanup(restore)
	return restore
}

// healthOf is the health f reports of service.
func healthOf(t *testing.T, f *fixture, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health of %q: %v", service, err)
	}
	return resp.GetStatus()
}

// A commit that fails may leave bbolt building on a state that is not
// durable, so the server refuses every write after it, UNAVAILABLE and
// saying to restart, while checks go on being answered; AdminService's
// health turns NOT_SERVING, and the server says so once at ERROR.
// Restarted on the same file, it holds exactly what it acknowledged.
func TestAFailedCommitRefusesWritesUntilRestart(t *testing.T) {
	var logs logBuffer
	f := startServerWith(t, t.TempDir(), logs.logger(), nil)
	ctx := f.ctx()
	check := f.aliceHostsAcme(t)
	acknowledged := f.revision()

	restore := unwritable(t, filepath.Join(f.dir, "usher.db"))
	_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: "account:acme"})
	restore()
	st := wantCode(t, err, codes.Unavailable)
	wantDetails(t, st, refusal{reason: "UNAVAILABLE_STORAGE"})
	if msg := st.Message(); !strings.Contains(msg, "the write was not committed") || !strings.Contains(msg, "restart the server") {
		t.Errorf("the failed write says %q; want it to say it was not committed, and to restart the server", msg)
	}

	// The disk takes writes again; the server does not.
	_, err = f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:carol", Role: "host", Resource: "account:acme"})
	st = wantCode(t, err, codes.Unavailable)
	wantDetails(t, st, refusal{reason: "UNAVAILABLE_STORAGE"})
	if !strings.Contains(st.Message(), "the data file must be reopened: restart the server") {
		t.Errorf("the refused write says %q; want it to say to restart the server", st.Message())
	}
	_, err = f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "account:other"})
	if st := wantCode(t, err, codes.Unavailable); !strings.Contains(st.Message(), "restart the server") {
		t.Errorf("the refused PutResource says %q; want it to say to restart the server", st.Message())
	}

	resp, err := f.authz.Check(ctx, check)
	if err != nil || !resp.GetDecision().GetAllowed() || resp.GetRevision() != acknowledged {
		t.Fatalf("Check after the failure = %v, %v; want allowed at revision %d", resp, err, acknowledged)
	}
	for _, subject := range []string{"user:bob", "user:carol"} {
		if d, _ := f.check(subject, "join-call", "account:acme"); d.GetAllowed() {
			t.Errorf("%s may join calls at account:acme after the failure: %v", subject, d)
		}
	}

	admin := usherv1.AdminService_ServiceDesc.ServiceName
	for deadline := time.Now().Add(5 * time.Second); healthOf(t, f, admin) != healthpb.HealthCheckResponse_NOT_SERVING; {
		if time.Now().After(deadline) {
			t.Fatalf("%s is still %s while writes are refused", admin, healthOf(t, f, admin))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, service := range []string{"", usherv1.AuthorizationService_ServiceDesc.ServiceName} {
		if got := healthOf(t, f, service); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %s while writes are refused, want SERVING: checks are answered", service, got)
		}
	}
	const line = `level=ERROR msg="writes are refused until the data file is reopened: restart the server"`
	if n := strings.Count(logs.String(), line); n != 1 {
		t.Errorf("the log says %d times %s, want once:\n%s", n, line, logs.String())
	}

	g := f.restart()
	if got := healthOf(t, g, admin); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("restarted, %s is %s, want SERVING", admin, got)
	}
	if rev := g.revision(); rev != acknowledged {
		t.Errorf("restarted at revision %d, want the acknowledged %d", rev, acknowledged)
	}
	if d, _ := g.check("user:alice", "join-call", "account:acme"); !d.GetAllowed() {
		t.Errorf("restarted, alice's acknowledged grant is gone: %v", d)
	}
	for _, subject := range []string{"user:bob", "user:carol"} {
		if d, _ := g.check(subject, "join-call", "account:acme"); d.GetAllowed() {
			t.Errorf("restarted, %s may join calls at account:acme: %v", subject, d)
		}
	}
	if d, _ := g.check("user:alice", "join-call", "account:other"); d.GetReason() != usherv1.Reason_REASON_UNKNOWN_RESOURCE {
		t.Errorf("restarted, the refused account:other is there: %v", d)
	}
	if rev := g.grant("user:carol", "host", "account:acme"); rev != acknowledged+1 {
		t.Errorf("the first write after the restart is at revision %d, want %d", rev, acknowledged+1)
	}
}
