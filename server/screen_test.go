package server_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/server"
)

// A check caller's request is decoded, and 4 MiB of empty repeated entries
// decode into some 70 times that: such a request is refused from its
// encoding, before it is decoded, with the status the method gives once it
// has decoded it, and costs little more than its own bytes.
func TestRequestsThatWouldDecodeIntoManyTimesTheirSizeAreRefusedFirst(t *testing.T) {
	w := newAuthWorld(t)
	// Each entry is an empty message: a tag and a zero length.
	entries := func(tag byte, n int) []byte { return bytes.Repeat([]byte{tag, 0}, n) }
	nest := func(field protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), inner)
	}
	// Envoy's headers: attributes (1), request (4), http (2), header_map
	// (13), its headers (1) repeated.
	headers := func(n int) []byte { return nest(1, nest(4, nest(2, nest(13, entries(0x0a, n))))) }
	huge := (server.MaxMessageSize - 128) / 2
	batchTooLarge := func(n int) refusal {
		return refusal{reason: "INVALID_FIELD", field: "checks", value: fmt.Sprint(n)}
	}
	envoyTooLarge := refusal{reason: "INVALID_FIELD", field: "attributes", value: fmt.Sprintf("more than %d fields", server.MaxEnvoyFields)}
	for _, c := range []struct {
		name, method string
		body         []byte
		want         refusal
		message      string
	}{
		{"a CheckBatch of two million checks", "/usher.v1.AuthorizationService/CheckBatch", entries(0x0a, huge),
			batchTooLarge(huge), `checks "2097088": a batch holds 1 to 1000 checks`},
		// Cut short: the decoder would read every check before it found
		// the end missing.
		{"a CheckBatch of two million checks cut short", "/usher.v1.AuthorizationService/CheckBatch", append(entries(0x0a, huge), 0x0a, 5),
			batchTooLarge(huge), `checks "2097088": a batch holds 1 to 1000 checks`},
		{"a CheckBatch of 1001 checks", "/usher.v1.AuthorizationService/CheckBatch", entries(0x0a, server.MaxBatch+1),
			batchTooLarge(server.MaxBatch + 1), `checks "1001": a batch holds 1 to 1000 checks`},
		{"Envoy's Check of two million headers", "/envoy.service.auth.v3.Authorization/Check", headers(huge),
			envoyTooLarge, "a CheckRequest holds at most 10000 fields"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Decoded, two million entries took 280 MB.
			refusedUnread(t, w.dial(credential{token: w.checkToken}), c.method, c.body, c.want, c.message)
		})
	}
	// Refused calls are logged as any other.
	if !strings.Contains(w.logs.String(), "grpc.code=InvalidArgument") {
		t.Errorf("refused calls were not logged; logs:\n%s", w.logs.String())
	}
}

