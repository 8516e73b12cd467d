//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// A test binary started with these variables set does not run tests: it
// limits the size of files it may write (RLIMIT_FSIZE, inherited across
// exec) and becomes the usher binary, so that the server meets a full disk
// on a file of its own, without a mount. Go ignores SIGXFSZ, so a write past
// the limit fails with EFBIG as a write to a full disk fails with ENOSPC.
const (
	envFileSizeLimit = "USHER_TEST_FILE_SIZE_LIMIT"
	envExec          = "USHER_TEST_EXEC"
)

func init() {
	limit, bin := os.Getenv(envFileSizeLimit), os.Getenv(envExec)
	if limit == "" || bin == "" {
		return
	}
	n, err := strconv.ParseUint(limit, 10, 64)
	if err == nil {
		var rl syscall.Rlimit
		setTo(&rl.Cur, n)
		setTo(&rl.Max, n)
		err = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl)
	}
	if err == nil {
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, envFileSizeLimit+"=") && !strings.HasPrefix(kv, envExec+"=") {
				env = append(env, kv)
			}
		}
		err = syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	}
	fmt.Fprintf(os.Stderr, "limiting the file size to %s and running %s: %v\n", limit, bin, err)
	os.Exit(2)
}

// setTo sets a limit's field to n, whichever integer type the system gives
// it (int64 on FreeBSD, uint64 on Linux).
func setTo[T int64 | uint64](field *T, n uint64) { *field = T(n) }

// serveLimited starts `usher serve` unable to write files beyond limit bytes.
func serveLimited(t *testing.T, bin, data string, limit int64) *usherProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", data)
	cmd.Env = append(os.Environ(), envFileSizeLimit+"="+strconv.FormatInt(limit, 10), envExec+"="+bin)
	return startUsher(t, cmd)
}

// lockFree says whether the data file can be opened, and so locked, at once.
func lockFree(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("the data file cannot be opened after the server stopped: %v", err)
	}
	db.Close()
}

// handling waits until the process has begun handling a call of method, as
// its metrics (--metrics-addr) count them in grpc_server_started_total.
func (p *usherProcess) handling(t *testing.T, method string) {
	t.Helper()
	if p.metrics == "" {
		t.Fatal("the server serves no metrics: start it with --metrics-addr")
	}
	started := func() float64 {
		var n float64
		for _, m := range scrape(t, p.metrics)["grpc_server_started_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == method {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); started() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server began no %s within 10s", method)
		}
	}
}

// slowCheck asks a check at a revision the server will not reach, which
// waits in the server until ctx's deadline nears or 5s pass.
func slowCheck(ctx context.Context, conn *grpc.ClientConn, rev uint64) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := usherv1.NewAuthorizationServiceClient(conn).Check(ctx, &usherv1.CheckRequest{
			Subject: "user:dana", Permission: "join-call", Resource: "root", MinRevision: rev + 1000})
		done <- err
	}()
	return done
}

