package server

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

// MaxEnvoyFields is the most fields an Envoy CheckRequest may hold, its
// nested messages', map entries' and repeated values' included: some 1,500
// headers, where Envoy forwards at most 100 unless told otherwise.
const MaxEnvoyFields = 10_000

// screens refuse, from its encoding and before it is decoded, a request
// that would decode into many times its size: each empty entry of a
// repeated message field, two bytes, becomes a message of its own, and
// 4 MiB of them some 280 MB (ApplyPolicy's entries, converted too, some
// 2.7 GB). The refusal is the one the handler would give once it had
// decoded the request.
var screens = map[string]func([]byte) error{
	"/" + usherv1.AuthorizationService_ServiceDesc.ServiceName + "/CheckBatch": screenBatch,
	"/" + authv3.Authorization_ServiceDesc.ServiceName + "/Check":              screenEnvoy,
	"/" + usherv1.AdminService_ServiceDesc.ServiceName + "/ApplyPolicy":        screenPolicy,
	"/" + usherv1.AdminService_ServiceDesc.ServiceName + "/PutRole":            screenRole,
	"/" + usherv1.AdminService_ServiceDesc.ServiceName + "/Block":              screenBlock,
	"/" + usherv1.AdminService_ServiceDesc.ServiceName + "/PutAdmission":       screenAdmission,
}

// screenRequests returns desc with every request refused unread when it
// comes compressed, the requests of its methods that have a screen
// screened before they are decoded, and a request that does not decode
// refused as INVALID_ARGUMENT (unreadable), where grpc-go would answer
// INTERNAL. A refused unary request goes through the interceptors, which
// log and count it, empty; a refused stream has been through them already.
func screenRequests(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		screen := screens["/"+desc.ServiceName+"/"+d.Methods[i].MethodName]
		handler := d.Methods[i].Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			return screenCall(ctx, srv, dec, interceptor, handler, screen, compressed(ctx))
		}
	}
	d.Streams = slices.Clone(desc.Streams)
	for i := range d.Streams {
		screen := streamScreens["/"+desc.ServiceName+"/"+d.Streams[i].StreamName]
		handler := d.Streams[i].Handler
		d.Streams[i].Handler = func(srv any, stream grpc.ServerStream) error {
			if err := compressed(stream.Context()); err != nil {
				return err
			}
			return handler(srv, screenedStream{ServerStream: stream, screen: screen})
		}
	}
	return &d
}

// screenCall is a unary call of handler whose request screen, when set,
// sees before it is decoded, or that refusal refuses already.
func screenCall(ctx context.Context, srv any, dec func(any) error, interceptor grpc.UnaryServerInterceptor,
	handler grpc.MethodHandler, screen func([]byte) error, refusal error) (any, error) {
	c := screenedCalls.Get().(*screenedCall)
	c.dec, c.interceptor, c.screen, c.refusal = dec, interceptor, screen, refusal
	defer func() {
		*c = screenedCall{decode: c.decode, intercept: c.intercept}
		screenedCalls.Put(c)
	}()
	return handler(srv, ctx, c.decode, c.intercept)
}

// screenedCall is one call of screenCall: its decoding function and
// interceptor, whose method values are made once, with it, since every
// unary call of the server has one.
type screenedCall struct {
	dec         func(any) error
	interceptor grpc.UnaryServerInterceptor
	screen      func([]byte) error
	refusal     error
	g           codec.Screened
	decode      func(any) error             // c.decodeRequest
	intercept   grpc.UnaryServerInterceptor // c.refuseOrIntercept
}

var screenedCalls = sync.Pool{New: func() any {
	c := &screenedCall{}
	c.decode, c.intercept = c.decodeRequest, c.refuseOrIntercept
	return c
}}

func (c *screenedCall) decodeRequest(v any) error {
	if c.refusal != nil {
		return nil
	}
	c.g = codec.Screened{Msg: v, Screen: c.screen}
	if err := c.dec(&c.g); err != nil {
		return err
	}
	c.refusal = unreadable(c.g.Refused)
	return nil
}

// refuseOrIntercept runs the interceptors; a refused request stays empty,
// and the method's own handler never runs: past the interceptors, the
// refusal.
func (c *screenedCall) refuseOrIntercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if refusal := c.refusal; refusal != nil {
		h = func(context.Context, any) (any, error) { return nil, refusal }
	}
	if c.interceptor == nil {
		return h(ctx, req)
	}
	return c.interceptor(ctx, req, info, h)
}

