package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/etcd"
)

// usherProcess is a running `usher serve` that a test stops as it likes:
// SIGTERM, SIGKILL, or at cleanup a SIGKILL if it still runs.
type usherProcess struct {
	cmd      *exec.Cmd
	addr     string
	revision uint64 // as the "serving gRPC" line says
	metrics  string // the URL of its metrics, with --metrics-addr
	stderr   *syncBuffer
	exited   chan struct{} // closed once Wait returned
	waitErr  error         // Wait's result, once exited is closed
}

var (
	servingLine = regexp.MustCompile(`serving gRPC on (\S+) \(data .*, revision (\d+);`)
	metricsLine = regexp.MustCompile(`serving metrics on (http://\S+/metrics)`)
)

// startUsher runs bin with args (the serve command first, or a wrapper's
// arguments) and waits until it says where it serves.
func startUsher(t *testing.T, cmd *exec.Cmd) *usherProcess {
	t.Helper()
	p := &usherProcess{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan []string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			// The metrics' line comes before the gRPC one, if at all.
			if m := metricsLine.FindStringSubmatch(lines.Text()); m != nil {
				p.metrics = m[1]
			}
			if m := servingLine.FindStringSubmatch(lines.Text()); m != nil {
				listening <- m
			}
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case m := <-listening:
		p.addr = m[1]
		p.revision, _ = strconv.ParseUint(m[2], 10, 64)
		return p
	case <-p.exited:
		t.Fatalf("%s exited: %v; stderr:\n%s", strings.Join(cmd.Args, " "), p.waitErr, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not say where it serves within 30s; stderr:\n%s", strings.Join(cmd.Args, " "), p.stderr)
	}
	return nil
}

// serveOn starts `usher serve` on a free loopback port and the data file.
func serveOn(t *testing.T, bin, data string, more ...string) *usherProcess {
	t.Helper()
	return startUsher(t, exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data}, more...)...))
}

// stop sends SIGTERM and returns how the process exited and how long it
// took, failing the test if it takes longer than within.
func (p *usherProcess) stop(t *testing.T, within time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		return p.waitErr, time.Since(start)
	case <-time.After(within):
		t.Fatalf("usher serve still runs %s after SIGTERM; stderr:\n%s", within, p.stderr)
		return nil, 0
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *usherProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// dial connects the generated clients to the process.
func (p *usherProcess) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkFile runs bbolt's own consistency check on a data file no process
// holds, and Usher's (storage.Verify), and returns the revision it holds.
func checkFile(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("bbolt.Open(%s): %v", path, err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		var problems []string
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("bbolt check of %s: %v", path, err)
	}
	rev, err := bolt.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(rev)
}

// fate is what a writer knows of one write.
type fate int

const (
	absent  fate = iota // acknowledged as removed, or never made
	present             // acknowledged as made
	unknown             // sent, and no answer came: either is right, half is not
)

// crashWorld is every write the crash test's writers made, by the name it
// made, and what they know of it.
type crashWorld struct {
	mu     sync.Mutex
	grants map[string]fate // subject -> its "user" grant on root
	events map[string]fate // event -> the event, and its actor's owner grant on it
	blocks map[string]fate // subject -> its block of join-call on root
	acked  uint64          // the highest revision a write was acknowledged at
	acks   int             // how many writes were acknowledged
	// owned lists, per writer, the grants and events it made, for its
	// revokes and deletes to pick from.
	ownGrants, ownEvents [crashWriters][]string
}

const crashWriters = 8

func actorOf(w int) string { return fmt.Sprintf("user:actor-%d", w) }

func (cw *crashWorld) set(m map[string]fate, name string, f fate, rev uint64) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	m[name] = f
	if rev > 0 {
		cw.acked = max(cw.acked, rev)
		cw.acks++
	}
}

// pick returns one of the writer's names that is known to be present.
func (cw *crashWorld) pick(r *rand.Rand, m map[string]fate, own []string) (string, bool) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	var known []string
	for _, n := range own {
		if m[n] == present {
			known = append(known, n)
		}
	}
	if len(known) == 0 {
		return "", false
	}
	return known[r.IntN(len(known))], true
}

