package server_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/memory"
)

// FuzzCheckRequest sends arbitrary subject, permission and resource strings
// to the real AuthorizationService.Check over an in-process connection, as
// raw bytes on the wire, so that it sees what any client could send. The
// answer must be a Decision (the one the index gives) or INVALID_ARGUMENT
// naming the first malformed field, or "permission" for an undeclared one,
// or the first string that is not UTF-8, which proto3 requires; never a
// panic or another code.
func FuzzCheckRequest(f *testing.F) {
	f.Add("user:alice", "join-call", "call:acme:1")
	f.Add("user:alice", "read-call", "account:acme")
	f.Add("user:mallory", "join-call", "call:acme:1")
	f.Add("user:alice", "join-call", "call:acme:404")
	f.Add("user:alice", "join-call", "root")
	f.Add("user:alice", "no-such-permission", "call:acme:1")
	f.Add("user:alice", "*", "call:acme:1")
	f.Add("", "", "")
	f.Add("alice", "Join-Call", "call:")
	f.Add("user:alice", "join-call", "call:acme\u200b1")
	f.Add("user:\xff", "join-call", "call:acme:1")
	f.Add("user:"+strings.Repeat("a", 300), "join-call", strings.Repeat("x", 33)+":1")

	idx, conn := checkServer(f)
	f.Fuzz(func(t *testing.T, subject, permission, resource string) {
		var req []byte
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendString(req, subject)
		req = protowire.AppendTag(req, 2, protowire.BytesType)
		req = protowire.AppendString(req, permission)
		req = protowire.AppendTag(req, 3, protowire.BytesType)
		req = protowire.AppendString(req, resource)
		var resp []byte
		err := conn.Invoke(t.Context(), usherv1.AuthorizationService_Check_FullMethodName, &req, &resp, grpc.ForceCodecV2(rawCodec{}))

		st := status.Convert(err)
		if field := notUTF8(subject, permission, resource); field != "" {
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field+" ") || !strings.Contains(st.Message(), "not UTF-8") {
				t.Fatalf("Check(%q, %q, %q) = %v, want INVALID_ARGUMENT naming %s, not UTF-8", subject, permission, resource, err, field)
			}
			return
		}
		field := malformed(subject, permission, resource)
		q := authz.Query{Subject: subject, Permission: permission, Resource: resource}
		var want authz.Decision
		if field == "" {
			var err error
			if want, _, err = idx.Check(q); err != nil {
				field = "permission" // well-formed but not declared
			}
		}
		if field != "" {
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field+" ") {
				t.Fatalf("Check(%q, %q, %q) = %v, want INVALID_ARGUMENT naming %s", subject, permission, resource, err, field)
			}
			return
		}
		if err != nil {
			t.Fatalf("Check(%q, %q, %q) = %v, want a decision", subject, permission, resource, err)
		}
		var got usherv1.CheckResponse
		if err := proto.Unmarshal(resp, &got); err != nil {
			t.Fatalf("the response does not decode: %v", err)
		}
		d := got.GetDecision()
		if d == nil || d.GetAllowed() != want.Allowed || d.GetReason() == usherv1.Reason_REASON_UNSPECIFIED ||
			d.GetRole() != want.Role || d.GetScope() != want.Scope || d.GetBlockReason() != want.BlockReason {
			t.Fatalf("Check(%q, %q, %q) = %v, want %+v", subject, permission, resource, d, want)
		}
	})
}

// malformed names the first field whose shape the edge refuses, in the
// order the handler validates them; "" when all three are well-formed.
func malformed(subject, permission, resource string) string {
	switch {
	case authz.ValidateSubject("subject", subject) != nil:
		return "subject"
	case authz.ValidatePermission("permission", permission) != nil:
		return "permission"
	case authz.ValidateResource("resource", resource) != nil:
		return "resource"
	}
	return ""
}

// notUTF8 is the first of the three fields that is not UTF-8, or "".
func notUTF8(subject, permission, resource string) string {
	switch {
	case !utf8.ValidString(subject):
		return "subject"
	case !utf8.ValidString(permission):
		return "permission"
	case !utf8.ValidString(resource):
		return "resource"
	}
	return ""
}

// checkServer serves a small world on an in-memory listener: user:alice
// is a member on account:acme, user:mallory is blocked on call:acme:1.
func checkServer(f *testing.F) (*authz.Index, *grpc.ClientConn) {
	engine, err := authz.Start(context.Background(), memory.New(), authz.Options{})
	if err != nil {
		f.Fatal(err)
	}
	idx := engine.Index()
	ctx, by := context.Background(), authz.Author{Caller: "fuzz"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "join-call"}, {Name: "read-call", Parents: []string{"join-call"}}},
		Resources:   []authz.Resource{{Name: "account:acme"}, {Name: "call:acme:1", Parent: "account:acme"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"join-call"}}},
	}
	if _, _, err := engine.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		f.Fatal(err)
	}
	for _, g := range []string{"user:alice", "user:mallory"} {
		if _, err := engine.Grant(ctx, by, authz.Grant{Subject: g, Role: "member", Resource: "account:acme"}); err != nil {
			f.Fatal(err)
		}
	}
	if _, _, err := engine.Block(ctx, by, authz.Block{Subject: "user:mallory", Resource: "call:acme:1", Reason: "spam"}); err != nil {
		f.Fatal(err)
	}

	lis := bufconn.Listen(1 << 20)
	srv := server.New(engine, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///usher",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return idx, conn
}

// rawCodec puts a request's bytes on the wire as they are and hands back
// the response's, so that a test can send what a client in any language
// could, strings that are not UTF-8 among them. Its name is "proto", the
// content subtype the server expects.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