// streamScreens screen each request a stream of their method receives, as
// screens do a unary call's; a refused request, or one that does not
// decode, ends the stream.
var streamScreens = map[string]func([]byte) error{
	"/" + reflectionv1.ServerReflection_ServiceDesc.ServiceName + "/ServerReflectionInfo":      screenReflection,
	"/" + reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName + "/ServerReflectionInfo": screenReflection,
}

// screenedStream is a stream whose requests are screened, when screen is
// set, before they are decoded.
type screenedStream struct {
	grpc.ServerStream
	screen func([]byte) error
}

func (s screenedStream) RecvMsg(m any) error {
	g := &codec.Screened{Msg: m, Screen: s.screen}
	if err := s.ServerStream.RecvMsg(g); err != nil {
		return err
	}
	return unreadable(g.Refused)
}

// unreadable is refusal, or, for a request that does not decode, its
// refusal as INVALID_ARGUMENT: naming the string that is not UTF-8, which
// proto3 requires every string to be, or else the request.
func unreadable(refusal error) error {
	m, ok := refusal.(*codec.Malformed)
	if !ok {
		return refusal
	}
	if m.Field != "" {
		return toStatus(&authz.Error{Code: authz.Invalid, Field: m.Field, Value: clip(m.Value),
			Reason: "not UTF-8: every string of a request is UTF-8, as proto3 requires"})
	}
	return toStatus(&authz.Error{Code: authz.Invalid, Field: "request", Value: fmt.Sprint(m.Size),
		Reason: fmt.Sprintf("%d bytes that are not an encoding of %s: %v", m.Size, m.Message, m.Err)})
}

// MaxReflectionRequest is the largest server reflection request read, in
// bytes: a symbol or file name is far shorter. A reflection answer quotes
// its request, and its name again when it does not know it, and what a
// client does not read of its answers stays with the server: a 4 MiB
// request made an answer of more than 4 MiB.
const MaxReflectionRequest = 64 << 10

// screenReflection refuses a server reflection request larger than
// MaxReflectionRequest.
func screenReflection(b []byte) error {
	if len(b) > MaxReflectionRequest {
		return toStatus(&authz.Error{Code: authz.Invalid, Field: "request", Value: fmt.Sprint(len(b)),
			Reason: fmt.Sprintf("a server reflection request of %d bytes; at most %d are read", len(b), MaxReflectionRequest)})
	}
	return nil
}

// screening registers services on a grpc.Server through screenRequests.
type screening struct{ *grpc.Server }

func (s screening) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.Server.RegisterService(screenRequests(desc), impl)
}

// compressed refuses a call whose requests come compressed. The limits on
// what requests hold (ConnLimits.ReceiveBudget, MaxMessageSize) count
// their bytes as they arrive, and grpc-go would inflate a few kilobytes of
// gzip into a 4 MiB request; Usher's clients and Envoy send requests
// uncompressed.
func compressed(ctx context.Context) error {
	st, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string })
	if !ok {
		return nil
	}
	switch enc := st.RecvCompress(); enc {
	case "", "identity":
		return nil
	default:
		return refuse(codes.Unimplemented,
			fmt.Sprintf("grpc-encoding %q: this server reads requests only uncompressed: send them without compression", enc),
			details{reason: reasonCompressed, field: "grpc-encoding", value: enc})
	}
}

// reasonCompressed is the reason of a refused compressed request.
const reasonCompressed = "COMPRESSED_REQUEST"

// screenBatch refuses a CheckBatch of more than MaxBatch checks as
// CheckBatch does, counting them without decoding them. An encoding it
// cannot read whole is counted as far as it can be read: the decoder would
// decode that far before refusing it.
func screenBatch(b []byte) error {
	if len(b) <= 2*MaxBatch+1 { // each check takes 2 bytes at least
		return nil
	}
	n := 0
	each(b, func(num protowire.Number, typ protowire.Type, _ []byte) {
		if num == 1 && typ == protowire.BytesType {
			n++
		}
	})
	if n > MaxBatch {
		return toStatus(&authz.Error{Code: authz.Invalid, Field: "checks", Value: fmt.Sprint(n),
			Reason: fmt.Sprintf("a batch holds 1 to %d checks", MaxBatch)})
	}
	return nil
}

