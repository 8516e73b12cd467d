package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// WithCallers makes the server authenticate every call (health checks
// excepted) against the callers src holds, and refuse what a caller's kind
// does not allow. Without it, every caller is anonymous and may call
// everything.
func WithCallers(src *CallerSource) grpc.ServerOption {
	return callersOption{src: src}
}

// callersOption carries a CallerSource through New's grpc.ServerOption list;
// gRPC itself ignores it.
type callersOption struct {
	grpc.EmptyServerOption
	src *CallerSource
}

// callerKey is the context key of the authenticated Caller.
type callerKey struct{}

// services each kind may call besides its own; health is open to all.
var (
	healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"
	// checkKind are the services check callers (media servers' sidecars,
	// Envoy) may call.
	checkKind = []string{
		"/" + usherv1.AuthorizationService_ServiceDesc.ServiceName + "/",
		"/" + usherv1.AdmissionService_ServiceDesc.ServiceName + "/",
		"/" + authv3.Authorization_ServiceDesc.ServiceName + "/",
	}
	anyKind = []string{
		"/" + reflectionv1.ServerReflection_ServiceDesc.ServiceName + "/",
		"/" + reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName + "/",
	}
)

// authenticator is the AuthFunc of go-grpc-middleware's auth interceptor.
type authenticator struct {
	src *CallerSource
}

// authenticate identifies the caller of a call and checks that its kind may
// call the method. Health checks pass without credentials, for load
// balancers' probes.
func (a authenticator) authenticate(ctx context.Context) (context.Context, error) {
	if _, done := callerIn(ctx); done {
		return ctx, nil // identified before its request was decoded
	}
	caller, ok, err := a.admit(ctx)
	if err != nil || !ok {
		return ctx, err
	}
	return context.WithValue(ctx, callerKey{}, caller), nil
}

// admit identifies the caller of a call and checks that its kind may call
// the method; ok is false for a health check, which needs no caller.
func (a authenticator) admit(ctx context.Context) (caller Caller, ok bool, err error) {
	method, _ := grpc.Method(ctx)
	if strings.HasPrefix(method, healthPrefix) {
		return Caller{}, false, nil
	}
	caller, err = a.identify(ctx)
	if err != nil {
		return Caller{}, false, err
	}
	if !caller.Kind.mayCall(method) {
		return Caller{}, false, refuse(codes.PermissionDenied,
			fmt.Sprintf("caller %q is a %s caller and may not call %s: %s callers may call only %s, %s and %s (and server reflection)",
				caller.Name, caller.Kind, method, KindCheck, usherv1.AuthorizationService_ServiceDesc.ServiceName,
				usherv1.AdmissionService_ServiceDesc.ServiceName, authv3.Authorization_ServiceDesc.ServiceName),
			details{reason: reasonCallerKind, meta: map[string]string{"caller": caller.Name, "kind": string(caller.Kind), "method": method}})
	}
	return caller, true, nil
}

// callerSource finds the CallerSource among opts, or nil.
func callerSource(opts []grpc.ServerOption) *CallerSource {
	for _, o := range opts {
		if c, ok := o.(callersOption); ok && c.src != nil {
			return c.src
		}
	}
	return nil
}

// decodeAfterAuthentication returns desc with each unary method refusing,
// without decoding its request, a call that authentication refuses.
// grpc-go decodes a unary call's request before any interceptor sees it,
// and decoding can cost many times the request's size: a CheckBatch of two
// million empty checks, 4 MiB, decodes into some 280 MB. The refusal still
// goes through the interceptors, which log and count it and authenticate
// the call again, so that it reads as before; an admitted call carries its
// caller to them, and is not identified twice.
func (a authenticator) decodeAfterAuthentication(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		handler := d.Methods[i].Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			caller, ok, err := a.admit(ctx)
			if ok {
				ctx = context.WithValue(ctx, callerKey{}, caller)
			}
			if err != nil {
				// The request stays empty, and the method's own handler
				// never runs: past the interceptors, the refusal.
				refused := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
					return interceptor(ctx, req, info, func(context.Context, any) (any, error) { return nil, err })
				}
				return handler(srv, ctx, func(any) error { return nil }, refused)
			}
			return handler(srv, ctx, dec, interceptor)
		}
	}
	return &d
}

