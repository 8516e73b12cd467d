package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// envoyCheck is an Envoy CheckRequest with n headers, in the map and in
// header_map, and the addresses Envoy sends.
func envoyCheck(n int) *authv3.CheckRequest {
	headers := map[string]string{}
	hm := &corev3.HeaderMap{}
	for i := range n {
		k, v := fmt.Sprintf("x-header-%d", i), fmt.Sprintf("value %d", i)
		headers[k] = v
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	addr := func(ip string) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 443}}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: addr("10.0.0.1"), Destination: addr("10.0.0.2"),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "42", Method: "POST", Path: "/calls/meeting/7/join", Host: "usher.example", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: headers, HeaderMap: hm}},
		ContextExtensions: map[string]string{"zone": "eu"},
	}}
}

func TestCountFields(t *testing.T) {
	for _, n := range []int{0, 1, 20, 1500} {
		b, err := proto.Marshal(envoyCheck(n))
		if err != nil {
			t.Fatal(err)
		}
		// Each header: an entry, its key and value, twice; and the rest.
		const rest = 23
		if got, want := countFields(b, envoyRequest, 1<<30), 6*n+rest; got != want {
			t.Errorf("%d headers: %d fields, want %d", n, got, want)
		}
		if got := countFields(b, envoyRequest, 10); got > 10+2 {
			t.Errorf("%d headers: counted %d fields past a limit of 10", n, got)
		}
		if err := screenEnvoy(b); (err != nil) != (6*n+rest > MaxEnvoyFields) {
			t.Errorf("%d headers: screenEnvoy = %v", n, err)
		}
	}
}

// Envoy's metadata holds google.protobuf.Struct, which nests without end:
// counting stops at the limit, however deep the request goes, so it
// recurses no deeper than the fields it counts.
func TestCountFieldsOfADeepRequest(t *testing.T) {
	const depth = 20_000
	inner := &structpb.Struct{}
	for range depth {
		inner = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(inner)}}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"deep": inner}}}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := countFields(b, envoyRequest, MaxEnvoyFields+1); got != MaxEnvoyFields+1 {
		t.Errorf("a request %d levels deep, of %d bytes: counted %d fields, want the limit's %d", depth, len(b), got, MaxEnvoyFields+1)
	}
	if err := screenEnvoy(b); err == nil {
		t.Errorf("a request %d levels deep passed the screen", depth)
	}
}

// BenchmarkScreenEnvoy measures what screening costs an Envoy Check of 200
// headers, too large to pass unread.
func BenchmarkScreenEnvoy(b *testing.B) {
	req, err := proto.Marshal(envoyCheck(200))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := screenEnvoy(req); err != nil {
			b.Fatal(err)
		}
	}
}

// screenPolicy counts a policy's entries as the decoder would read them:
// up to each list's bound it lets the request through, one more is
// refused naming the list, and a policy given twice is one, its lists
// joined.
func TestScreenPolicyCountsWhatTheDecoderWouldRead(t *testing.T) {
	request := func(policies ...*usherv1.Policy) []byte {
		var b []byte
		for _, p := range policies {
			var err error
			b, err = proto.MarshalOptions{}.MarshalAppend(b, &usherv1.ApplyPolicyRequest{Policy: p})
			if err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	admissions := func(n int) *usherv1.Policy {
		p := &usherv1.Policy{}
		for range n {
			p.Admissions = append(p.Admissions, &usherv1.Admission{})
		}
		return p
	}
	if err := screenPolicy(request(admissions(MaxPolicyAdmissions))); err != nil {
		t.Errorf("%d admission rules: %v", MaxPolicyAdmissions, err)
	}
	for name, b := range map[string][]byte{
		"one more than allowed":          request(admissions(MaxPolicyAdmissions + 1)),
		"two policies, together as many": request(admissions(MaxPolicyAdmissions/2+1), admissions(MaxPolicyAdmissions/2)),
	} {
		err := screenPolicy(b)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`policy.admissions "%d"`, MaxPolicyAdmissions+1)) {
			t.Errorf("%s: %v, want policy.admissions refused", name, err)
		}
		var decoded usherv1.ApplyPolicyRequest
		if err := proto.Unmarshal(b, &decoded); err != nil || len(decoded.GetPolicy().GetAdmissions()) != MaxPolicyAdmissions+1 {
			t.Errorf("%s: decoded %d admission rules, %v", name, len(decoded.GetPolicy().GetAdmissions()), err)
		}
	}
}

// screenAdmission lets through a rule the handler takes, however often its
// LiveKit mapping names an allowed source again (the decoder keeps the
// last), and refuses one naming a source no rule may, as the handler does.
func TestScreenAdmissionReadsSourcesAsTheDecoderDoes(t *testing.T) {
	request := func(sources map[string]string) []byte {
		b, err := proto.Marshal(&usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{ResourceType: "call", JoinPermission: "join-call",
			Livekit: &usherv1.LiveKitMapping{RoomJoin: "join-call", CanPublishSources: sources}}})
		if err != nil {
			t.Fatal(err)
		}
		// The rule given 100 times is one, its mapping's entries joined.
		return bytes.Repeat(b, 100)
	}
	if err := screenAdmission(request(map[string]string{"camera": "send-video", "microphone": "send-audio"})); err != nil {
		t.Errorf("a mapping of two sources, named 100 times: %v", err)
	}
	err := screenAdmission(request(map[string]string{"camera": "send-video", "webcam": "send-video", "zoom": "x"}))
	if err == nil || !strings.Contains(err.Error(), `admission.livekit.can_publish_sources "webcam": not a LiveKit track source`) {
		t.Errorf("a mapping of a source no rule may name, named 100 times: %v", err)
	}
	err = screenAdmission(request(map[string]string{"camera": "Send-Video", "webcam": "send-video"}))
	if err == nil || !strings.Contains(err.Error(), `admission.livekit.can_publish_sources.camera "Send-Video"`) {
		t.Errorf("a mapping of a malformed permission before a source no rule may name: %v", err)
	}
}