// policyLists are a Policy's lists, by field number, each with its bound,
// in the order ApplyPolicy's validator counts them.
var policyLists = []struct {
	num   protowire.Number
	field string
	limit int
	what  string
}{
	{1, "policy.permissions", MaxPolicyPermissions, "permissions in a policy"},
	{2, "policy.resources", MaxPolicyResources, "resources in a policy"},
	{3, "policy.roles", MaxPolicyRoles, "roles in a policy"},
	{4, "policy.creator_roles", MaxPolicyCreatorRoles, "creator roles in a policy"},
	{5, "policy.quotas", MaxPolicyQuotas, "quotas in a policy"},
	{6, "policy.default_quotas", MaxPolicyQuotas, "default quotas in a policy"},
	{7, "policy.admissions", MaxPolicyAdmissions, "admission rules in a policy"},
}

// screenPolicy refuses an ApplyPolicyRequest whose policy lists more
// entries than ApplyPolicy allows, as it does, counting them without
// decoding them; and one of whose permissions, roles or admission rules
// lists more names than it allows, as screenLists does. A policy given
// twice is one, its lists joined, as the decoder would read it.
func screenPolicy(b []byte) error {
	if len(b) <= 2*authz.MaxRuleRoles+2 { // each entry takes 2 bytes at least
		return nil
	}
	if err := screenPolicyLists(b); err != nil {
		return err
	}
	var req usherv1.ApplyPolicyRequest
	return screenLists(b, applyPolicyLists, &req, func() error {
		_, err := policyOf(&req)
		return err
	})
}

// screenPolicyLists is screenPolicy's count of the policy's own lists.
func screenPolicyLists(b []byte) error {
	if len(b) <= 2*MaxPolicyAdmissions+2 { // each entry takes 2 bytes at least
		return nil
	}
	var n [8]int
	each(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == 1 && typ == protowire.BytesType {
			each(v, func(num protowire.Number, typ protowire.Type, _ []byte) {
				if typ == protowire.BytesType && int(num) < len(n) {
					n[num]++
				}
			})
		}
	})
	var v validator
	v.policyLists(n)
	if v.err != nil {
		return toStatus(v.err)
	}
	return nil
}

// screenRole refuses a PutRoleRequest whose role lists more permissions,
// assignable roles or resource types than PutRole allows, as it does,
// counting them without decoding them: each empty name, two bytes, decodes
// into a string of its own, and 4 MiB of them into some 40 times that. A
// role given twice is one, its lists joined, as the decoder would read it.
// A string in it that is not UTF-8 is refused as the decoder refuses it,
// wherever it comes: the decoder would find one after the lists only once
// it had decoded them.
func screenRole(b []byte) error {
	if len(b) <= 2*MaxRoleBindableOn+2 { // each entry takes 2 bytes at least
		return nil
	}
	var name, scope []byte
	var n [6]int
	each(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != 1 || typ != protowire.BytesType {
			return
		}
		each(v, func(num protowire.Number, typ protowire.Type, v []byte) {
			switch {
			case typ != protowire.BytesType:
			case num == 1:
				name = v
			case num == 2:
				scope = v
			case num >= 3 && num <= 5:
				n[num]++
			}
		})
	})
	if n[3] <= MaxRolePermissions && n[4] <= MaxRoleAssignableRoles && n[5] <= MaxRoleBindableOn {
		return nil
	}
	if err := notUTF8(putRoleRequest, b); err != nil {
		return err
	}
	var v validator
	v.roleHead("role.", string(name), string(scope), n[3], n[4], n[5])
	return toStatus(v.err)
}

// screenAdmission refuses a PutAdmissionRequest whose rule lists more
// roles or permissions than PutAdmission allows, as screenLists does.
func screenAdmission(b []byte) error {
	if len(b) <= 2*authz.MaxRuleRoles+2 { // each entry takes 2 bytes at least
		return nil
	}
	var req usherv1.PutAdmissionRequest
	return screenLists(b, putAdmissionLists, &req, func() error {
		_, err := admissionOf(&req)
		return err
	})
}

// listBounds are the lists of names a message holds that its request's
// validator bounds, and the messages within it that hold more.
type listBounds struct {
	lists []boundedList
	subs  []boundedMessage
	maps  []boundedMap
}

// boundedList is a repeated string field and its limit.
type boundedList struct {
	num   protowire.Number
	name  string
	limit int
}

// boundedMap is a map of strings whose keys its validator allows only a
// few of: one of more keys than that is refused for the least key it does
// not allow, or for the value of an allowed key before it.
type boundedMap struct {
	num     protowire.Number
	allowed func(key []byte) bool
}

