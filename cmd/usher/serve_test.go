package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/etcd"
)

// built is the usher binary the tests run: built once, by the first test
// that asks for it, into a directory TestMain removes.
var built struct {
	once sync.Once
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "usher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built.bin = filepath.Join(dir, "usher")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// usherBinary is the usher binary, built at the first call.
func usherBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// buildUsher is the usher binary and a fresh directory.
func buildUsher(t *testing.T) (bin, dir string) {
	t.Helper()
	return usherBinary(t), t.TempDir()
}

// syncBuffer is a process's stderr, read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServe runs `usher serve args...` and returns the address it says it
// serves on and its stderr so far; it is stopped with SIGTERM at cleanup.
func startServe(t *testing.T, bin string, args ...string) (addr string, stderr *syncBuffer) {
	t.Helper()
	addr, _, stderr = startServeOutput(t, bin, args...)
	return addr, stderr
}

// startServeOutput is startServe, also returning what the server printed
// on stdout up to the line that says where it serves gRPC.
func startServeOutput(t *testing.T, bin string, args ...string) (addr string, printed *syncBuffer, stderr *syncBuffer) {
	t.Helper()
	stderr, printed = &syncBuffer{}, &syncBuffer{}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	listening := make(chan string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			fmt.Fprintln(printed, lines.Text())
			if m := regexp.MustCompile(`serving gRPC on (\S+)`).FindStringSubmatch(lines.Text()); m != nil {
				listening <- m[1]
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("usher serve exited with %v after SIGTERM; stderr:\n%s", err, stderr)
		}
	})
	select {
	case addr = <-listening:
		return addr, printed, stderr
	case err := <-exited:
		exited <- err
		t.Fatalf("usher serve %s exited: %v; stderr:\n%s", strings.Join(args, " "), err, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("usher serve did not say where it listens within 30s; stderr:\n%s", stderr)
	}
	return "", nil, nil
}

func TestServeRefusesToServeANonLoopbackAddressUnauthenticated(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "data", "usher.db")
	out, err := exec.Command(bin, "serve", "--addr", "0.0.0.0:0", "--data", data).CombinedOutput()
	if err == nil {
		t.Fatalf("usher serve --addr 0.0.0.0:0 without callers started; output:\n%s", out)
	}
	for _, want := range []string{"refusing to serve 0.0.0.0:0 without authentication", "--callers", "--allow-unauthenticated"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the refused server created its data file (stat: %v)", err)
	}
}

func TestServeUnauthenticatedWarns(t *testing.T) {
	bin, dir := buildUsher(t)
	t.Run("on loopback it serves and warns", func(t *testing.T) {
		_, stderr := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "loopback.db"))
		if !strings.Contains(stderr.String(), "WARNING: no callers file") || !strings.Contains(stderr.String(), "loopback only") {
			t.Errorf("no warning on stderr:\n%s", stderr)
		}
	})
	t.Run("with --allow-unauthenticated it serves a non-loopback address and warns", func(t *testing.T) {
		_, stderr := startServe(t, bin, "--addr", "0.0.0.0:0", "--allow-unauthenticated", "--data", filepath.Join(dir, "open.db"))
		if !strings.Contains(stderr.String(), "WARNING: no callers file and --allow-unauthenticated") {
			t.Errorf("no warning on stderr:\n%s", stderr)
		}
	})
}

func TestServeRefusesABrokenCallersFile(t *testing.T) {
	bin, dir := buildUsher(t)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: a, kind: root, token_sha256: "+strings.Repeat("ab", 32)+"}\n"))
	out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"), "--callers", callers).CombinedOutput()
	if err == nil || !strings.Contains(string(out), callers+`: callers[0].kind "root"`) {
		t.Fatalf("usher serve with a broken callers file: %v\n%s", err, out)
	}
}

// tokenOf runs `usher token` and returns the token and its hash.
func tokenOf(t *testing.T, bin string) (token, hash string) {
	t.Helper()
	out, err := exec.Command(bin, "token").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^token: (\S+)\ntoken_sha256: ([0-9a-f]{64})$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("usher token printed %q", out)
	}
	return m[1], m[2]
}

