// Package etcdtest starts real etcd clusters for tests: each member is its own
// etcd process on loopback, so a test can kill, stop and restart members and
// watch replication and failover as production would see them. It runs the
// etcd binary that `make tools` puts in ./bin and links only etcd's client,
// never its server. It is for tests only and imports nothing of Usher.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Limits every member is started with, so that tests can write right up to
// them (and one past) without guessing the server's configuration.
const (
	// MaxTxnOps is --max-txn-ops: how many operations one transaction may hold.
	MaxTxnOps = 10000
	// MaxRequestBytes is --max-request-bytes: the largest request a member accepts.
	MaxRequestBytes = 8 << 20
	// QuotaBackendBytes is --quota-backend-bytes: past it a member raises the
	// NOSPACE alarm and refuses writes. Small, so a test can reach it.
	QuotaBackendBytes = 128 << 20
)

// grpcOverheadBytes is what etcd adds to --max-request-bytes for its gRPC
// receive limit; a client sending up to the same size gets etcd's own
// "request is too large" error rather than a transport error.
const grpcOverheadBytes = 512 << 10

// How long the harness waits for things that take well under a second on an
// idle machine; generous because tests share two cores with other work.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Cluster is a running etcd cluster whose members are numbered from 0. Its
// methods fail the test that started it, so call them from that test's
// goroutine.
type Cluster struct {
	t       testing.TB
	bin     string
	dir     string
	members []*member

	mu sync.Mutex // guards the members' processes
}

// Options change how the members run.
type Options struct {
	// Durable makes every member fsync, as production does; without it
	// they skip fsync (a killed process's writes survive in the page
	// cache), which keeps tests fast. Benchmarks of durable writes set it.
	Durable bool
	// QuotaBackendBytes overrides the QuotaBackendBytes default, for
	// benchmarks that store more.
	QuotaBackendBytes int64
	// MaxRequestBytes, when below the MaxRequestBytes default, overrides
	// it, for tests of what a smaller request limit refuses.
	MaxRequestBytes int
}

// Start starts an n-member cluster and returns once every member serves
// linearizable reads. The members are killed when the test ends, and their
// logs are printed if it failed. A missing etcd binary fails the test.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest.Start: n = %d: a cluster needs at least one member", n)
	}
	bin := binary(t)
	c := &Cluster{t: t, bin: bin, dir: t.TempDir()}
	ports, err := freePorts(2 * n)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	// A token of its own keeps this cluster's members from joining another
	// test's cluster that happens to have used the same ports before.
	token := fmt.Sprintf("etcdtest-%d-%d", time.Now().UnixNano(), ports[0])
	for i := range n {
		c.members = append(c.members, newMember(c.dir, i, ports[2*i], ports[2*i+1]))
	}
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		m.args = m.flags(strings.Join(initial, ","), token, opts)
	}
	t.Cleanup(c.cleanup)

	for _, m := range c.members {
		if err := m.start(c.bin); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for _, m := range c.members {
		if err := m.waitListening(ctx); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("etcdtest: cluster of %d did not become healthy: %v", n, err)
	}
	return c
}

// Endpoints returns every member's client URL, stopped members included, as
// a client configured for the whole cluster would list them.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL
	}
	return eps
}

// Endpoint returns member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.member(i).clientURL }

// ClientConfig returns a client configuration for the whole cluster whose
// message limits match the members', for tests that need a client of their
// own (one endpoint, other timeouts).
func (c *Cluster) ClientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:          c.Endpoints(),
		MaxCallSendMsgSize: MaxRequestBytes + grpcOverheadBytes,
		// The client logs every retry; the test sees the errors that matter
		// as return values.
		Logger: zap.NewNop(),
		// gRPC waits up to two minutes between attempts to reach a member
		// that was down; a restarted member should be back in the client's
		// rotation within a second, as fast as the cluster takes it back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: 5 * time.Second,
		})},
	}
}

// Client returns a client of the whole cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return c.client(t, c.ClientConfig())
}

func (c *Cluster) client(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client of %v: %v", cfg.Endpoints, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Kill kills member i with SIGKILL, as a crash would, and waits for it to exit.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.member(i).kill(); err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
}

// Stop stops member i with SIGTERM, as an orderly shutdown would (a leader
// first hands its leadership over), and waits for it to exit.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.member(i).stop(stopTimeout); err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
}

// Restart starts stopped or killed member i again on its data dir and ports,
// and returns once it listens. A member serves clients only once a quorum has
// seen it back, so a test that needs that calls WaitHealthy.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(i)
	if err := m.start(c.bin); err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := m.waitListening(ctx); err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
}

// Running reports whether member i's process is running.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(i).running()
}

// Leader returns the index of the member that is leader, waiting until a
// running member says it is. When two say so (an old leader cut off from the
// others), the one of the higher term wins.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	cli, err := clientv3.New(c.ClientConfig())
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	for {
		leader, term, lastErr := -1, uint64(0), error(nil)
		for i, m := range c.members {
			if !c.Running(i) {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := cli.Status(sctx, m.clientURL)
			cancel()
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", m.name, err)
				continue
			}
			if st.Leader != 0 && st.Leader == st.Header.MemberId && st.RaftTerm >= term {
				leader, term = i, st.RaftTerm
			}
		}
		if leader >= 0 {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no member is leader: %w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitHealthy waits until every running member serves linearizable reads,
// which needs a leader and a quorum that the member is part of.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var errs []error
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		if err := c.waitServing(ctx, i, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) waitServing(ctx context.Context, i int, m *member) error {
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{m.clientURL}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(gctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		if !c.Running(i) {
			return fmt.Errorf("%s exited: %v", m.name, c.exitErr(i))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", m.name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) exitErr(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(i).exitErr()
}

func (c *Cluster) member(i int) *member {
	if i < 0 || i >= len(c.members) {
		c.t.Fatalf("etcdtest: member %d: the cluster has members 0 to %d", i, len(c.members)-1)
	}
	return c.members[i]
}

// cleanup kills every member, since their data dirs are thrown away, and
// shows their logs if the test failed: the members' view of an election or
// a lost quorum is most of what explains a failed test.
func (c *Cluster) cleanup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if !m.running() {
			continue
		}
		if err := m.kill(); err != nil {
			c.t.Errorf("etcdtest: %v", err)
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, m := range c.members {
		c.t.Logf("etcdtest: last lines of %s's log (%s):\n%s", m.name, m.logPath, m.logTail(logTailLines))
	}
}
