package codec_test

import (
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

// BenchmarkCheckBatch measures decoding a CheckBatchRequest of 100 checks
// and encoding its answer, with this codec and with grpc-go's.
func BenchmarkCheckBatch(b *testing.B) {
	req, resp := batch()
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"vtproto", codec.Codec{}}, {"grpc", standard}} {
		data, err := c.codec.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		raw := data.Materialize()
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &usherv1.CheckBatchRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.codec.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}

// BenchmarkChecked measures the check that comes before UnmarshalVT and
// after MarshalToSizedBufferVT, on a CheckBatch and its answer.
func BenchmarkChecked(b *testing.B) {
	req, resp := batch()
	for name, m := range map[string]proto.Message{"request": req, "response": resp} {
		raw, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if !codec.Checked(raw, m) {
					b.Fatal("not checked")
				}
			}
		})
	}
}
