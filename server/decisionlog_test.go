package server_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

func TestDecisionLogWritesDecisionsAsJSONLines(t *testing.T) {
	out := &logBuffer{}
	log := server.NewDecisionLog(out, nil, 1, slog.New(slog.DiscardHandler))
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(e *authz.Engine) []grpc.ServerOption {
		sessions := admission.New(e, admission.Options{})
		t.Cleanup(func() { sessions.Close() })
		return []grpc.ServerOption{server.WithDecisionLog(log), server.WithAdmission(sessions)}
	})
	f.putResource("account:acme", "")
	f.putResource("call:acme:1", "account:acme")
	f.grant("user:hana", "host", "call:acme:1")
	f.check("user:hana", "join-call", "call:acme:1")
	f.check("user:zed", "join-call", "call:acme:1")
	if _, err := f.authz.CheckBatch(f.ctx(), &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
		{Subject: "user:hana", Permission: "join-call", Resource: "call:acme:1"},
		{Subject: "zed", Permission: "join-call", Resource: "call:acme:1"},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := usherv1.NewAdmissionServiceClient(f.conn).Join(f.ctx(), &usherv1.JoinRequest{Subject: "user:hana", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	f.stop()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}

	var got []string
	for line := range strings.Lines(out.String()) {
		var r struct {
			Time                                          string
			Method, Caller, Subject, Permission, Resource string
			Allowed                                       bool
			Reason, Role, Scope, Error                    string
			Session                                       string `json:"session_id"`
			Revision                                      uint64
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decision log line is not JSON: %v\n%s", err, line)
		}
		if r.Time == "" || r.Caller != "anonymous" || r.Revision == 0 {
			t.Errorf("line lacks its time, caller or revision: %s", line)
		}
		if (r.Method == "Join") != (r.Session != "") {
			t.Errorf("a Join and only a Join has a session id: %s", line)
		}
		if (r.Reason == "INVALID") != (r.Error != "") {
			t.Errorf("an invalid item and only one has an error: %s", line)
		}
		got = append(got, strings.Join([]string{r.Method, r.Subject, r.Permission, r.Resource, map[bool]string{true: "allowed", false: "denied"}[r.Allowed], r.Reason, r.Role}, " "))
	}
	want := []string{
		"Check user:hana join-call call:acme:1 allowed GRANTED host",
		"Check user:zed join-call call:acme:1 denied NO_GRANT ",
		"CheckBatch user:hana join-call call:acme:1 allowed GRANTED host",
		"CheckBatch zed join-call call:acme:1 denied INVALID ",
		"Join user:hana  call:acme:1 allowed ADMITTED host",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("decision log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if log.Written() != 5 || log.Dropped() != 0 {
		t.Errorf("Written, Dropped = %d, %d; want 5, 0", log.Written(), log.Dropped())
	}
}

func TestDecisionLogRefusesABadRate(t *testing.T) {
	for _, rate := range []float64{-0.1, 1.5} {
		if _, err := server.OpenDecisionLog(t.TempDir()+"/d.log", rate, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("OpenDecisionLog took rate %v", rate)
		}
	}
}

// An invalid item's names are bounded only by the request's size: the log
// keeps and writes them cut as a refusal quotes them, not a megabyte a line.
func TestDecisionLogCutsTheNamesOfAnInvalidItem(t *testing.T) {
	out := &logBuffer{}
	log := server.NewDecisionLog(out, nil, 1, slog.New(slog.DiscardHandler))
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(*authz.Engine) []grpc.ServerOption {
		return []grpc.ServerOption{server.WithDecisionLog(log)}
	})
	huge := "user:" + strings.Repeat("a", 1<<20)
	resp, err := f.authz.CheckBatch(f.ctx(), &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
		{Subject: huge, Permission: "join-call", Resource: "call:acme:1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if errs := resp.GetErrors(); len(errs) != 1 || errs[0].GetField() != "checks[0].subject" || codes.Code(errs[0].GetCode()) != codes.InvalidArgument {
		t.Fatalf("errors = %v; want one INVALID_ARGUMENT naming checks[0].subject", errs)
	}
	f.stop()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	var r struct{ Subject, Permission, Resource, Reason string }
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("decision log line is not JSON: %v", err)
	}
	if len(line) > 4096 || !strings.HasPrefix(r.Subject, "user:aaa") || !strings.HasSuffix(r.Subject, "… (1048581 bytes)") {
		t.Errorf("a %d-byte line with subject %.40q…; want the subject cut, saying its length", len(line), r.Subject)
	}
	if r.Permission != "join-call" || r.Resource != "call:acme:1" || r.Reason != "INVALID" {
		t.Errorf("permission %q, resource %q, reason %q; want the short names whole and INVALID", r.Permission, r.Resource, r.Reason)
	}
}

// flakyWriter fails every write while broken, having written half of it,
// as a disk that fills up does.
type flakyWriter struct {
	logBuffer
	broken atomic.Bool
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.broken.Load() {
		n, _ := w.logBuffer.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return w.logBuffer.Write(p)
}

// A write that fails, the disk being full, loses the decisions it carried,
// counted and logged; once the disk has room, the next decisions are
// written, each on a line of its own.
func TestDecisionLogWritesAgainAfterAFailedWrite(t *testing.T) {
	out := &flakyWriter{}
	out.broken.Store(true)
	logs := &logBuffer{}
	log := server.NewDecisionLog(out, nil, 1, slog.New(slog.NewJSONHandler(logs, nil)))
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(*authz.Engine) []grpc.ServerOption {
		return []grpc.ServerOption{server.WithDecisionLog(log)}
	})
	f.check("user:zed", "join-call", "root")
	for log.Dropped() == 0 {
		runtime.Gosched()
	}
	out.broken.Store(false)
	f.check("user:hana", "join-call", "root")
	f.stop()
	if err := log.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close: %v; want the write's error, %v", err, syscall.ENOSPC)
	}

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var last struct{ Subject string }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Subject != "user:hana" {
		t.Errorf("the decision after the failed write is not a line of its own (%v); the log holds:\n%s", err, out.String())
	}
	if log.Written() != 1 || log.Dropped() != 1 {
		t.Errorf("Written, Dropped = %d, %d; want 1, 1", log.Written(), log.Dropped())
	}
	if !strings.Contains(logs.String(), "the decision log failed to write") || !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the failed write was not logged:\n%s", logs)
	}
}
