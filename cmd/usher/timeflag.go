package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/internal/rfc3339"
)

// timeFlag is a point in time given as RFC 3339 (2026-12-01T09:00:00Z) or
// as a duration from now (2h, 90m), for --expires and --start.
type timeFlag struct {
	at  time.Time
	set bool
	raw string
}

func (f *timeFlag) Set(s string) error {
	if d, err := time.ParseDuration(s); err == nil {
		f.at, f.set, f.raw = time.Now().Add(d), true, s
		return nil
	}
	t, err := rfc3339.Parse(s)
	if errors.Is(err, rfc3339.ErrLeapSecond) {
		return err
	}
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time (2026-12-01T09:00:00Z) or a duration from now (2h, 90m)")
	}
	f.at, f.set, f.raw = t, true, s
	return nil
}

func (f *timeFlag) String() string { return f.raw }
func (f *timeFlag) Type() string   { return "time" }

// timestamp is the time as the API takes it, nil when the flag is unset.
func (f *timeFlag) timestamp() *timestamppb.Timestamp {
	if !f.set {
		return nil
	}
	return timestamppb.New(f.at)
}

// expiresFlag defines --expires on fs.
func expiresFlag(fs *pflag.FlagSet, what string) *timeFlag {
	f := &timeFlag{}
	fs.Var(f, "expires", what+" expires at this `time`: RFC 3339 (2026-12-01T09:00:00Z) or a duration from now (2h) (default never)")
	return f
}