// endRevoked ends a stream whose credentials no longer admit it. Each time
// the callers are replaced, the stream's token or certificate is looked at
// again as a new call's would be; a stream of a caller since removed from
// the callers file, or no longer of a kind that may call the method, ends
// with the refusal a new call would get. Without it, a Watch or WatchCall
// opened before a caller was removed would go on sending it every change.
// Streams without a caller (health checks) are let be.
func (a authenticator) endRevoked(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, ok := callerIn(ss.Context()); !ok {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	st := newStanding(a, ctx, cancel)
	// A client certificate is looked at again once it has expired: the
	// stream of a caller identified by it ends then.
	var expired <-chan time.Time
	if cert, until := clientCertificate(ctx); cert != nil {
		st.until.Store(until.UnixNano())
		t := time.NewTimer(time.Until(until) + time.Millisecond)
		defer t.Stop()
		expired = t.C
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if err := st.look(); err != nil {
				endStream(ss.Context(), err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-*st.admitted.Load():
			case <-expired:
				expired = nil
			}
		}
	}()
	wrapped := revocable{middleware.WrapServerStream(ss), st}
	wrapped.WrappedContext = ctx
	err := handler(srv, wrapped)
	var r revoked
	if errors.As(context.Cause(ctx), &r) {
		err = r.refusal
	}
	cancel(nil)
	<-watched
	return err
}

// standing is whether a stream's caller is still admitted: looked at again
// by endRevoked's watcher each time the callers are replaced, and by each
// send that comes before the watcher has looked, so that nothing is sent to
// a caller the callers in force no longer admit.
type standing struct {
	a      authenticator
	ctx    context.Context
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	// admitted is closed once the callers that last admitted the stream
	// are replaced; it is stored only once they have admitted it.
	admitted atomic.Pointer[<-chan struct{}]
	// until is when the client certificate the stream's connection
	// presented expires, in Unix nanoseconds, or zero.
	until atomic.Int64
}

// newStanding returns the standing of the stream of ctx, which is looked
// at before anything is sent: the callers may have been replaced since its
// call was authenticated.
func newStanding(a authenticator, ctx context.Context, cancel context.CancelCauseFunc) *standing {
	s := &standing{a: a, ctx: ctx, cancel: cancel}
	// Closed: the first look is owed.
	replaced := make(chan struct{})
	close(replaced)
	c := (<-chan struct{})(replaced)
	s.admitted.Store(&c)
	return s
}

// look authenticates the stream's call again if the callers have been
// replaced since they last admitted it, or its client certificate has
// expired, and ends its context with the refusal a new call would get.
func (s *standing) look() error {
	if err := s.refused(); err != nil || s.current() {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refused(); err != nil || s.current() {
		return err // looked at meanwhile
	}
	// Taken before the look, so that a replacement during it is not missed.
	c := s.a.src.Changed()
	if _, _, err := s.a.admit(s.ctx); err != nil {
		s.cancel(revoked{err})
		return err
	}
	if s.until.Load() != 0 && !s.fresh() {
		// Admitted by its token, not the expired certificate.
		s.until.Store(0)
	}
	s.admitted.Store(&c)
	return nil
}

// current reports whether the stream's last look still holds.
func (s *standing) current() bool {
	return !closed(*s.admitted.Load()) && s.fresh()
}

// fresh reports whether the client certificate, if any, has not expired.
func (s *standing) fresh() bool {
	until := s.until.Load()
	return until == 0 || time.Now().UnixNano() <= until
}

// refused is the refusal a look has ended the stream with, or nil.
func (s *standing) refused() error {
	var r revoked
	if errors.As(context.Cause(s.ctx), &r) {
		return r.refusal
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// endStream ends the HTTP/2 stream of the call of ctx at once, with err's
// status. A handler sending to a client that has stopped reading, and
// still answers pings, waits in grpc-go for a window that never opens:
// neither its context nor anything it could do reaches that wait, and it
// would hold its stream, and its place in the stream pools, for as long
// as the connection lasts. Ending the stream ends the wait; grpc-go's
// transport stream ends it by WriteStatus, a method beside those of
// grpc.ServerTransportStream. What the client has not read stays queued
// ahead of the status, for a client that reads again.
func endStream(ctx context.Context, err error) {
	if s, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ WriteStatus(*status.Status) error }); ok {
		_ = s.WriteStatus(status.Convert(err))
	}
}

// revocable is a stream that endRevoked may end. Ending its context is
// not enough: a handler that sends without looking at it (a Backup's copy,
// reflection's answers) would go on sending to a caller that may no longer
// read them.
type revocable struct {
	*middleware.WrappedServerStream
	standing *standing
}

// SendMsg sends m unless the callers in force, or the expiry of its client
// certificate, no longer admit the stream's caller; it looks at them again
// itself when endRevoked's watcher has yet to.
func (s revocable) SendMsg(m any) error {
	if err := s.standing.look(); err != nil {
		return err
	}
	return s.WrappedServerStream.SendMsg(m)
}

// revoked is why endRevoked ended a stream: the refusal a new call would
// get.
type revoked struct{ refusal error }

func (r revoked) Error() string { return r.refusal.Error() }

// identify finds the caller by its bearer token or else by its verified
// client certificate. A token that matches nobody is refused even when a
// certificate would match: a caller that sends a wrong token has a bug the
// operator should see.
func (a authenticator) identify(ctx context.Context) (Caller, error) {
	callers := a.src.Current()
	if len(metadata.ValueFromIncomingContext(ctx, "authorization")) > 0 {
		token, err := auth.AuthFromMD(ctx, "bearer")
		// An empty token is no credential: "bearer " would otherwise
		// be the caller whose token_sha256 is the empty string's.
		if err != nil || token == "" {
			return Caller{}, refuse(codes.Unauthenticated, `the authorization header must be "bearer <token>"`,
				details{reason: reasonMalformedAuthorization})
		}
		if c, ok := callers.ByToken(token); ok {
			return c, nil
		}
		return Caller{}, refuse(codes.Unauthenticated, "the bearer token matches no caller", details{reason: reasonBadToken})
	}
	chains := verifiedChains(ctx)
	if cert, until := certificateOf(chains); cert != nil {
		// The handshake verified the certificate when the connection
		// opened, and a connection may stay open for days.
		if time.Now().After(until) {
			subject := distinguishedName(cert)
			return Caller{}, refuse(codes.Unauthenticated,
				fmt.Sprintf("the client certificate %q, or one that signed it, expired at %s: connect again with a renewed one", subject, until.UTC().Format(time.RFC3339)),
				details{reason: reasonExpiredCertificate, meta: map[string]string{"certificate_subject": subject, "not_after": until.UTC().Format(time.RFC3339)}})
		}
		if !callers.trusts(chains) {
			subject := distinguishedName(cert)
			return Caller{}, refuse(codes.Unauthenticated,
				fmt.Sprintf("the client certificate %q was verified by a CA no longer in the client CA file: connect again with a certificate one there signed", subject),
				details{reason: reasonUntrustedCertificate, meta: map[string]string{"certificate_subject": subject}})
		}
		if c, ok := callers.ByCertificate(cert); ok {
			return c, nil
		}
		subject := distinguishedName(cert)
		return Caller{}, refuse(codes.Unauthenticated, fmt.Sprintf("the client certificate %q matches no caller", subject),
			details{reason: reasonUnknownCertificate, meta: map[string]string{"certificate_subject": subject}})
	}
	return Caller{}, refuse(codes.Unauthenticated,
		`no credentials: send "authorization: bearer <token>" metadata or a client certificate`, details{reason: reasonNoCredentials})
}

// clientCertificate is the client's certificate if the TLS handshake
// verified it against the client CA, else nil, and when the last of the
// chains it was verified by expires: the first certificate of the chain to
// expire does.
func clientCertificate(ctx context.Context) (cert *x509.Certificate, until time.Time) {
	return certificateOf(verifiedChains(ctx))
}

// certificateOf is clientCertificate of the chains the handshake verified.
func certificateOf(chains [][]*x509.Certificate) (cert *x509.Certificate, until time.Time) {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return nil, time.Time{}
	}
	for _, chain := range chains {
		if len(chain) == 0 {
			continue
		}
		end := chain[0].NotAfter
		for _, c := range chain[1:] {
			if c.NotAfter.Before(end) {
				end = c.NotAfter
			}
		}
		if end.After(until) {
			until = end
		}
	}
	return chains[0][0], until
}

// verifiedChains are the chains the TLS handshake verified the client's
// certificate by, from it to a client CA, or none.
func verifiedChains(ctx context.Context) [][]*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := authInfo(p).(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.VerifiedChains
}

// mayCall says whether a caller of kind k may call the full method name.
func (k CallerKind) mayCall(method string) bool {
	if k == KindAdmin {
		return true
	}
	for _, prefix := range checkKind {
		if strings.HasPrefix(method, prefix) {
			return true
		}
	}
	for _, prefix := range anyKind {
		if strings.HasPrefix(method, prefix) {
			return true
		}
	}
	return false
}
