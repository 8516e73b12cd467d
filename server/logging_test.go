package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// jsonLines parses every line of a JSON log, failing the test on one that
// is not a JSON object with a time, a level and a message.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(log) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("log line has no %q: %s", k, line)
			}
		}
		out = append(out, rec)
	}
	return out
}

// finishedCalls are the records of calls the server logged.
func finishedCalls(recs []map[string]any) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["msg"] == "finished call" {
			out = append(out, r)
		}
	}
	return out
}

func TestJSONLogsAtInfoLogRefusedCallsOnly(t *testing.T) {
	logs := &logBuffer{}
	logger, err := server.NewLogger(logs, "json", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	f := startServerWith(t, t.TempDir(), logger, nil)
	f.putResource("account:acme", "")
	f.grant("user:alice", "host", "account:acme")
	for range 3 {
		f.check("user:alice", "join-call", "account:acme")
	}
	_, err = f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: "alice", Permission: "join-call", Resource: "account:acme"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Check of a malformed subject: %v", err)
	}
	f.stop()

	calls := finishedCalls(jsonLines(t, logs.String()))
	if len(calls) != 1 {
		t.Fatalf("logged %d calls, want only the refused one:\n%s", len(calls), logs.String())
	}
	want := map[string]any{
		"level": "INFO", "grpc.service": "usher.v1.AuthorizationService", "grpc.method": "Check",
		"grpc.code": "InvalidArgument", "grpc.component": "server", "grpc.method_type": "unary",
	}
	for k, v := range want {
		if calls[0][k] != v {
			t.Errorf("%s = %v, want %v", k, calls[0][k], v)
		}
	}
	if e, _ := calls[0]["grpc.error"].(string); !strings.Contains(e, "subject") {
		t.Errorf("grpc.error = %q, want the refusal's message", e)
	}
	if _, ok := calls[0]["grpc.time_ms"].(float64); !ok {
		t.Errorf("grpc.time_ms = %v, want a number", calls[0]["grpc.time_ms"])
	}
	if _, ok := calls[0]["peer.address"]; !ok {
		t.Error("no peer.address")
	}
}

func TestDebugLogsEveryCall(t *testing.T) {
	logs := &logBuffer{}
	logger, err := server.NewLogger(logs, "json", slog.LevelDebug)
	if err != nil {
		t.Fatal(err)
	}
	f := startServerWith(t, t.TempDir(), logger, nil)
	f.putResource("account:acme", "")
	f.check("user:alice", "join-call", "account:acme")
	f.stop()
	var checks []map[string]any
	for _, r := range finishedCalls(jsonLines(t, logs.String())) {
		if r["grpc.method"] == "Check" {
			checks = append(checks, r)
		}
	}
	if len(checks) != 1 || checks[0]["level"] != "DEBUG" || checks[0]["grpc.code"] != "OK" {
		t.Fatalf("Check logged as %v; want one line at DEBUG with grpc.code OK", checks)
	}
	if _, ok := checks[0]["grpc.time_ms"].(float64); !ok {
		t.Errorf("grpc.time_ms = %v, want a number, as at info level", checks[0]["grpc.time_ms"])
	}
}

func TestLoggerSettings(t *testing.T) {
	for _, c := range []struct {
		in   string
		want slog.Level
	}{{"debug", slog.LevelDebug}, {"INFO", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}} {
		if got, err := server.ParseLevel(c.in); err != nil || got != c.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	if _, err := server.ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("ParseLevel(loud) = %v; want an error naming it", err)
	}
	if _, err := server.NewLogger(&bytes.Buffer{}, "xml", slog.LevelInfo); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("NewLogger(xml) = %v; want an error naming it", err)
	}
	var text bytes.Buffer
	logger, err := server.NewLogger(&text, "text", slog.LevelWarn)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("dropped")
	logger.Warn("kept", "k", 1)
	if got := text.String(); strings.Contains(got, "dropped") || !strings.Contains(got, "level=WARN msg=kept k=1") {
		t.Errorf("text log at warn = %q", got)
	}
}

