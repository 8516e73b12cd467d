package main

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// allPages makes a list call page by page, following next_page_token, and
// returns the pages merged into one answer: their lists end to end, with no
// token.
func allPages[Req, Resp proto.Message](ctx context.Context, req Req, call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	var all Resp
	for first := true; ; first = false {
		resp, err := call(ctx, req)
		if err != nil {
			var none Resp
			return none, err
		}
		if first {
			all = resp
		} else {
			proto.Merge(all, resp)
		}
		token := stringField(resp, "next_page_token")
		if token == "" {
			setStringField(all, "next_page_token", "")
			return all, nil
		}
		setStringField(req, "page_token", token)
	}
}

func stringField(m proto.Message, name protoreflect.Name) string {
	msg := m.ProtoReflect()
	return msg.Get(msg.Descriptor().Fields().ByName(name)).String()
}

func setStringField(m proto.Message, name protoreflect.Name, v string) {
	msg := m.ProtoReflect()
	fd := msg.Descriptor().Fields().ByName(name)
	if v == "" {
		msg.Clear(fd)
		return
	}
	msg.Set(fd, protoreflect.ValueOfString(v))
}
