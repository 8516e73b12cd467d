package etcdtest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/internal/etcdtest"
)

// The harness is only worth having if its failures are the cluster's: a
// leader's crash is survived, a lost quorum refuses writes rather than
// hanging them, and restarted members bring the cluster back with its data.
func TestClusterSurvivesALeaderAndStopsWithoutQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)

	put(t, cli, "a", "1", 5*time.Second)
	expect(t, cli, "a", "1")

	leader := leaderOf(t, c)
	c.Kill(leader)
	put(t, cli, "b", "2", 10*time.Second)
	if next := leaderOf(t, c); next == leader {
		t.Fatalf("member %d was killed and is still the leader", leader)
	}

	// The killed member catches up on what was written without it.
	c.Restart(leader)
	waitHealthy(t, c)
	expectOn(t, c, leader, "b", "2")

	down := []int{(leader + 1) % 3, (leader + 2) % 3}
	for _, i := range down {
		c.Stop(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Status(ctx, c.Endpoint(leader)); err != nil {
		t.Fatalf("member %d, the one left running, does not answer: %v", leader, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	_, err := cli.Put(ctx, "c", "3")
	if err == nil {
		t.Fatal("a put with two of three members stopped succeeded")
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("a put without quorum failed after %v, past its one-second deadline", took)
	}
	// Whether that put lands once the quorum is back is not known to the
	// client, so nothing below looks for "c".
	t.Logf("without quorum, a put fails: %v", err)

	for _, i := range down {
		c.Restart(i)
	}
	put(t, cli, "d", "4", 10*time.Second)
	for k, v := range map[string]string{"a": "1", "b": "2", "d": "4"} {
		expect(t, cli, k, v)
	}
}

// A machine without etcd must not pass the etcd tests by skipping them all.
func TestStartFailsWithoutTheBinary(t *testing.T) {
	t.Setenv("USHER_ETCD_BIN", filepath.Join(t.TempDir(), "etcd"))
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		etcdtest.Start(r, 1)
	}()
	<-done
	if !r.failed || !strings.Contains(r.msg, "make tools") {
		t.Fatalf("Start with a missing binary: failed %v, said %q; want a failure that says to run make tools", r.failed, r.msg)
	}
}

// recorder is a testing.TB whose Fatalf records the failure and ends the
// goroutine, as testing's own does, without failing the real test.
type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// put writes until it succeeds or within fails the test: a write may be
// refused while a new leader is elected, and must be accepted after.
func put(t *testing.T, cli *clientv3.Client, k, v string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, k, v)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s=%s: still failing after %v: %v", k, v, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func expect(t *testing.T, cli *clientv3.Client, k, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		t.Fatalf("get %s = %v, want %q", k, resp.Kvs, want)
	}
}

// expectOn reads k from member i's own copy, without asking the leader.
func expectOn(t *testing.T, c *etcdtest.Cluster, i int, k, want string) {
	t.Helper()
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{c.Endpoint(i)}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k, clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("get %s from member %d: %v", k, i, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		t.Fatalf("get %s from member %d = %v, want %q", k, i, resp.Kvs, want)
	}
}

func leaderOf(t *testing.T, c *etcdtest.Cluster) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	i, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func waitHealthy(t *testing.T, c *etcdtest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}