// Anyone may make calls without credentials, as fast as the server refuses
// them: their lines are bounded as the refusals before authentication are,
// a burst then a few a second, a line saying how many it left out, at
// debug level too; a caller's refusals are logged within a larger
// budget of its own (TestOneCallersRefusalsNeitherFloodTheLogNorHideAnothers).
func TestCallsWithoutCredentialsDoNotFloodTheLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			logs := &logBuffer{}
			logger, err := server.NewLogger(logs, "json", level)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			token := newToken(t)
			writeCallers(t, dir+"/callers.yaml", "callers:\n  - {name: backend, kind: admin, token_sha256: "+hashOf(token)+"}\n")
			src, err := server.NewCallerSource(dir+"/callers.yaml", logger)
			if err != nil {
				t.Fatal(err)
			}
			f := startServerWith(t, dir, logger, func(*authz.Engine) []grpc.ServerOption {
				return []grpc.ServerOption{server.WithCallers(src)}
			})
			const calls = 200
			// Health calls need no credentials: their refusals share the
			// budget.
			health := healthpb.NewHealthClient(f.conn)
			long := strings.Repeat("x", 4000)
			for range calls {
				_, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "root"})
				wantCode(t, err, codes.Unauthenticated)
				_, err = health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: long})
				wantCode(t, err, codes.InvalidArgument)
				w, err := f.authz.Watch(f.ctx(), &usherv1.WatchRequest{})
				if err == nil {
					_, err = w.Recv()
				}
				wantCode(t, err, codes.Unauthenticated)
			}
			// The limiter lets one more line through each half second: that
			// line says how many were left out.
			time.Sleep(600 * time.Millisecond)
			_, err = f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "root"})
			wantCode(t, err, codes.Unauthenticated)
			authed := grpc.WithPerRPCCredentials(bearer(token))
			conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), authed)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for range 20 {
				_, err := usherv1.NewAuthorizationServiceClient(conn).Check(f.ctx(), &usherv1.CheckRequest{Subject: "a", Permission: "join-call", Resource: "root"})
				wantCode(t, err, codes.InvalidArgument)
			}

			var refused, invalid int
			var left float64
			for _, r := range finishedCalls(jsonLines(t, logs.String())) {
				switch {
				case r["grpc.code"] == "Unauthenticated", r["grpc.service"] == "grpc.health.v1.Health":
					refused++
					n, _ := r["not_logged_since_last"].(float64)
					left += n
				case r["grpc.code"] == "InvalidArgument":
					invalid++
				}
			}
			// A burst of 5, then 2 a second: the calls take well under 10 s.
			if refused < 1 || refused > 30 {
				t.Errorf("%d lines of the %d calls without credentials; want a few", refused, 3*calls)
			}
			if refused+int(left) != 3*calls+1 {
				t.Errorf("%d lines said %v were left out, of %d calls; want every call logged or counted", refused, left, 3*calls+1)
			}
			if invalid != 20 {
				t.Errorf("%d lines of the 20 invalid checks by a caller; want every one", invalid)
			}
		})
	}
}

// A caller refused in a loop, by its calls or by its streams, gets a burst
// of lines and then a few a second, each line saying how many it left out;
// another caller's refusals are logged beside them all the same. Without a
// callers file, every caller is the anonymous one, and is bounded alike.
func TestOneCallersRefusalsNeitherFloodTheLogNorHideAnothers(t *testing.T) {
	for _, withCallers := range []bool{true, false} {
		t.Run(map[bool]string{true: "callers file", false: "anonymous"}[withCallers], func(t *testing.T) {
			logs := &logBuffer{}
			logger, err := server.NewLogger(logs, "json", slog.LevelInfo)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			hogToken, otherToken := newToken(t), newToken(t)
			var opts func(*authz.Engine) []grpc.ServerOption
			if withCallers {
				writeCallers(t, dir+"/callers.yaml", "callers:\n"+
					"  - {name: hog, kind: check, token_sha256: "+hashOf(hogToken)+"}\n"+
					"  - {name: other, kind: check, token_sha256: "+hashOf(otherToken)+"}\n")
				src, err := server.NewCallerSource(dir+"/callers.yaml", logger)
				if err != nil {
					t.Fatal(err)
				}
				opts = func(*authz.Engine) []grpc.ServerOption { return []grpc.ServerOption{server.WithCallers(src)} }
			}
			f := startServerWith(t, dir, logger, opts)
			dial := func(token string) usherv1.AuthorizationServiceClient {
				conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(token)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				return usherv1.NewAuthorizationServiceClient(conn)
			}
			hog, other := dial(hogToken), dial(otherToken)
			invalid := &usherv1.CheckRequest{Subject: "a", Permission: "join-call", Resource: "root"}

			const calls, streams = 300, 100
			start := time.Now()
			for range calls {
				_, err := hog.Check(f.ctx(), invalid)
				wantCode(t, err, codes.InvalidArgument)
			}
			for range streams {
				st := refusedWatch(t, hog, &usherv1.WatchRequest{AfterRevision: 1 << 40})
				wantCode(t, st.Err(), codes.OutOfRange)
			}
			for range 5 {
				_, err := other.Check(f.ctx(), &usherv1.CheckRequest{Subject: "b", Permission: "join-call", Resource: "root"})
				wantCode(t, err, codes.InvalidArgument)
			}
			// The budget gives one more line each tenth of a second: that line
			// says how many were left out.
			time.Sleep(300 * time.Millisecond)
			_, err = hog.Check(f.ctx(), invalid)
			wantCode(t, err, codes.InvalidArgument)
			elapsed := time.Since(start)

			// The anonymous caller is one: the other's refusals count against
			// the same budget.
			var lines, others int
			var left float64
			for _, r := range finishedCalls(jsonLines(t, logs.String())) {
				msg, _ := r["grpc.error"].(string)
				if withCallers && strings.Contains(msg, `"b"`) {
					others++
					continue
				}
				lines++
				n, _ := r["not_logged_since_last"].(float64)
				left += n
			}
			total := calls + streams + 1
			if !withCallers {
				total += 5
			}
			if most := 50 + int(elapsed.Seconds()*10) + 1; lines > most {
				t.Errorf("%d lines of the %d refusals of one caller in %v; want at most %d", lines, total, elapsed.Round(time.Millisecond), most)
			}
			if lines < 50 {
				t.Errorf("%d lines of the %d refusals of one caller; want its first 50 at least", lines, total)
			}
			if lines+int(left) != total {
				t.Errorf("%d lines said %v were left out, of %d refusals; want every refusal logged or counted", lines, left, total)
			}
			if withCallers && others != 5 {
				t.Errorf("%d lines of another caller's 5 refusals; want every one", others)
			}
		})
	}
}
