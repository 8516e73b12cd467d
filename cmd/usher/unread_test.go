//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
)

// unreadGrowth is how far above its resident size at rest the server may
// grow holding answers its clients do not read: the send budget, twice,
// since Go's collector lets the heap grow to twice what is live, and room
// for the answers being made when they are refused and for a busy machine's
// collector running late.
const unreadGrowth = 2*(64<<20) + 128<<20

// TestAnswersClientsDoNotReadAreBounded has a check caller ask for large
// answers on many streams of connections that give the server no window to
// send them in, and never read: 8 connections of 100 CheckBatch calls, each
// answered with some 440 KB of errors quoting its names. grpc-go keeps an
// answer it cannot send, and the stream with it, for as long as the
// connection lasts, and a client that answers pings keeps it for ever: the
// attack held some 600 MB here, and 64 connections from each peer, 4,096 in
// all, would hold tens of gigabytes. The server's RSS must stay within
// unreadGrowth of its size at rest, and a caller that reads its answers is
// answered throughout.
func TestAnswersClientsDoNotReadAreBounded(t *testing.T) {
	bin, dir := buildUsher(t)
	token, hash := tokenOf(t, bin)
	attackerToken, attackerHash := tokenOf(t, bin)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: backend, kind: admin, token_sha256: "+hash+"}\n"+
		"  - {name: sidecar, kind: check, token_sha256: "+attackerHash+"}\n"))
	p := serveOn(t, bin, filepath.Join(t.TempDir(), "usher.db"), "--callers", callers)
	legit := dialFrom(t, p.addr, legitPeer, insecure.NewCredentials(), grpc.WithPerRPCCredentials(bearerToken(token)))
	admin, checks := usherv1.NewAdminServiceClient(legit), usherv1.NewAuthorizationServiceClient(legit)
	if _, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:dana", Role: "host", Resource: "root"}); err != nil {
		t.Fatal(err)
	}
	baseline := memoryOf(t, p)

	// Each check's subject is malformed (it has no kind), and its error
	// quotes it twice: the answer is about twice the request.
	items := make([]*usherv1.CheckItem, 400)
	for i := range items {
		items[i] = &usherv1.CheckItem{Subject: strings.Repeat("x", 500), Permission: "join-call", Resource: "root"}
	}
	body, err := proto.Marshal(&usherv1.CheckBatchRequest{Checks: items})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var attackers sync.WaitGroup
	opened := make(chan int, 8)
	for range 8 {
		attackers.Go(func() {
			n, err := neverRead(ctx, p.addr, slowStreamsPeer, attackerToken, "/usher.v1.AuthorizationService/CheckBatch", body, 100)
			if err != nil && ctx.Err() == nil {
				t.Logf("attacker: %v", err)
			}
			opened <- n
		})
	}
	streams := 0
	for range 8 {
		streams += <-opened
	}
	var peak memory
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		peak = peak.max(memoryOf(t, p))
		cctx, ccancel := context.WithTimeout(t.Context(), 2*time.Second)
		resp, err := checks.Check(cctx, &usherv1.CheckRequest{Subject: "user:dana", Permission: "join-call", Resource: "root"})
		ccancel()
		if err != nil || !resp.GetDecision().GetAllowed() {
			t.Errorf("a caller that reads its answers was not answered under attack: %v %v", resp, err)
		}
	}
	t.Logf("%d streams that never read their answers; server RSS %d MiB before, peak %d MiB (VmHWM)", streams, baseline.rss>>20, peak.hwm>>20)
	if streams < 800 {
		t.Errorf("the attack opened %d streams, want 800", streams)
	}
	if bound := baseline.rss + unreadGrowth; peak.hwm > bound {
		t.Errorf("the server's RSS peaked at %d MiB holding answers its clients do not read, over the bound of %d MiB (%d MiB at rest and %d MiB)",
			peak.hwm>>20, bound>>20, baseline.rss>>20, unreadGrowth>>20)
	}
	if !strings.Contains(p.stderr.String(), "send budget spent") {
		t.Errorf("stderr never says the send budget was spent:\n%s", tail(p.stderr.String(), 20))
	}
	cancel()
	attackers.Wait()
}

// neverRead connects from peer to addr and calls method n times with
// body, with a check caller's token, on a connection whose windows give the
// server no room to answer in (SETTINGS_INITIAL_WINDOW_SIZE 0, and no
// WINDOW_UPDATE ever): it answers pings and settings, so that the
// connection looks alive, and reads nothing else. It returns once every
// request is sent, holding the connection until ctx ends.
func neverRead(ctx context.Context, addr string, peer net.IP, token, method string, body []byte, n int) (sent int, err error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: peer}, Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	fr := http2.NewFramer(conn, bufio.NewReader(conn))
	var (
		wmu     sync.Mutex // writes
		mu      sync.Mutex // the server's windows
		granted = sync.NewCond(&mu)
		connWin = int64(65535)
		windows = map[uint32]int64{}
	)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return 0, err
	}
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		return 0, err
	}
	go func() {
		defer func() { mu.Lock(); connWin = -1 << 40; granted.Broadcast(); mu.Unlock() }()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					wmu.Lock()
					fr.WritePing(true, f.Data)
					wmu.Unlock()
				}
			case *http2.WindowUpdateFrame:
				mu.Lock()
				if f.StreamID == 0 {
					connWin += int64(f.Increment)
				} else {
					windows[f.StreamID] += int64(f.Increment)
				}
				granted.Broadcast()
				mu.Unlock()
			}
		}
	}()
	msg := make([]byte, 5+len(body))
	msg[1], msg[2], msg[3], msg[4] = byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	copy(msg[5:], body)
	var hbuf bytes.Buffer
	henc := hpack.NewEncoder(&hbuf)
	for i := range n {
		id := uint32(2*i + 1)
		hbuf.Reset()
		for _, f := range []hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: method}, {Name: ":authority", Value: "usher"},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
			{Name: "authorization", Value: "bearer " + token},
		} {
			henc.WriteField(f)
		}
		mu.Lock()
		windows[id] += 65535 // the server's initial stream window
		mu.Unlock()
		wmu.Lock()
		err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
		wmu.Unlock()
		for rest := msg; err == nil && len(rest) > 0; {
			mu.Lock()
			for min(connWin, windows[id]) <= 0 && connWin > -1<<39 && ctx.Err() == nil {
				granted.Wait()
			}
			w := min(connWin, windows[id], 16<<10, int64(len(rest)))
			connWin -= w
			windows[id] -= w
			mu.Unlock()
			if w <= 0 {
				return i, net.ErrClosed
			}
			wmu.Lock()
			err = fr.WriteData(id, len(rest) == int(w), rest[:w])
			wmu.Unlock()
			rest = rest[w:]
		}
		if err != nil {
			return i, err
		}
	}
	return n, nil
}