// write runs writer w of cycle c until ctx is cancelled or a call fails; a
// failure before killed is set is a test failure.
func (cw *crashWorld) write(ctx context.Context, t *testing.T, conn *grpc.ClientConn, c, w int, seed uint64, killed *atomic.Bool) {
	admin := usherv1.NewAdminServiceClient(conn)
	r := rand.New(rand.NewPCG(seed, uint64(w)))
	var last uint64
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		name := fmt.Sprintf("c%d-w%d-%d", c, w, i)
		var rev uint64
		var err error
		var what string
		switch n := r.IntN(100); {
		case n < 15:
			if subject, ok := cw.pick(r, cw.grants, cw.ownGrants[w]); ok {
				what = "revoke " + subject
				cw.set(cw.grants, subject, unknown, 0)
				var resp *usherv1.RevokeResponse
				if resp, err = admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: subject, Role: "user", Resource: "root"}); err == nil {
					rev = resp.GetRevision()
					cw.set(cw.grants, subject, absent, rev)
				}
				break
			}
			fallthrough
		case n < 45:
			subject := "user:g-" + name
			what = "grant " + subject
			cw.mu.Lock()
			cw.ownGrants[w] = append(cw.ownGrants[w], subject)
			cw.mu.Unlock()
			cw.set(cw.grants, subject, unknown, 0)
			var resp *usherv1.GrantResponse
			if resp, err = admin.Grant(ctx, &usherv1.GrantRequest{Subject: subject, Role: "user", Resource: "root"}); err == nil {
				rev = resp.GetRevision()
				cw.set(cw.grants, subject, present, rev)
			}
		case n < 55:
			if event, ok := cw.pick(r, cw.events, cw.ownEvents[w]); ok {
				// Deleting the event removes its owner grant in the same
				// transaction.
				what = "delete " + event
				cw.set(cw.events, event, unknown, 0)
				var resp *usherv1.DeleteResourceResponse
				if resp, err = admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: event}); err == nil {
					rev = resp.GetRevision()
					cw.set(cw.events, event, absent, rev)
				}
				break
			}
			fallthrough
		case n < 85:
			// Registered on the actor's behalf, the event comes with the
			// policy's creator role for the actor, in the same transaction.
			event := "event:" + name
			what = "register " + event
			cw.mu.Lock()
			cw.ownEvents[w] = append(cw.ownEvents[w], event)
			cw.mu.Unlock()
			cw.set(cw.events, event, unknown, 0)
			var resp *usherv1.PutResourceResponse
			if resp, err = admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: event, Actor: actorOf(w)}); err == nil {
				rev = resp.GetRevision()
				cw.set(cw.events, event, present, rev)
			}
		default:
			subject := "user:b-" + name
			what = "block " + subject
			cw.set(cw.blocks, subject, unknown, 0)
			var resp *usherv1.BlockResponse
			if resp, err = admin.Block(ctx, &usherv1.BlockRequest{Subject: subject, Resource: "root", Permissions: []string{"join-call"}, Reason: name}); err == nil {
				rev = resp.GetRevision()
				cw.set(cw.blocks, subject, present, rev)
			}
		}
		cancel()
		if err != nil {
			if !killed.Load() {
				t.Errorf("writer %d: %s failed before the kill: %v", w, what, err)
			}
			return
		}
		if rev <= last {
			t.Errorf("writer %d: %s acknowledged at revision %d after an earlier write at %d", w, what, rev, last)
		}
		last = rev
	}
}

// seen is what a restarted server shows of the writes.
type seen struct {
	revision    uint64
	grants      map[string]bool // subjects with the "user" grant on root
	events      map[string]bool // registered events
	ownerGrants map[string]bool // events on which their actor holds owner
	blocks      map[string]bool // subjects blocked from join-call on root
}