// An admin's PutRole, Block, PutAdmission and ApplyPolicy carry lists of
// names, each at most a thousand long (a policy's within its roles,
// permissions and admission rules), and 4 MiB of empty names decode into
// some 40 times that: such a request is refused from its encoding, before
// it is decoded, with the status the method gives once it has decoded it;
// a role, block, rule or policy malformed before the list is refused for
// that first, as then.
func TestListsOfNamesFarPastTheirLimitsAreRefusedFirst(t *testing.T) {
	w := newAuthWorld(t)
	field := func(num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	// Each name is empty: a tag and a zero length.
	names := func(num protowire.Number, n int) []byte { return bytes.Repeat(field(num, ""), n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	huge := (server.MaxMessageSize - 128) / 2
	role := func(name string, lists []byte) []byte {
		return field(1, string(cat(field(1, name), field(2, "root"), lists)))
	}
	rule := func(typ string, lists []byte) []byte {
		return cat(field(2, typ), field(3, "join-call"), lists)
	}
	// A LiveKit mapping (13) of a rule whose can_publish_sources (3) maps
	// n sources, named by numbers, to nothing: a key (1) and no value.
	sources := func(n int) []byte {
		var entries []byte
		for i := range n {
			entries = append(entries, field(3, string(field(1, strconv.Itoa(i))))...)
		}
		return field(13, string(cat(field(1, "join-call"), entries)))
	}
	// An ApplyPolicyRequest's policy of these permissions (1), roles (3)
	// and admission rules (7).
	policy := func(entries ...[]byte) []byte { return field(1, string(cat(entries...))) }
	permission := func(name string, parents []byte) []byte { return field(1, string(cat(field(1, name), parents))) }
	policyRole := func(name string, lists []byte) []byte {
		return field(3, string(cat(field(1, name), field(2, "root"), lists)))
	}
	for _, c := range []struct {
		name, method string
		body         []byte
		want         refusal
		message      string
	}{
		{"a role of two million permissions", "/usher.v1.AdminService/PutRole", role("host", names(3, huge)),
			refusal{reason: "INVALID_FIELD", field: "role.permissions", value: fmt.Sprint(huge)},
			"at most 1000 permissions in a role are allowed"},
		{"a role of two million assignable roles", "/usher.v1.AdminService/PutRole", role("host", names(4, huge)),
			refusal{reason: "INVALID_FIELD", field: "role.assignable_roles", value: fmt.Sprint(huge)},
			"at most 1000 assignable roles in a role are allowed"},
		{"a role bindable on two million types", "/usher.v1.AdminService/PutRole", role("host", names(5, huge)),
			refusal{reason: "INVALID_FIELD", field: "role.bindable_on", value: fmt.Sprint(huge)},
			"at most 100 resource types in a role's bindable_on are allowed"},
		{"a role of a malformed name and two million permissions", "/usher.v1.AdminService/PutRole", role("Host", names(3, huge)),
			refusal{reason: "INVALID_FIELD", field: "role.name", value: "Host"}, `role.name "Host"`},
		{"a block of two million permissions", "/usher.v1.AdminService/Block",
			cat(field(1, "user:dana"), field(2, "root"), names(3, huge)),
			refusal{reason: "INVALID_FIELD", field: "permissions", value: fmt.Sprint(huge)},
			"at most 1000 permissions in a block are allowed"},
		{"a block of a malformed subject and two million permissions", "/usher.v1.AdminService/Block",
			cat(field(1, "dana"), field(2, "root"), names(3, huge)),
			refusal{reason: "INVALID_FIELD", field: "subject", value: "dana"}, `subject "dana"`},
		// The decoder would read every name before the string that is not
		// UTF-8, after them.
		{"a role of two million permissions, then a name that is not UTF-8", "/usher.v1.AdminService/PutRole",
			field(1, string(cat(names(3, huge), field(2, "root"), field(1, "host\xff")))),
			refusal{reason: "INVALID_FIELD", field: "role.name", value: "host\uFFFD"}, `role.name "host\xff": not UTF-8`},
		{"a role of two million permissions, then one that is not UTF-8", "/usher.v1.AdminService/PutRole",
			role("host", cat(names(3, huge), field(3, "call.\xff"))),
			refusal{reason: "INVALID_FIELD", field: fmt.Sprintf("role.permissions[%d]", huge), value: "call.\uFFFD"},
			fmt.Sprintf(`role.permissions[%d] "call.\xff": not UTF-8`, huge)},
		{"a block of two million permissions, then a subject that is not UTF-8", "/usher.v1.AdminService/Block",
			cat(names(3, huge), field(2, "root"), field(1, "user:\xff")),
			refusal{reason: "INVALID_FIELD", field: "subject", value: "user:\uFFFD"}, `subject "user:\xff": not UTF-8`},
		{"an admission rule of two million uncounted roles", "/usher.v1.AdminService/PutAdmission",
			field(1, string(rule("call", names(10, huge)))),
			refusal{reason: "INVALID_FIELD", field: "admission.uncounted_roles", value: fmt.Sprint(huge)}, "at most 64 roles"},
		{"an admission rule of two million exclusive roles", "/usher.v1.AdminService/PutAdmission",
			field(1, string(rule("call", names(11, huge)))),
			refusal{reason: "INVALID_FIELD", field: "admission.exclusive_roles", value: fmt.Sprint(huge)}, "at most 64 roles"},
		{"an admission rule of two million exclusive permissions, given in two halves", "/usher.v1.AdminService/PutAdmission",
			cat(field(1, string(rule("call", names(14, huge/2)))), field(1, string(names(14, huge/2)))),
			refusal{reason: "INVALID_FIELD", field: "admission.exclusive_permissions", value: fmt.Sprint(huge / 2 * 2)}, "at most 64 permissions"},
		{"an admission rule of a malformed type and two million uncounted roles", "/usher.v1.AdminService/PutAdmission",
			field(1, string(rule("Call", names(10, huge)))),
			refusal{reason: "INVALID_FIELD", field: "admission.resource_type", value: "Call"}, `admission.resource_type "Call"`},
		{"an admission rule of two million uncounted roles, then a type that is not UTF-8", "/usher.v1.AdminService/PutAdmission",
			field(1, string(cat(names(10, huge), field(2, "call\xff")))),
			refusal{reason: "INVALID_FIELD", field: "admission.resource_type", value: "call\uFFFD"}, `admission.resource_type "call\xff": not UTF-8`},
		{"a LiveKit mapping of 400,000 track sources", "/usher.v1.AdminService/PutAdmission",
			field(1, string(rule("call", sources(400_000)))),
			refusal{reason: "INVALID_FIELD", field: "admission.livekit.can_publish_sources", value: "0"}, "not a LiveKit track source"},
		{"a LiveKit mapping of 400,000 track sources, given in two halves", "/usher.v1.AdminService/PutAdmission",
			cat(field(1, string(rule("call", sources(200_000)))), field(1, string(sources(200_000)))),
			refusal{reason: "INVALID_FIELD", field: "admission.livekit.can_publish_sources", value: "0"}, "not a LiveKit track source"},
		{"a policy's role of two million permissions", "/usher.v1.AdminService/ApplyPolicy",
			policy(permission("join-call", nil), policyRole("guest", nil), policyRole("host", names(3, huge))),
			refusal{reason: "INVALID_FIELD", field: "policy.roles[1].permissions", value: fmt.Sprint(huge)},
			"at most 1000 permissions in a role are allowed"},
		{"a policy's role bindable on two million types", "/usher.v1.AdminService/ApplyPolicy",
			policy(policyRole("host", names(5, huge))),
			refusal{reason: "INVALID_FIELD", field: "policy.roles[0].bindable_on", value: fmt.Sprint(huge)},
			"at most 100 resource types in a role's bindable_on are allowed"},
		{"a policy's permission of two million parents", "/usher.v1.AdminService/ApplyPolicy",
			policy(permission("join-call", names(2, huge))),
			refusal{reason: "INVALID_FIELD", field: "policy.permissions[0].parents", value: fmt.Sprint(huge)},
			"at most 100 parents of a permission are allowed"},
		{"a policy's admission rule of two million exclusive roles", "/usher.v1.AdminService/ApplyPolicy",
			policy(field(7, string(rule("call", names(11, huge))))),
			refusal{reason: "INVALID_FIELD", field: "policy.admissions[0].exclusive_roles", value: fmt.Sprint(huge)}, "at most 64 roles"},
		{"a policy of a malformed permission and a role of two million permissions", "/usher.v1.AdminService/ApplyPolicy",
			policy(permission("Join", nil), policyRole("host", names(3, huge))),
			refusal{reason: "INVALID_FIELD", field: "policy.permissions[0].name", value: "Join"}, `policy.permissions[0].name "Join"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			revision := func() authz.Revision {
				r, err := w.store.Revision(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			before := revision()
			// Decoded, two million names took some 60 MB.
			refusedUnread(t, w.dial(credential{token: w.adminToken}), c.method, c.body, c.want, c.message)
			if after := revision(); after != before {
				t.Errorf("the refused calls wrote: revision %d, then %d", before, after)
			}
		})
	}
}

// A batch of the most checks allowed, and an Envoy request of the most
// fields, are decoded and answered as ever, by a server without callers
// too.
func TestRequestsAtTheScreensLimitsAreAnswered(t *testing.T) {
	f := newServer(t)
	item := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType),
		[]byte("\x0a\x09user:dana\x12\x09join-call\x1a\x04root"))
	var reply []byte
	err := f.conn.Invoke(f.ctx(), "/usher.v1.AuthorizationService/CheckBatch", bytes.Repeat(item, server.MaxBatch), &reply,
		grpc.ForceCodec(bytesCodec{}))
	if err != nil {
		t.Fatalf("a CheckBatch of %d checks: %v", server.MaxBatch, err)
	}
	st := wantCode(t, invokeRaw(f.ctx(), f.conn, "/usher.v1.AuthorizationService/CheckBatch", bytes.Repeat(item, server.MaxBatch+1)),
		codes.InvalidArgument)
	wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: "checks", value: "1001"})
}

// A compressed request is refused unread, whatever the method and whoever
// the caller: a few kilobytes of gzip would inflate into a 4 MiB request
// that no limit on the bytes arriving counts.
func TestCompressedRequestsAreRefusedUnread(t *testing.T) {
	w := newAuthWorld(t)
	// 4 MiB of one letter, a few kilobytes compressed: a health Check's
	// service name, a Check's subject.
	name := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), bytes.Repeat([]byte("a"), server.MaxMessageSize-16))
	stream := func(method string) func(context.Context, *grpc.ClientConn) error {
		return func(ctx context.Context, conn *grpc.ClientConn) error {
			desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: strings.Contains(method, "Reflection")}
			s, err := conn.NewStream(ctx, desc, method, grpc.ForceCodec(bytesCodec{}), grpc.UseCompressor(gzip.Name))
			if err != nil {
				return err
			}
			_ = s.SendMsg(name) // io.EOF if the server has ended the stream: RecvMsg says how
			var reply []byte
			return s.RecvMsg(&reply)
		}
	}
	unary := func(method string) func(context.Context, *grpc.ClientConn) error {
		return func(ctx context.Context, conn *grpc.ClientConn) error {
			var reply []byte
			return conn.Invoke(ctx, method, name, &reply, grpc.ForceCodec(bytesCodec{}), grpc.UseCompressor(gzip.Name))
		}
	}
	for _, c := range []struct {
		name string
		cred credential
		call func(context.Context, *grpc.ClientConn) error
	}{
		{"a health Check without credentials", credential{}, unary("/grpc.health.v1.Health/Check")},
		{"a health Watch without credentials", credential{}, stream("/grpc.health.v1.Health/Watch")},
		{"a Check by a check caller", credential{token: w.checkToken}, unary("/usher.v1.AuthorizationService/Check")},
		{"a Watch by a check caller", credential{token: w.checkToken}, stream("/usher.v1.AuthorizationService/Watch")},
		{"server reflection by a check caller", credential{token: w.checkToken}, stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := w.dial(c.cred)
			wantCode(t, invokeRaw(callCtx(t), conn, "/grpc.health.v1.Health/Check", []byte{}), codes.OK) // connected
			per := allocatedPerCall(3, func() {
				st := wantCode(t, c.call(callCtx(t), conn), codes.Unimplemented)
				wantDetails(t, st, refusal{reason: "COMPRESSED_REQUEST", field: "grpc-encoding", value: "gzip"})
				if want := `grpc-encoding "gzip": this server reads requests only uncompressed`; !strings.Contains(st.Message(), want) {
					t.Errorf("message %q does not say %q", st.Message(), want)
				}
			})
			// The client's compressing, and little else: read, the request
			// took 4 MiB to inflate and 4 MiB more to decode.
			if per > 2<<20 {
				t.Errorf("each refused call allocated %d bytes; want at most 2 MiB", per)
			}
		})
	}
	// Uncompressed, the same calls are answered as ever.
	conn := w.dial(credential{token: w.checkToken})
	if err := checkCall(t, conn); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// A server reflection answer quotes its request, twice for a symbol it does
// not know: a reflection request larger than any name ends the stream
// unread, and one of the usual size is answered.
func TestLargeReflectionRequestsAreRefusedUnread(t *testing.T) {
	w := newAuthWorld(t)
	conn := w.dial(credential{token: w.checkToken})
	symbol := func(n int) []byte { // file_containing_symbol (4)
		return protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), bytes.Repeat([]byte("a"), n))
	}
	ask := func(method string, req []byte) ([]byte, error) {
		s, err := conn.NewStream(callCtx(t), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(bytesCodec{}))
		if err != nil {
			return nil, err
		}
		_ = s.SendMsg(req) // io.EOF if the server has ended the stream: RecvMsg says how
		var reply []byte
		return reply, s.RecvMsg(&reply)
	}
	for _, method := range []string{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} {
		t.Run(method, func(t *testing.T) {
			if reply, err := ask(method, symbol(server.MaxReflectionRequest-8)); err != nil || len(reply) < server.MaxReflectionRequest {
				t.Fatalf("a request of the most bytes read: %d bytes, %v; want an answer quoting it", len(reply), err)
			}
			body := symbol(server.MaxMessageSize - 16)
			per := allocatedPerCall(3, func() {
				_, err := ask(method, body)
				st := wantCode(t, err, codes.InvalidArgument)
				wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: "request", value: fmt.Sprint(len(body))})
				if want := "at most 65536 are read"; !strings.Contains(st.Message(), want) {
					t.Errorf("message %q does not say %q", st.Message(), want)
				}
			})
			// Client and server: the request written and read over TLS.
			// Answered, it took some 7 times its size.
			if per > 3*uint64(len(body)) {
				t.Errorf("each refused request of %d bytes allocated %d bytes; want at most 3 times the request", len(body), per)
			}
		})
	}
}

// refusedUnread calls method with body over conn, three times, and fails
// the test unless each is refused INVALID_ARGUMENT with want's details and
// a message saying message, at a cost, client and server (the request
// written and read over TLS), of at most 4 times its size and 1 MiB: not
// what decoding it would cost.
func refusedUnread(t *testing.T, conn *grpc.ClientConn, method string, body []byte, want refusal, message string) {
	t.Helper()
	wantCode(t, invokeRaw(callCtx(t), conn, "/usher.v1.AuthorizationService/GetRevision", []byte{}), codes.OK) // connected
	// One call: what else the process allocates meanwhile is small beside
	// a request far past a limit, and each takes seconds under -race.
	per := allocatedPerCall(1, func() {
		st := wantCode(t, invokeRaw(callCtx(t), conn, method, body), codes.InvalidArgument)
		wantDetails(t, st, want)
		if !strings.Contains(st.Message(), message) {
			t.Errorf("message %q does not say %q", st.Message(), message)
		}
	})
	if per > 4*uint64(len(body))+1<<20 {
		t.Errorf("each refused call of %d bytes allocated %d bytes; want at most 4 times the request and 1 MiB", len(body), per)
	}
}

// allocatedPerCall is what the process allocates, client and server, for
// each of n calls of call.
func allocatedPerCall(n int, call func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		call()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(n)
}
