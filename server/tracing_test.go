package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// recordingProvider records every span it ends.
func recordingProvider() (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample())), rec
}

func TestTracingIsOffUnlessConfigured(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, err := server.StartTracing(t.Context(), server.TracingConfig{SampleRatio: server.DefaultSampleRatio})
	if tp != nil || err != nil {
		t.Fatalf("StartTracing without an endpoint = %v, %v; want no provider", tp, err)
	}

	// A server without WithTracing has no stats handler: even with a
	// global provider that records, a call leaves no span.
	global, rec := recordingProvider()
	otel.SetTracerProvider(global)
	t.Cleanup(func() { otel.SetTracerProvider(tracenoop.NewTracerProvider()) })
	f := newServer(t)
	f.putResource("account:acme", "")
	f.check("user:a", "join-call", "account:acme")
	f.stop()
	if spans := rec.Ended(); len(spans) != 0 {
		t.Errorf("a server without tracing made %d spans, the first %q", len(spans), spans[0].Name())
	}
}

func TestStartTracingWithAnEndpoint(t *testing.T) {
	for _, c := range []struct {
		name string
		env  string
		cfg  server.TracingConfig
	}{
		{"the flag's host:port", "", server.TracingConfig{Endpoint: "127.0.0.1:4317", SampleRatio: 1}},
		{"the flag's URL", "", server.TracingConfig{Endpoint: "http://127.0.0.1:4317", SampleRatio: 1}},
		{"the standard environment variable", "http://127.0.0.1:4317", server.TracingConfig{SampleRatio: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.env)
			tp, err := server.StartTracing(t.Context(), c.cfg)
			if err != nil || tp == nil {
				t.Fatalf("StartTracing = %v, %v; want a provider", tp, err)
			}
			// Nothing listens there: shutting down gives up on the
			// batch rather than hang.
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_ = tp.Shutdown(ctx)
		})
	}
	if _, err := server.StartTracing(t.Context(), server.TracingConfig{Endpoint: "127.0.0.1:4317", SampleRatio: 2}); err == nil {
		t.Error("StartTracing took a sample ratio of 2")
	}
}

func TestTracingMakesASpanPerCallContinuingTheCallers(t *testing.T) {
	tp, rec := recordingProvider()
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(*authz.Engine) []grpc.ServerOption {
		return []grpc.ServerOption{server.WithTracing(tp)}
	})
	f.putResource("account:acme", "")
	if _, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// A caller's trace context, as W3C traceparent.
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), parent), carrier)
	ctx := metadata.AppendToOutgoingContext(f.ctx(), "traceparent", carrier.Get("traceparent"))
	if _, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	// A server span ends after its response has gone out; once the server
	// has stopped, every one has.
	f.stop()
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	if _, ok := byName["grpc.health.v1.Health/Check"]; ok {
		t.Error("a health check was traced")
	}
	if _, ok := byName["usher.v1.AdminService/PutResource"]; !ok {
		t.Errorf("no span for PutResource among %v", names(rec.Ended()))
	}
	check, ok := byName["usher.v1.AuthorizationService/Check"]
	if !ok {
		t.Fatalf("no span for Check among %v", names(rec.Ended()))
	}
	if check.SpanKind() != trace.SpanKindServer {
		t.Errorf("Check's span is of kind %v", check.SpanKind())
	}
	if check.Parent().TraceID() != parent.TraceID() || check.Parent().SpanID() != parent.SpanID() {
		t.Errorf("Check's span has parent %v, want the caller's %v", check.Parent(), parent)
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// A call without a known credential is traced as one that sends no trace
// context: a stranger's sampled traceparent would otherwise have every
// call it makes, each refused, traced and sent to the collector, taking
// the place of the callers' spans there. A caller's is continued.
func TestAStrangersTraceContextIsNotContinued(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	// Only a sampled parent is traced.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	token, _, src := hogAndOther(t)
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(*authz.Engine) []grpc.ServerOption {
		return []grpc.ServerOption{server.WithTracing(tp), server.WithCallers(src)}
	})
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), parent), carrier)
	check := func(md ...string) error {
		ctx := metadata.AppendToOutgoingContext(f.ctx(), append([]string{"traceparent", carrier.Get("traceparent")}, md...)...)
		_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "root"})
		return err
	}
	for _, md := range [][]string{nil, {"authorization", "bearer not-a-token"}} {
		wantCode(t, check(md...), codes.Unauthenticated)
	}
	if err := check("authorization", "bearer "+token); err != nil {
		t.Fatal(err)
	}
	f.stop()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans %v for two calls without a known credential and one with; want the one's", len(spans), names(spans))
	}
	if spans[0].Parent().TraceID() != parent.TraceID() {
		t.Errorf("the caller's Check has parent %v, want the caller's %v", spans[0].Parent(), parent)
	}
}

// OpenTelemetry's own errors (an export that failed) go to the server's
// logger, as records in its format, rather than as plain text through Go's
// standard log amid JSON lines.
func TestTracingErrorsGoToTheServersLog(t *testing.T) {
	var buf strings.Builder // written only by otel.Handle below, in this goroutine
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	tp, err := server.StartTracing(t.Context(), server.TracingConfig{Endpoint: "http://127.0.0.1:4317", SampleRatio: 1, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	}()
	otel.Handle(errors.New("traces export: collector out of reach"))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {})) // the buffer is read below
	var rec struct{ Level, Msg, Error string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &rec); err != nil || rec.Level != "WARN" || rec.Error != "traces export: collector out of reach" {
		t.Errorf("the server's log holds %q (%v), want one JSON warning with the error", buf.String(), err)
	}
}