// boundedMessage is a message field, repeated or not, whose lists are
// bounded.
type boundedMessage struct {
	num      protowire.Number
	name     string
	repeated bool
	bounds   *listBounds
}

var (
	admissionLists = &listBounds{
		lists: []boundedList{
			{10, "uncounted_roles", authz.MaxRuleRoles},
			{11, "exclusive_roles", authz.MaxRuleRoles},
			{14, "exclusive_permissions", authz.MaxRuleRoles},
		},
		// Its LiveKit mapping's can_publish_sources.
		subs: []boundedMessage{{13, "livekit", false, &listBounds{maps: []boundedMap{{3, isMediaSource}}}}},
	}
	// putAdmissionLists are a PutAdmissionRequest's: its rule's.
	putAdmissionLists = &listBounds{subs: []boundedMessage{{1, "admission", false, admissionLists}}}
	// applyPolicyLists are an ApplyPolicyRequest's: those of its policy's
	// permissions, roles and admission rules.
	applyPolicyLists = &listBounds{subs: []boundedMessage{{1, "policy", false, &listBounds{subs: []boundedMessage{
		{1, "permissions", true, &listBounds{lists: []boundedList{{2, "parents", MaxPermissionParents}}}},
		{3, "roles", true, &listBounds{lists: []boundedList{
			{3, "permissions", MaxRolePermissions},
			{4, "assignable_roles", MaxRoleAssignableRoles},
			{5, "bindable_on", MaxRoleBindableOn},
		}}},
		{7, "admissions", true, admissionLists},
	}}}}}
)

// screenLists refuses req's encoding b when one of the lists bounds names
// holds more than its limit, as validate, run on req, refuses it once req
// is decoded: each empty name, two bytes, decodes into a string of its own,
// and 4 MiB of them into some 40 times that. Such a request is decoded with
// each of those lists cut to one entry past its limit, so that it costs
// what a request within the limits does; validate then finds what it would
// have found first in the whole request (a malformed name before the list,
// or the list), and a list's refusal quotes how long it was as sent. A map
// of more entries than it allows keys is decoded with the last entry of
// each key it allows and the least key it does not, which validate refuses
// as it would the whole map; one that validate allows, whose entries name
// allowed keys again and again, is decoded whole. A string that is not
// UTF-8 is refused first, as the decoder refuses it.
func screenLists(b []byte, bounds *listBounds, req proto.Message, validate func() error) error {
	c := listCut{}
	c.cut(b, bounds)
	if len(c.over) == 0 && !c.wide {
		return nil
	}
	md := req.ProtoReflect().Descriptor()
	if err := notUTF8(md, b); err != nil {
		return err
	}
	c.write = true
	if err := proto.Unmarshal(c.cut(b, bounds), req); err != nil {
		return unreadable(&codec.Malformed{Message: string(md.FullName()), Size: len(b), Err: err})
	}
	err := validate()
	if e, ok := err.(*authz.Error); ok {
		if n, ok := c.over[e.Field]; ok {
			quoted := *e
			quoted.Value = strconv.Itoa(n)
			err = &quoted
		}
	}
	return toStatus(err)
}

// listCut walks an encoded message, counting the lists its bounds name,
// and, when write is set, copies it with each list past its limit cut to
// one entry past it. A singular message given more than once is one, its
// encodings joined, as the decoder would read it.
type listCut struct {
	write bool
	over  map[string]int // the lists past their limits, by field path, and their lengths
	wide  bool           // a map holds entries cut
}

// mapCut is what a cut keeps of one map: the last entry of each allowed
// key, the entry of the least key not allowed, and entries it cannot read,
// for the decoder to refuse.
type mapCut struct {
	entries    int
	allowed    map[string][]byte
	least      []byte
	leastKey   []byte
	unreadable []byte
}

// mapKey is the key of an encoded map entry, and whether it could be read.
// It is read without a closure: a cut reads it for each of a map's entries.
func mapKey(entry []byte) (key []byte, ok bool) {
	key = []byte{}
	for len(entry) > 0 {
		num, typ, l := protowire.ConsumeTag(entry)
		if l < 0 {
			return key, false
		}
		entry = entry[l:]
		n := protowire.ConsumeFieldValue(num, typ, entry)
		if n < 0 {
			return key, false
		}
		if num == 1 && typ == protowire.BytesType {
			key, _ = protowire.ConsumeBytes(entry)
		}
		entry = entry[n:]
	}
	return key, true
}