func TestSIGTERM(t *testing.T) {
	bin, dir := buildUsher(t)

	t.Run("stops accepting at once, cuts calls at the drain bound, closes the file and exits 0", func(t *testing.T) {
		const drain = time.Second
		// The in-flight call waits in the server for at most 5 s, and must
		// still be waiting at the drain bound. On a machine too busy for
		// that (the call took 2 s or more to begin), the server is stopped
		// and the case begins again, at most three times.
		var (
			data     string
			p        *usherProcess
			inflight <-chan error
		)
		for attempt := 1; ; attempt++ {
			data = filepath.Join(dir, fmt.Sprintf("cut%d.db", attempt))
			p = serveOn(t, bin, data, "--drain", drain.String(), "--metrics-addr", "127.0.0.1:0")
			began := time.Now()
			inflight = slowCheck(context.Background(), p.dial(t), p.revision)
			p.handling(t, "Check")
			took := time.Since(began)
			if took < 2*time.Second || attempt == 3 {
				break
			}
			t.Logf("the call took %s to begin; starting again", took)
			p.stop(t, 10*time.Second)
			<-inflight
		}

		sent := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// A new connection is refused while the in-flight call still waits.
		for {
			c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
			if err != nil {
				break
			}
			c.Close()
			if time.Since(sent) > drain/2 {
				t.Fatalf("still accepting connections %s after SIGTERM", time.Since(sent))
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case err := <-inflight:
			t.Fatalf("the in-flight call ended (%v) before the drain bound", err)
		case <-p.exited:
			t.Fatalf("exited before the drain bound, %s after SIGTERM", time.Since(sent))
		default:
		}

		select {
		case <-p.exited:
		case <-time.After(drain + 3*time.Second):
			t.Fatalf("still running %s after SIGTERM with --drain %s", time.Since(sent), drain)
		}
		took := time.Since(sent)
		if p.waitErr != nil {
			t.Errorf("exited with %v, want 0; stderr:\n%s", p.waitErr, p.stderr)
		}
		if took < drain-100*time.Millisecond {
			t.Errorf("exited %s after SIGTERM, before the drain bound %s", took, drain)
		}
		if err := <-inflight; status.Code(err) != codes.Unavailable {
			t.Errorf("the call cut at the drain bound ended with %v, want UNAVAILABLE", err)
		}
		for _, want := range []string{"calls still running after the drain bound were cancelled", "msg=stopped"} {
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, p.stderr)
			}
		}
		lockFree(t, data)
		checkFile(t, data)
	})

	t.Run("lets a call finish within the drain bound and exits as soon as it has", func(t *testing.T) {
		data := filepath.Join(dir, "drained.db")
		const drain = 30 * time.Second
		p := serveOn(t, bin, data, "--drain", drain.String(), "--metrics-addr", "127.0.0.1:0")
		// The server stops waiting for the revision after 5 s, well before
		// the deadline, and answers FAILED_PRECONDITION: a call that
		// finishes.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		inflight := slowCheck(ctx, p.dial(t), p.revision)
		p.handling(t, "Check")
		err, took := p.stop(t, drain)
		if err != nil {
			t.Errorf("exited with %v, want 0; stderr:\n%s", err, p.stderr)
		}
		if took > drain/3 {
			t.Errorf("exited %s after SIGTERM: it did not stop once the last call finished", took)
		}
		if err := <-inflight; status.Code(err) != codes.FailedPrecondition {
			t.Errorf("the in-flight call ended with %v, want its own answer, FAILED_PRECONDITION", err)
		}
		if strings.Contains(p.stderr.String(), "cancelled") {
			t.Errorf("calls were cancelled though they finished within the drain bound:\n%s", p.stderr)
		}
		lockFree(t, data)
		checkFile(t, data)
	})
	t.Run("a second signal cancels the calls still running at once", func(t *testing.T) {
		data := filepath.Join(dir, "twice.db")
		const drain = time.Minute
		p := serveOn(t, bin, data, "--drain", drain.String(), "--metrics-addr", "127.0.0.1:0")
		inflight := slowCheck(context.Background(), p.dial(t), p.revision)
		p.handling(t, "Check")
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.logged(t, "shutting down")
		err, _ := p.stop(t, drain/2)
		if err != nil {
			t.Errorf("exited with %v, want 0; stderr:\n%s", err, p.stderr)
		}
		if err := <-inflight; status.Code(err) != codes.Unavailable {
			t.Errorf("the call cut by the second signal ended with %v, want UNAVAILABLE", err)
		}
		for _, want := range []string{"calls still running were cancelled on a second signal", "msg=stopped"} {
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, p.stderr)
			}
		}
		lockFree(t, data)
		checkFile(t, data)
	})
}

