package server

import "google.golang.org/grpc"

// WithWaitingBytes bounds what reads waiting for their min_revision hold at
// n bytes rather than MaxWaitingBytes, so that a test fills the bound with
// fewer and smaller requests.
func WithWaitingBytes(n int) grpc.ServerOption { return waitingBytesOption{n: n} }

// WaitOverhead is what a read waiting for its min_revision is counted for
// besides its request and its headers.
const WaitOverhead = waitOverhead

// SendAllowance is what one connection's unsent answers hold without
// drawing on the send budget, and AnswerOverhead what an answer of a unary
// call is counted for besides its bytes.
const (
	SendAllowance  = sendAllowance
	AnswerOverhead = answerOverhead
)
