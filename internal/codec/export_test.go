package codec

import "google.golang.org/protobuf/proto"

// Checked is shape.check of m's type from the top, and Standard grpc-go's
// codec, for the tests.
func Checked(b []byte, m proto.Message) bool { return shapeOf(m).check(b, 0) }

var Standard = standard