// logged waits until the process has written want to its stderr, failing
// the test if it exits first.
func (p *usherProcess) logged(t *testing.T, want string) {
	t.Helper()
	for !strings.Contains(p.stderr.String(), want) {
		select {
		case <-p.exited:
			t.Fatalf("usher serve exited (%v) before logging %q; stderr:\n%s", p.waitErr, want, p.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestSIGHUPReadsTheCallersFileAgain(t *testing.T) {
	bin, dir := buildUsher(t)
	token, hash := tokenOf(t, bin)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: backend, kind: admin, token_sha256: "+hash+"}\n"))
	p := serveOn(t, bin, filepath.Join(dir, "usher.db"), "--callers", callers)
	conn := p.dial(t)
	check := func() error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
		_, err := usherv1.NewAuthorizationServiceClient(conn).Check(ctx, &usherv1.CheckRequest{
			Subject: "user:dana", Permission: "join-call", Resource: "root"})
		return err
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.logged(t, "callers file reloaded")
	if err := check(); err != nil {
		t.Fatalf("a check after SIGHUP: %v", err)
	}

	// A broken file is logged, and the callers in force stay.
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: backend, kind: root, token_sha256: "+hash+"}\n"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.logged(t, "callers file not reloaded; the previous callers stay in force")
	if !strings.Contains(p.stderr.String(), `callers[0].kind \"root\"`) {
		t.Errorf("the log does not say what is wrong with the file:\n%s", p.stderr)
	}
	if err := check(); err != nil {
		t.Fatalf("a check after SIGHUP with a broken callers file: %v", err)
	}
	if err, _ := p.stop(t, 10*time.Second); err != nil {
		t.Errorf("exited with %v, want 0; stderr:\n%s", err, p.stderr)
	}
}

func TestASecondServerOnTheSameFileFailsFast(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	first := serveOn(t, bin, data)

	start := time.Now()
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", data)
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("a second server on %s started; output:\n%s", data, out)
	}
	if took > 5*time.Second {
		t.Errorf("the second server took %s to give up", took)
	}
	if want := "usher serve: storage: open " + data + ": another process is using it"; !strings.Contains(string(out), want) {
		t.Errorf("the second server's output does not say %q:\n%s", want, out)
	}
	if strings.Contains(string(out), "serving gRPC") {
		t.Errorf("the second server said it serves:\n%s", out)
	}
	if _, err := usherv1.NewAuthorizationServiceClient(first.dial(t)).Check(t.Context(),
		&usherv1.CheckRequest{Subject: "user:dana", Permission: "join-call", Resource: "root"}); err != nil {
		t.Errorf("the first server no longer answers: %v", err)
	}
}

// TestAFullDiskFailsWritesNotChecks runs the real binary on a file it may
// not grow: writes that need more room fail with UNAVAILABLE, checks keep
// answering, and after a restart with room every acknowledged write is there.
func TestAFullDiskFailsWritesNotChecks(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	p := serveOn(t, bin, data)
	if err, _ := p.stop(t, 10*time.Second); err != nil {
		t.Fatalf("stopping the first server: %v", err)
	}
	info, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}

	p = serveLimited(t, bin, data, info.Size())
	conn := p.dial(t)
	admin, checks := usherv1.NewAdminServiceClient(conn), usherv1.NewAuthorizationServiceClient(conn)
	grant := func(i int) (uint64, error) {
		resp, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: fmt.Sprintf("user:u%d", i), Role: "host", Resource: "root"})
		return resp.GetRevision(), err
	}
	check := func(i int) usherv1.Reason {
		t.Helper()
		resp, err := checks.Check(t.Context(), &usherv1.CheckRequest{Subject: fmt.Sprintf("user:u%d", i), Permission: "join-call", Resource: "root"})
		if err != nil {
			t.Fatalf("Check of user:u%d with the disk full: %v", i, err)
		}
		return resp.GetDecision().GetReason()
	}
	var acked uint64
	failed := -1
	for i := 0; i < 20000 && failed < 0; i++ {
		rev, err := grant(i)
		switch {
		case err == nil:
			acked = rev
		case status.Code(err) == codes.Unavailable:
			failed = i
			if !strings.Contains(err.Error(), "file too large") {
				t.Errorf("the failed write says %q, not why", err)
			}
		default:
			t.Fatalf("grant %d: %v, want success or UNAVAILABLE", i, err)
		}
	}
	if failed < 0 {
		t.Fatalf("20000 grants fitted in a %d-byte file", info.Size())
	}
	t.Logf("%d grants fitted in the %d-byte file", failed, info.Size())
	if _, err := grant(failed); status.Code(err) != codes.Unavailable {
		t.Errorf("a retry with the disk still full = %v, want UNAVAILABLE", err)
	}
	if got := check(0); got != usherv1.Reason_REASON_GRANTED {
		t.Errorf("with the disk full, the first grant checks as %s, want GRANTED", got)
	}
	if got := check(failed - 1); got != usherv1.Reason_REASON_GRANTED {
		t.Errorf("with the disk full, the last acknowledged grant checks as %s, want GRANTED", got)
	}
	if got := check(failed); got != usherv1.Reason_REASON_NO_GRANT {
		t.Errorf("the failed grant checks as %s: a failed write must change nothing", got)
	}
	exp, err := admin.ExportPolicy(t.Context(), &usherv1.ExportPolicyRequest{})
	if err != nil || exp.GetRevision() != acked {
		t.Errorf("after the failed writes the server reads at revision %d (%v), want the last acknowledged %d", exp.GetRevision(), err, acked)
	}
	if err, _ := p.stop(t, 10*time.Second); err != nil {
		t.Errorf("stopping the server with the disk full: %v; stderr:\n%s", err, p.stderr)
	}

	if rev := checkFile(t, data); rev != acked {
		t.Errorf("the file holds revision %d, want the last acknowledged %d", rev, acked)
	}
	p = serveOn(t, bin, data)
	conn = p.dial(t)
	admin, checks = usherv1.NewAdminServiceClient(conn), usherv1.NewAuthorizationServiceClient(conn)
	for i := range failed {
		if got := check(i); got != usherv1.Reason_REASON_GRANTED {
			t.Fatalf("after the restart, acknowledged grant %d checks as %s", i, got)
		}
	}
	if got := check(failed); got != usherv1.Reason_REASON_NO_GRANT {
		t.Errorf("after the restart, the failed grant checks as %s", got)
	}
	if rev, err := grant(failed); err != nil || rev != acked+1 {
		t.Errorf("with room again, the grant = revision %d, %v; want %d", rev, err, acked+1)
	}
}