func TestClientCommandsAuthenticate(t *testing.T) {
	bin, dir := buildUsher(t)
	adminToken, adminHash := tokenOf(t, bin)
	if other, _ := tokenOf(t, bin); other == adminToken {
		t.Fatal("usher token printed the same token twice")
	}
	ca := testpki.NewCA(t, "acme CA")
	certFile, keyFile := ca.Server(t, "usher").Write(t, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	testpki.WriteFile(t, caFile, ca.PEM())
	sidecarCert, sidecarKey := ca.Client(t, pkix.Name{CommonName: "sidecar", Organization: []string{"acme"}}).Write(t, dir, "sidecar")
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, fmt.Appendf(nil, `callers:
  - {name: backend, kind: admin, token_sha256: %s}
  - {name: sidecar, kind: check, certificate_subject: "CN=sidecar,O=acme"}
`, adminHash))

	addr, stderr := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--callers", callers, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile)
	if strings.Contains(stderr.String(), "WARNING") {
		t.Errorf("warned with a callers file:\n%s", stderr)
	}
	usher := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args[:1:1], append([]string{"--addr", addr, "--tls-ca", caFile}, args[1:]...)...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := usher("grant", "user:dana", "host", "root"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("grant without credentials: err %v, output %s; want Unauthenticated", err, out)
	}
	if out, err := usher("grant", "--token", adminToken, "user:dana", "host", "root"); err != nil || !strings.Contains(out, `"revision": "2"`) {
		t.Fatalf("grant with the admin token: err %v, output %s", err, out)
	}
	sidecar := []string{"--tls-cert", sidecarCert, "--tls-key", sidecarKey}
	if out, err := usher(append(append([]string{"check"}, sidecar...), "user:dana", "join-call", "root")...); err != nil || !strings.Contains(out, "REASON_GRANTED") {
		t.Fatalf("check with the sidecar's certificate: err %v, output %s", err, out)
	}
	if out, err := usher(append(append([]string{"revoke"}, sidecar...), "user:dana", "host", "root")...); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("revoke with the sidecar's certificate: err %v, output %s; want PermissionDenied", err, out)
	}
	cmd := exec.Command(bin, "revoke", "--addr", addr, "--tls-ca", caFile, "user:dana", "host", "root")
	cmd.Env = append(os.Environ(), "USHER_TOKEN="+adminToken)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"revision": "3"`) {
		t.Fatalf("revoke with USHER_TOKEN: err %v, output %s", err, out)
	}
	tokenFile := filepath.Join(dir, "token")
	testpki.WriteFile(t, tokenFile, []byte(adminToken+"\n"))
	if out, err := usher("grant", "user:dana", "host", "root", "--token-file", tokenFile); err != nil || !strings.Contains(out, `"revision": "4"`) {
		t.Fatalf("grant with --token-file: err %v, output %s", err, out)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070":  true,
		"127.1.2.3:7070":  true,
		"[::1]:7070":      true,
		"localhost:7070":  true,
		":7070":           false, // every interface
		"0.0.0.0:7070":    false,
		"[::]:7070":       false,
		"10.0.0.7:7070":   false,
		"usher.acme:7070": false, // a name might resolve anywhere
		"127.0.0.1":       false, // not host:port, so net.Listen refuses it anyway
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// What a name resolved to decides whether a server without callers may
// listen there: localhost names loopback only where it resolves to it.
func TestListensOnLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:0": true,
		"localhost:0": true, // as this machine resolves it
		"0.0.0.0:0":   false,
		":0":          false,
	} {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := listensOnLoopback(lis); got != want {
			t.Errorf("listensOnLoopback(a listener on %q, at %s) = %v, want %v", addr, lis.Addr(), got, want)
		}
		lis.Close()
	}
}

// damagedDataFiles writes a data file of enough grants that their bucket's
// root is a branch page, and two damaged copies: one cut in half, one whose
// grants root points its first child back at itself.
func damagedDataFiles(t *testing.T, dir string) (cut, loop string) {
	t.Helper()
	path := filepath.Join(dir, "good.db")
	store, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cs := authz.ChangeSet{Caller: "test"}
	for i := range 5000 {
		cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "user", Resource: "root"}})
	}
	if _, err := store.Commit(context.Background(), []authz.Write{{Set: cs}}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut = filepath.Join(dir, "cut.db")
	if err := os.WriteFile(cut, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	// bbolt's layout: of the two meta pages, the one of the higher
	// transaction id is current; after a 16-byte page header it holds
	// magic, version, page size, flags, then the root bucket's page, and
	// the transaction id 48 bytes in. The root bucket is a leaf page whose
	// 16-byte elements (flags, pos, key size, value size) point at keys and
	// values; a bucket's value starts with its root page.
	le := binary.LittleEndian
	pageSize := uint64(le.Uint32(b[24:]))
	meta := b[16:]
	if le.Uint64(b[pageSize+16+48:]) > le.Uint64(meta[48:]) {
		meta = b[pageSize+16:]
	}
	root := le.Uint64(meta[16:])
	page := func(id uint64) []byte { return b[id*pageSize : (id+1)*pageSize] }
	var grants uint64
	p := page(root)
	for i := range int(le.Uint16(p[10:])) {
		e := p[16+16*i:]
		key := e[le.Uint32(e[4:]) : le.Uint32(e[4:])+le.Uint32(e[8:])]
		if string(key) == "grants" {
			grants = le.Uint64(e[le.Uint32(e[4:])+le.Uint32(e[8:]):])
		}
	}
	p = page(grants)
	if grants == 0 || le.Uint16(p[8:]) != 0x01 {
		t.Fatalf("the grants bucket's root %d is not a branch page", grants)
	}
	le.PutUint64(p[16+8:], grants)
	loop = filepath.Join(dir, "loop.db")
	if err := os.WriteFile(loop, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return cut, loop
}

func TestServeRefusesADamagedDataFile(t *testing.T) {
	bin, dir := buildUsher(t)
	cut, loop := damagedDataFiles(t, dir)
	for _, tc := range []struct{ name, data, want string }{
		{"a data file cut in half is refused", cut, "the file is cut off"},
		{"a data file whose tree loops is refused", loop, `bucket "grants": page`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(tc.data)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0", "--data", tc.data).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("usher serve did not exit within 30s; output:\n%.2000s", out)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("usher serve exited with %v, want exit status 1", err)
			}
			want := "usher serve: storage: open " + tc.data + ": the data file is damaged (restore it from a backup with usher restore): "
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") {
				t.Errorf("usher serve's output:\n%.2000s\nwant a line saying %q, then %q, and no panic", out, want, tc.want)
			}
			if after, _ := os.ReadFile(tc.data); !bytes.Equal(before, after) {
				t.Error("usher serve changed the damaged file it refused")
			}
		})
	}
}

// bearerToken sends "authorization: bearer <token>" with every call of a
// test's own connection.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// On etcd, --log-retention 0 keeps the whole log, as its help says and as
// it does on a data file; without the flag, the log keeps
// etcd.DefaultRetain change sets.
func TestLogRetentionOnEtcd(t *testing.T) {
	for _, c := range []struct {
		args []string
		want authz.Revision
	}{
		{nil, etcd.DefaultRetain},
		{[]string{"--log-retention", "0"}, 0},
		{[]string{"--log-retention", "500"}, 500},
	} {
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		b := addBackendFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if got := b.etcdRetain(); got != c.want {
			t.Errorf("serve %v: the etcd log keeps %d change sets, want %d", c.args, got, c.want)
		}
	}
}

// --livekit-key picks one key of --livekit-key-file: without the file,
// serve must not sign with the environment's other key, or with none, while
// the operator believes it signs with the one named.
func TestServeRefusesALiveKitKeyNameWithoutTheKeyFile(t *testing.T) {
	bin, _ := buildUsher(t)
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"with another key in the environment", []string{"USHER_LIVEKIT_API_KEY=APIenv", "USHER_LIVEKIT_API_SECRET=" + strings.Repeat("s", 40)},
			`LiveKit key: key "APIprod": USHER_LIVEKIT_API_KEY holds the key "APIenv", and no key file is given to choose "APIprod" from`},
		{"with no key at all", nil,
			`LiveKit key: key "APIprod": no key file is given to choose it from, and USHER_LIVEKIT_API_KEY: not set`},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "usher.db")
			// A server that does not refuse serves until the context ends.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0", "--data", data, "--livekit-key", "APIprod")
			cmd.Env = append(slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "USHER_LIVEKIT_") }), c.env...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("usher serve --livekit-key APIprod without a key file: %v\n%s\nwant it refused saying %q", err, out, c.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the refused server created its data file (stat: %v)", err)
			}
		})
	}
}

// A start that fails once the data file is open (its address taken by
// another process) writes nothing into it: not the default policy either,
// which would make the next start's --policy, in the default mode, merge
// onto it rather than be the file's whole policy.
func TestServeThatFailsToStartWritesNoPolicy(t *testing.T) {
	bin, dir := buildUsher(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	data := filepath.Join(dir, "new.db")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--addr", taken.Addr().String(), "--data", data).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("usher serve on a taken address: %v; output:\n%.2000s\nwant it refused, saying the address is in use", err, out)
	}
	store, err := bolt.Open(data, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if rev, err := store.Revision(t.Context()); err != nil || rev != 0 {
		t.Errorf("the data file of a start refused for its address is at revision %d, %v; want 0, nothing written", rev, err)
	}
}

// A server that signs LiveKit tokens warns of each admission rule in force
// that maps roomRecord, which LiveKit checks against no room: a data file
// made by a policy that mapped it keeps the rule. The shipped policy maps
// nothing to it, and no warning is logged.
func TestServeWarnsOfARuleThatMapsRoomRecord(t *testing.T) {
	bin, dir := buildUsher(t)
	t.Setenv("USHER_LIVEKIT_API_KEY", "servekey")
	t.Setenv("USHER_LIVEKIT_API_SECRET", "serve-secret-long-enough-for-hmac-0123456789")
	const warning = "an admission rule maps LiveKit's roomRecord, which LiveKit checks against no room"
	_, stderr := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "mapped.db"),
		"--policy", filepath.Join("..", "..", "policy", "testdata", "all-fields.yaml"))
	if got := stderr.String(); !strings.Contains(got, warning) || !strings.Contains(got, "room_record=call.manage") {
		t.Errorf("serving a rule that maps roomRecord, stderr:\n%s\nwant the warning naming call.manage", got)
	}
	_, stderr = startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "default.db"))
	if got := stderr.String(); strings.Contains(got, warning) {
		t.Errorf("serving the default policy, stderr:\n%s\nwant no warning of roomRecord", got)
	}
}
