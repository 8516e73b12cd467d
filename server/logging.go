package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// NewLogger returns a logger that writes records of level and above to w,
// as JSON lines (format "json") or slog's key=value text (format "text").
func NewLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", format)
}

// ParseLevel reads a log level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}

// callLevel keeps successful calls, the hot path among them, at debug level
// and logs refusals and failures.
func callLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK:
		return logging.LevelDebug
	case codes.Internal, codes.Unavailable, codes.DataLoss, codes.Unknown:
		return logging.LevelError
	default:
		return logging.LevelInfo
	}
}

// callLogOptions are go-grpc-middleware's logging options for every call
// logged: the finish only, at callLevel, its duration a number.
var callLogOptions = []logging.Option{
	logging.WithLogOnEvents(logging.FinishCall),
	logging.WithLevels(callLevel),
	logging.WithDurationField(func(d time.Duration) logging.Fields { return logging.Fields{timeField, millis(d)} }),
}

const timeField = "grpc.time_ms"

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// refusedLines bounds the log lines of refused calls, so that no caller can
// flood the log or make logging the cost of what it sends. Calls refused
// for want of credentials, and refused health calls, which need none,
// share one budget as the refusals before authentication do (refusalLog):
// anyone may make them as fast as the server refuses them, some 37,000 a
// second from one client on loopback, 15 MB of log a second. Every caller
// of the callers file has a budget of its own, larger, so that one caller
// refused in a loop neither floods the log nor hides another's refusals;
// without a callers file, every caller is the anonymous one, and shares
// one. A line says how many of its budget were not logged since the
// previous one.
type refusedLines struct {
	strangers lineBudget
	// src identifies the caller of a refused stream, which is
	// authenticated inside the logging interceptor; nil without a callers
	// file.
	src *CallerSource

	mu      sync.Mutex
	callers map[string]lineBudget // by caller name; "" is the anonymous caller
}

// A caller's refused calls are logged at most callerLineBurst at once and
// callerLinesPerSecond a second; a server keeps the budgets of at most
// maxLineBudgets callers, and lets the callers past them share one.
const (
	callerLinesPerSecond = 10
	callerLineBurst      = 50
	maxLineBudgets       = 4096
)

// overflowCaller names the budget the callers past maxLineBudgets share;
// no caller of a callers file has a name with a space in it.
const overflowCaller = " others"

func newRefusedLines(src *CallerSource) *refusedLines {
	return &refusedLines{strangers: newLineBudget(refusalsPerSecond, refusalBurst), src: src, callers: map[string]lineBudget{}}
}

// allow says whether to log one more line of a call of service refused
// with code, and how many lines of its budget were left out since the
// last.
func (l *refusedLines) allow(ctx context.Context, service string, code codes.Code) (ok bool, dropped int64) {
	if code == codes.Unauthenticated || service == healthpb.Health_ServiceDesc.ServiceName {
		return l.strangers.take()
	}
	name, known := l.callerOf(ctx)
	if !known {
		return l.strangers.take()
	}
	return l.budgetOf(name).take()
}

// callerOf names the caller of a refused call: the one authentication
// found, or, for a stream, which the logging interceptor sees before it is
// authenticated, the one its credentials name; "" for the anonymous
// caller of a server without a callers file. known is false for a call
// whose credentials name none.
func (l *refusedLines) callerOf(ctx context.Context) (name string, known bool) {
	if c, ok := callerIn(ctx); ok {
		return c.Name, true
	}
	if l.src == nil {
		return "", true
	}
	c, err := authenticator{src: l.src}.identify(ctx)
	if err != nil {
		return "", false
	}
	return c.Name, true
}

func (l *refusedLines) budgetOf(name string) lineBudget {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.callers[name]
	if ok {
		return b
	}
	if len(l.callers) >= maxLineBudgets {
		name = overflowCaller
		if b, ok := l.callers[name]; ok {
			return b
		}
	}
	b = newLineBudget(callerLinesPerSecond, callerLineBurst)
	l.callers[name] = b
	return b
}

// unaryCallLog returns the interceptor that logs finished unary calls.
//
// go-grpc-middleware's builds a call's fields and formats its start time
// before it knows the call's outcome, microseconds spent on every Check
// only for the line to be dropped at info level. So it is installed only
// when logger logs debug, the level of successful calls; otherwise
// refusedCallLog leaves successful calls alone and logs the others with the
// same fields. The logger's level is read once, here.
func unaryCallLog(logger *slog.Logger, u *refusedLines) grpc.UnaryServerInterceptor {
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		return logging.UnaryServerInterceptor(slogLogger(logger, u), callLogOptions...)
	}
	return refusedCallLog(logger, u)
}

// streamCallLog returns the interceptor that logs finished streams: few, and
// long, so go-grpc-middleware's at every level.
func streamCallLog(logger *slog.Logger, u *refusedLines) grpc.StreamServerInterceptor {
	return logging.StreamServerInterceptor(slogLogger(logger, u), callLogOptions...)
}

// refusedCallLog logs the unary calls that end with an error, as
// go-grpc-middleware's logging interceptor would, and does nothing more
// than read the clock for the others.
func refusedCallLog(logger *slog.Logger, u *refusedLines) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		code := status.Code(err)
		level := slog.Level(callLevel(code))
		if !logger.Enabled(ctx, level) {
			return resp, err
		}
		service, method := splitMethod(info.FullMethod)
		ok, dropped := u.allow(ctx, service, code)
		if !ok {
			return resp, err
		}
		attrs := []slog.Attr{
			slog.String(logging.SystemTag[0], logging.SystemTag[1]),
			slog.String(logging.ComponentFieldKey, logging.KindServerFieldValue),
			slog.String(logging.ServiceFieldKey, service),
			slog.String(logging.MethodFieldKey, method),
			slog.String(logging.MethodTypeFieldKey, "unary"),
		}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
		}
		attrs = append(attrs,
			slog.String("grpc.code", code.String()),
			slog.String("grpc.error", err.Error()),
			slog.Float64(timeField, millis(time.Since(start))))
		if dropped > 0 {
			attrs = append(attrs, slog.Int64(notLoggedField, dropped))
		}
		logger.LogAttrs(ctx, level, "finished call", attrs...)
		return resp, err
	}
}

// splitMethod splits "/package.Service/Method".
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// slogLogger is l as go-grpc-middleware's logger, its lines of calls
// refused for want of credentials bounded by u.
func slogLogger(l *slog.Logger, u *refusedLines) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		service, code := "", codes.OK
		for i := 0; i+1 < len(fields); i += 2 {
			switch fields[i] {
			case logging.ServiceFieldKey:
				service, _ = fields[i+1].(string)
			case "grpc.code":
				if s, _ := fields[i+1].(string); s != codes.OK.String() {
					code = codes.Unknown // refused; Unauthenticated is told apart below
					if s == codes.Unauthenticated.String() {
						code = codes.Unauthenticated
					}
				}
			}
		}
		if code != codes.OK {
			ok, dropped := u.allow(ctx, service, code)
			if !ok {
				return
			}
			if dropped > 0 {
				fields = append(fields, notLoggedField, dropped)
			}
		}
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