// observe reads everything the writers could have written, at one revision.
func (cw *crashWorld) observe(t *testing.T, conn *grpc.ClientConn) seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := usherv1.NewAdminServiceClient(conn)
	exp, err := admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("ExportPolicy: %v", err)
	}
	s := seen{revision: exp.GetRevision(), grants: map[string]bool{}, events: map[string]bool{}, ownerGrants: map[string]bool{}, blocks: map[string]bool{}}
	for {
		for _, r := range exp.GetPolicy().GetResources() {
			s.events[r.GetName()] = true
		}
		if exp.GetNextPageToken() == "" {
			break
		}
		if exp, err = admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{PageSize: 1000, PageToken: exp.GetNextPageToken(), MinRevision: s.revision}); err != nil {
			t.Fatalf("ExportPolicy: %v", err)
		}
		if exp.GetRevision() != s.revision {
			t.Fatalf("ExportPolicy pages at revisions %d and %d: nothing else writes", s.revision, exp.GetRevision())
		}
	}
	list := func(req *usherv1.ListGrantsRequest, each func(*usherv1.Grant)) {
		req.PageSize, req.MinRevision = 1000, s.revision
		for {
			resp, err := admin.ListGrants(ctx, req)
			if err != nil {
				t.Fatalf("ListGrants(%v): %v", req, err)
			}
			if resp.GetRevision() != s.revision {
				t.Fatalf("ListGrants answered at revision %d, ExportPolicy at %d: nothing else writes", resp.GetRevision(), s.revision)
			}
			for _, g := range resp.GetGrants() {
				each(g)
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				return
			}
		}
	}
	list(&usherv1.ListGrantsRequest{Resource: "root"}, func(g *usherv1.Grant) {
		if g.GetRole() == "user" {
			s.grants[g.GetSubject()] = true
		}
	})
	for w := range crashWriters {
		list(&usherv1.ListGrantsRequest{Subject: actorOf(w)}, func(g *usherv1.Grant) {
			if g.GetRole() == "owner" && g.GetResource() != "root" {
				s.ownerGrants[g.GetResource()] = true
			}
		})
	}
	cw.mu.Lock()
	var subjects []string
	for subject := range cw.blocks {
		subjects = append(subjects, subject)
	}
	cw.mu.Unlock()
	for len(subjects) > 0 {
		batch := subjects[:min(len(subjects), server.MaxBatch)]
		subjects = subjects[len(batch):]
		req := &usherv1.CheckBatchRequest{MinRevision: s.revision}
		for _, subject := range batch {
			req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: subject, Permission: "join-call", Resource: "root"})
		}
		resp, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(ctx, req)
		if err != nil {
			t.Fatalf("CheckBatch: %v", err)
		}
		for i, d := range resp.GetDecisions() {
			s.blocks[batch[i]] = d.GetReason() == usherv1.Reason_REASON_BLOCKED
		}
	}
	return s
}

// reconcile compares what a restarted server shows with what the writers
// know, fails the test where they disagree, and settles every unknown write
// to what the server shows, counting how many were found made.
func (cw *crashWorld) reconcile(t *testing.T, cycle int, s seen) (made, lost int) {
	t.Helper()
	cw.mu.Lock()
	defer cw.mu.Unlock()
	compare := func(kind string, m map[string]fate, shown map[string]bool) {
		for name, f := range m {
			switch {
			case f == unknown && shown[name]:
				m[name] = present
				made++
			case f == unknown:
				m[name] = absent
				lost++
			case f == present && !shown[name]:
				t.Errorf("cycle %d: acknowledged %s %s is missing after the restart", cycle, kind, name)
			case f == absent && shown[name]:
				t.Errorf("cycle %d: %s %s is present after the restart, but its removal was acknowledged", cycle, kind, name)
			}
		}
		for name := range shown {
			if _, ok := m[name]; !ok && (strings.Contains(name, ":g-") || strings.Contains(name, ":b-") || strings.HasPrefix(name, "event:")) {
				t.Errorf("cycle %d: %s %s is present but was never written", cycle, kind, name)
			}
		}
	}
	// Both halves of every event write, before the unknowns are settled.
	for event := range cw.events {
		if s.events[event] != s.ownerGrants[event] {
			t.Errorf("cycle %d: half a write survived: event %s registered %v, its actor's owner grant %v", cycle, event, s.events[event], s.ownerGrants[event])
		}
	}
	compare("grant of user to", cw.grants, s.grants)
	compare("event", cw.events, s.events)
	compare("block of", cw.blocks, s.blocks)
	if s.revision < cw.acked {
		t.Errorf("cycle %d: the restarted server is at revision %d, below the acknowledged revision %d", cycle, s.revision, cw.acked)
	}
	return made, lost
}

