package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// TracingConfig says where a server's traces go.
type TracingConfig struct {
	// Endpoint is the OTLP/gRPC collector: host:port (TLS) or a URL,
	// http://host:port for plaintext. Empty: the standard
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
	// and without either, no tracing.
	Endpoint string
	// SampleRatio is the share of calls traced that arrive without a
	// sampled trace of their caller's; a caller's sampled trace is always
	// continued.
	SampleRatio float64
	// Version is the service.version traces carry.
	Version string
	// Logger is where OpenTelemetry's errors go (an export that failed, a
	// collector out of reach), as warnings: otherwise they are printed as
	// plain text with Go's standard log, amid the server's own records.
	Logger *slog.Logger
}

// DefaultSampleRatio traces one call in a hundred of those that come
// without a sampled parent: Check's rate would otherwise flood a
// collector.
const DefaultSampleRatio = 0.01

// tracingConfigured says whether c, or the environment, names a collector.
func (c TracingConfig) configured() bool {
	return c.Endpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// StartTracing returns a tracer provider that exports spans in batches over
// OTLP/gRPC, off the calls' path, or nil when no collector is configured.
// Shut it down at exit to send what is buffered. The exporter reads the
// standard OTEL_EXPORTER_OTLP_* settings (headers, certificates,
// timeouts); the resource, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func StartTracing(ctx context.Context, c TracingConfig) (*sdktrace.TracerProvider, error) {
	if !c.configured() {
		return nil, nil
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return nil, fmt.Errorf("trace sample ratio %v: want 0 to 1", c.SampleRatio)
	}
	var opts []otlptracegrpc.Option
	switch {
	case strings.Contains(c.Endpoint, "://"):
		opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
	case c.Endpoint != "":
		opts = append(opts, otlptracegrpc.WithEndpoint(c.Endpoint))
	}
	if c.Logger != nil {
		logger := c.Logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			logger.Warn("OpenTelemetry failed", "error", err)
		}))
	}
	exporter, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "usher")}
	if c.Version != "" {
		attrs = append(attrs, attribute.String("service.version", c.Version))
	}
	// The environment's come last and win.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	), nil
}

// WithTracing makes New trace every call but health checks into tp, with
// otelgrpc's stats handler, continuing the W3C trace context a caller
// sends. With WithCallers, only a call with a known credential continues
// its trace context: a stranger's sampled traceparent would otherwise have
// every call it makes, each refused, traced and exported. Without it New
// installs no stats handler: tracing costs nothing.
func WithTracing(tp trace.TracerProvider) grpc.ServerOption {
	return tracingOption{tp: tp}
}

// tracingOption carries a TracerProvider through New's grpc.ServerOption
// list; gRPC itself ignores it.
type tracingOption struct {
	grpc.EmptyServerOption
	tp trace.TracerProvider
}

// tracing is the stats handler that traces into the TracerProvider among
// opts, trusting the trace context of the callers of src (every caller's
// when src is nil), or nil when opts has none.
func tracing(opts []grpc.ServerOption, src *CallerSource) grpc.ServerOption {
	var tp trace.TracerProvider
	for _, o := range opts {
		if t, ok := o.(tracingOption); ok {
			tp = t.tp
		}
	}
	if tp == nil {
		return nil
	}
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		// Prometheus measures calls; otelgrpc's metrics would count them
		// twice.
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
		otelgrpc.WithPropagators(callersContext{
			TextMapPropagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
			src:               src,
		}),
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	))
}

// callersContext extracts the trace context of a call only when the call
// carries a known credential, or the server has no callers file.
type callersContext struct {
	propagation.TextMapPropagator
	src *CallerSource
}

func (p callersContext) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if p.src != nil {
		if _, err := (authenticator{src: p.src}).identify(ctx); err != nil {
			return ctx
		}
	}
	return p.TextMapPropagator.Extract(ctx, carrier)
}