// listPath is where a message is in a request: "policy.roles[2]".
type listPath struct {
	parent *listPath
	name   string
	index  int // of a repeated message's entry; -1 for a singular one
}

func (p *listPath) String() string {
	if p == nil {
		return ""
	}
	s := p.parent.String() + p.name
	if p.index >= 0 {
		s += "[" + strconv.Itoa(p.index) + "]"
	}
	return s + "."
}

// cut walks b, a message that bounds bounds, and returns its copy when
// c.write is set.
func (c *listCut) cut(b []byte, bounds *listBounds) []byte {
	m := c.message(bounds, nil)
	m.read(b)
	return m.end()
}

// messageCut is the cut of one message, read from one encoding or, for a
// singular message given more than once, from each in turn.
type messageCut struct {
	c       *listCut
	bounds  *listBounds
	path    *listPath
	out     []byte
	counts  []int         // of each list
	entries []int         // of each repeated message
	singles []*messageCut // of each singular message, once given
	maps    []mapCut
}

func (c *listCut) message(bounds *listBounds, path *listPath) *messageCut {
	m := &messageCut{c: c, bounds: bounds, path: path,
		counts: make([]int, len(bounds.lists)), entries: make([]int, len(bounds.subs)), singles: make([]*messageCut, len(bounds.subs))}
	if len(bounds.maps) > 0 {
		m.maps = make([]mapCut, len(bounds.maps))
	}
	return m
}

// read walks b, an encoding of the message. What cannot be read is copied
// as it is, for the decoder to refuse.
func (m *messageCut) read(b []byte) {
	bounds, write := m.bounds, m.c.write
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		n := -1
		if l >= 0 {
			n = protowire.ConsumeFieldValue(num, typ, b[l:])
		}
		if n < 0 {
			if write {
				m.out = append(m.out, b...)
			}
			return
		}
		field := b[:l+n]
		b = b[l+n:]
		keep := true
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(field[l:])
			if i := slices.IndexFunc(bounds.maps, func(bm boundedMap) bool { return bm.num == num }); i >= 0 {
				keep = false
				m.maps[i].add(field, v, bounds.maps[i].allowed)
			} else if i := slices.IndexFunc(bounds.lists, func(l boundedList) bool { return l.num == num }); i >= 0 {
				m.counts[i]++
				keep = m.counts[i] <= bounds.lists[i].limit+1
			} else if i := slices.IndexFunc(bounds.subs, func(s boundedMessage) bool { return s.num == num }); i >= 0 {
				keep = false
				sub := bounds.subs[i]
				if sub.repeated {
					entry := m.c.message(sub.bounds, &listPath{parent: m.path, name: sub.name, index: m.entries[i]})
					m.entries[i]++
					entry.read(v)
					inner := entry.end()
					if write {
						m.out = protowire.AppendBytes(protowire.AppendTag(m.out, num, typ), inner)
					}
				} else {
					if m.singles[i] == nil {
						m.singles[i] = m.c.message(sub.bounds, &listPath{parent: m.path, name: sub.name, index: -1})
					}
					m.singles[i].read(v)
				}
			}
		}
		if keep && write {
			m.out = append(m.out, field...)
		}
	}
}

// end records the message's lists past their limits and its maps cut,
// and returns its copy, its singular messages after its other fields.
func (m *messageCut) end() []byte {
	c := m.c
	for i, l := range m.bounds.lists {
		if m.counts[i] > l.limit {
			if c.over == nil {
				c.over = map[string]int{}
			}
			c.over[m.path.String()+l.name] = m.counts[i]
		}
	}
	for i := range m.maps {
		mc := &m.maps[i]
		kept := len(mc.allowed)
		if mc.least != nil {
			kept++
		}
		c.wide = c.wide || mc.entries > kept
		if c.write {
			for _, key := range slices.Sorted(maps.Keys(mc.allowed)) {
				m.out = append(m.out, mc.allowed[key]...)
			}
			m.out = append(append(m.out, mc.least...), mc.unreadable...)
		}
	}
	for i, sub := range m.bounds.subs {
		if s := m.singles[i]; s != nil {
			inner := s.end()
			if c.write {
				m.out = protowire.AppendBytes(protowire.AppendTag(m.out, sub.num, protowire.BytesType), inner)
			}
		}
	}
	return m.out
}