// TestCrashSafety kills the server with SIGKILL at random moments while
// writers run, restarts it, and checks that acknowledged writes survive,
// unacknowledged ones are whole or absent and revisions never go down: on a
// bbolt file, which must also check clean, and as a replica over an etcd
// cluster, which must hold what the restarted server says it serves.
func TestCrashSafety(t *testing.T) {
	bin, dir := buildUsher(t)
	t.Run("bolt", func(t *testing.T) {
		data := filepath.Join(dir, "data", "usher.db")
		crashSafety(t, bin, 20, []string{"--data", data}, func(t *testing.T) uint64 { return checkFile(t, data) })
	})
	t.Run("etcd", func(t *testing.T) {
		c := etcdtest.Start(t, 3)
		const prefix = "/crash/"
		store := etcd.New(c.Client(t), etcd.Options{Prefix: prefix})
		// Fewer cycles: each restart loads the index over the network,
		// and a cycle proves the same as on a file.
		crashSafety(t, bin, 6, []string{"--etcd", strings.Join(c.Endpoints(), ","), "--etcd-prefix", prefix}, func(t *testing.T) uint64 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// A transaction the killed process had sent may still reach
			// etcd just after its death: the revision counts once it
			// stays put.
			var last authz.Revision
			for i := 0; ; i++ {
				rev, err := store.Revision(ctx)
				if err != nil {
					t.Fatalf("the revision etcd holds: %v", err)
				}
				if i > 0 && rev == last {
					return uint64(rev)
				}
				last = rev
				time.Sleep(100 * time.Millisecond)
			}
		})
	})
}

// crashSafety runs cycles of writes and kills of `usher serve` with
// backend's flags; stored says which revision the backend holds while no
// server runs.
func crashSafety(t *testing.T, bin string, cycles int, backend []string, stored func(*testing.T) uint64) {
	serve := func() *usherProcess {
		t.Helper()
		return startUsher(t, exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, backend...)...))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	cw := &crashWorld{grants: map[string]fate{}, events: map[string]fate{}, blocks: map[string]fate{}}

	p := serve()
	conn := p.dial(t)
	for w := range crashWriters {
		if _, err := usherv1.NewAdminServiceClient(conn).Grant(t.Context(), &usherv1.GrantRequest{Subject: actorOf(w), Role: "owner", Resource: "root"}); err != nil {
			t.Fatalf("granting the writers' actors: %v", err)
		}
	}
	var lastRevision uint64
	var made, lost int
	start := time.Now()
	for cycle := range cycles {
		// Cancelling the writers once the server is dead changes nothing
		// it could still do; it only spares them the client's reconnect
		// back-off.
		ctx, cancel := context.WithCancel(context.Background())
		var killed atomic.Bool
		var wg sync.WaitGroup
		for w := range crashWriters {
			wg.Go(func() { cw.write(ctx, t, conn, cycle, w, seed+uint64(cycle), &killed) })
		}
		time.Sleep(time.Duration(50+r.IntN(351)) * time.Millisecond)
		killed.Store(true)
		p.kill(t)
		cancel()
		wg.Wait()
		conn.Close()
		if t.Failed() {
			t.FailNow()
		}

		storedRevision := stored(t)
		p = serve()
		if p.revision != storedRevision {
			t.Errorf("cycle %d: the backend holds revision %d, the restarted server says it serves %d", cycle, storedRevision, p.revision)
		}
		conn = p.dial(t)
		s := cw.observe(t, conn)
		if s.revision < lastRevision {
			t.Errorf("cycle %d: the revision went down across a restart, from %d to %d", cycle, lastRevision, s.revision)
		}
		lastRevision = s.revision
		m, l := cw.reconcile(t, cycle, s)
		made, lost = made+m, lost+l
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d cycles in %s: %d writes acknowledged; of those cut by the kill, %d had committed and %d had not; final revision %d",
		cycles, time.Since(start).Round(time.Millisecond), cw.acks, made, lost, lastRevision)
	if cw.acks < cycles {
		t.Errorf("only %d writes were acknowledged in %d cycles: the writers hardly ran", cw.acks, cycles)
	}
}