// failingStore is the bbolt store with a switch that makes every commit fail
// as a full or read-only file system makes it fail.
type failingStore struct {
	*bolt.Store
	fail atomic.Pointer[error]
}

func (s *failingStore) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	if err := s.fail.Load(); err != nil {
		return nil, fmt.Errorf("storage: commit: write %s: %w", s.Path(), *err)
	}
	return s.Store.Commit(ctx, ws)
}

// TestWritesFailUnavailableWhenCommitsFail covers what a test without a
// mount cannot make happen for real: a read-only file system. The server is
// wired as `usher serve` wires it, over a store whose commits fail.
func TestWritesFailUnavailableWhenCommitsFail(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EROFS, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			fs := &failingStore{Store: store}
			engine, err := authz.Start(t.Context(), fs, authz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			msg, err := policy.Load("default")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := engine.ApplyPolicy(t.Context(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := server.New(engine, slog.New(slog.NewTextHandler(io.Discard, nil)), server.WithBackup(store))
			go srv.Serve(lis)
			defer srv.Stop()
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			admin, checks := usherv1.NewAdminServiceClient(conn), usherv1.NewAuthorizationServiceClient(conn)

			if _, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:dana", Role: "host", Resource: "root"}); err != nil {
				t.Fatal(err)
			}
			idx := engine.Index()
			rev := idx.Revision()
			fs.fail.Store(&[]error{errno}[0])
			writes := map[string]func() error{
				"Grant": func() error {
					_, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:erin", Role: "host", Resource: "root"})
					return err
				},
				"Revoke": func() error {
					_, err := admin.Revoke(t.Context(), &usherv1.RevokeRequest{Subject: "user:dana", Role: "host", Resource: "root"})
					return err
				},
				"PutResource": func() error {
					_, err := admin.PutResource(t.Context(), &usherv1.PutResourceRequest{Name: "account:acme"})
					return err
				},
				"Block": func() error {
					_, err := admin.Block(t.Context(), &usherv1.BlockRequest{Subject: "user:dana", Resource: "root"})
					return err
				},
			}
			for name, write := range writes {
				err := write()
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), errno.Error()) {
					t.Errorf("%s with commits failing with %q = %v, want UNAVAILABLE naming the cause", name, errno.Error(), err)
				}
			}
			for subject, want := range map[string]usherv1.Reason{"user:dana": usherv1.Reason_REASON_GRANTED, "user:erin": usherv1.Reason_REASON_NO_GRANT} {
				resp, err := checks.Check(t.Context(), &usherv1.CheckRequest{Subject: subject, Permission: "join-call", Resource: "root"})
				if err != nil || resp.GetDecision().GetReason() != want || resp.GetRevision() != uint64(rev) {
					t.Errorf("Check of %s with commits failing = %v at revision %d, %v; want %s at %d", subject, resp.GetDecision(), resp.GetRevision(), err, want, rev)
				}
			}
			if got, err := store.Revision(context.Background()); err != nil || got != rev || idx.Revision() != rev {
				t.Errorf("after the failed writes the store is at %d (%v) and the index at %d, want both at %d", got, err, idx.Revision(), rev)
			}
			// Backups read, so they keep working.
			if stream, err := admin.Backup(t.Context(), &usherv1.BackupRequest{}); err == nil {
				for err == nil {
					_, err = stream.Recv()
				}
				if !errors.Is(err, io.EOF) {
					t.Errorf("Backup with commits failing: %v", err)
				}
			}

			fs.fail.Store(nil)
			if resp, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:erin", Role: "host", Resource: "root"}); err != nil || resp.GetRevision() != uint64(rev)+1 {
				t.Errorf("once commits work again, Grant = %v, %v; want revision %d", resp, err, rev+1)
			}
		})
	}
}

// A negative drain bound is no bound: usher serve refuses it, naming the
// flag and its value, before it opens anything (it would stop at
// --policy-mode next).
func TestServeRefusesANegativeDrain(t *testing.T) {
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
		"--policy-mode", "no-such-mode", "--drain", "-1s"}
	if _, err := runIn(args...); err == nil || !strings.Contains(err.Error(), "--drain -1s: want 0 (calls cancelled at once) or more") {
		t.Errorf("usher %s: %v; want it refused, saying --drain -1s: want 0 (calls cancelled at once) or more", strings.Join(args, " "), err)
	}
	args[len(args)-1] = "0s"
	if _, err := runIn(args...); err == nil || !strings.Contains(err.Error(), "no-such-mode") {
		t.Errorf("usher %s: %v; want --drain 0s taken, and --policy-mode refused", strings.Join(args, " "), err)
	}
}