// add takes a map's entry, field, whose contents are v.
func (mc *mapCut) add(field, v []byte, allowed func([]byte) bool) {
	mc.entries++
	key, ok := mapKey(v)
	switch {
	case !ok:
		mc.unreadable = append(mc.unreadable, field...)
	case allowed(key):
		if mc.allowed == nil {
			mc.allowed = map[string][]byte{}
		}
		mc.allowed[string(key)] = field
	case mc.least == nil || bytes.Compare(key, mc.leastKey) < 0:
		mc.least, mc.leastKey = field, key
	}
}

// isMediaSource is authz.IsMediaSource of a key as encoded.
func isMediaSource(key []byte) bool { return authz.IsMediaSource(string(key)) }

// putRoleRequest and blockRequest are the descriptors of PutRole's and
// Block's requests.
var (
	putRoleRequest = (&usherv1.PutRoleRequest{}).ProtoReflect().Descriptor()
	blockRequest   = (&usherv1.BlockRequest{}).ProtoReflect().Descriptor()
)

// notUTF8 refuses b, an encoding of md, as the decoder would once it had
// read that far, when one of its strings is not UTF-8: found without
// decoding the lists before it.
func notUTF8(md protoreflect.MessageDescriptor, b []byte) error {
	field, value := codec.InvalidString(md, b)
	if field == "" {
		return nil
	}
	return unreadable(&codec.Malformed{Message: string(md.FullName()), Size: len(b), Field: field, Value: value})
}

// screenBlock refuses a BlockRequest of more permissions than Block
// allows, as it does, counting them without decoding them; one with a
// string that is not UTF-8 as the decoder refuses it, as screenRole does.
func screenBlock(b []byte) error {
	if len(b) <= 2*MaxBlockPermissions+2 { // each entry takes 2 bytes at least
		return nil
	}
	var subject, resource []byte
	n := 0
	each(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch {
		case typ != protowire.BytesType:
		case num == 1:
			subject = v
		case num == 2:
			resource = v
		case num == 3:
			n++
		}
	})
	if n <= MaxBlockPermissions {
		return nil
	}
	if err := notUTF8(blockRequest, b); err != nil {
		return err
	}
	var v validator
	v.blockHead(string(subject), string(resource), n)
	return toStatus(v.err)
}

// each calls f with each field of the encoded message b, as far as it can
// be read, and reports whether it could be read whole; a length-delimited
// field's value is its contents.
func each(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte)) bool {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return false
		}
		v := b[:l]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b)
		}
		f(num, typ, v)
		b = b[l:]
	}
	return true
}

// envoyRequest is the descriptor of Envoy's CheckRequest.
var envoyRequest = (&authv3.CheckRequest{}).ProtoReflect().Descriptor()

// screenEnvoy refuses an Envoy CheckRequest of more than MaxEnvoyFields
// fields, counted without decoding them.
func screenEnvoy(b []byte) error {
	if len(b) <= MaxEnvoyFields { // each field takes a byte at least
		return nil
	}
	if n := countFields(b, envoyRequest, MaxEnvoyFields+1); n > MaxEnvoyFields {
		return toStatus(&authz.Error{Code: authz.Invalid, Field: "attributes", Value: fmt.Sprintf("more than %d fields", MaxEnvoyFields),
			Reason: fmt.Sprintf("a CheckRequest holds at most %d fields, its nested messages', map entries' and repeated values' included", MaxEnvoyFields)})
	}
	return nil
}

// countFields counts the fields of b, an encoded message of type md, and
// of the messages within it, up to limit; packed values count one each. An
// encoding it cannot read counts as far as it could be read.
func countFields(b []byte, md protoreflect.MessageDescriptor, limit int) int {
	n := 0
	fields := md.Fields()
	for len(b) > 0 && n < limit {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return n
		}
		b = b[l:]
		n++
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return n
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			if fd := fields.ByNumber(num); fd != nil {
				switch {
				case fd.Message() != nil:
					n += countFields(v, fd.Message(), limit-n)
				case fd.IsList():
					n += packedCount(v, fd.Kind())
				}
			}
		}
		b = b[l:]
	}
	return n
}

// packedCount is how many values of kind k a packed run holds, at least
// none.
func packedCount(v []byte, k protoreflect.Kind) int {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return 0
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return len(v) / 4
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return len(v) / 8
	}
	n := 0
	for _, c := range v {
		if c < 0x80 {
			n++
		}
	}
	return n
}
