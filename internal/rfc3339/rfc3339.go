// Package rfc3339 reads times as RFC 3339 writes them, and only so.
package rfc3339

import (
	"errors"
	"time"
)

// Parse reads s, an RFC 3339 date-time: 2026-12-01T09:00:00Z, with a
// fraction of a second after a "." or an offset such as +02:00. Go's
// time.Parse is more lenient: it takes a one-digit hour, a "," before the
// fraction, and offsets past ±23:59 (+24:00, +00:60), which move the time by
// up to a day; all are refused. The lowercase "t" and "z" RFC 3339 allows
// are read as "T" and "Z".
func Parse(s string) (time.Time, error) {
	b := []byte(s)
	if len(b) > 10 && b[10] == 't' {
		b[10] = 'T'
	}
	if n := len(b); n > 0 && b[n-1] == 'z' {
		b[n-1] = 'Z'
	}
	if err := shape(b); err != nil {
		return time.Time{}, err
	}
	if b[17] == '6' && b[18] == '0' {
		return time.Time{}, ErrLeapSecond
	}
	return time.Parse(time.RFC3339Nano, string(b))
}

// ErrLeapSecond refuses a leap second, which RFC 3339 writes but neither
// Go's time nor protobuf's Timestamp holds.
var ErrLeapSecond = errors.New("a leap second (:60) is not taken: write :59 or the next minute's :00")

// shape checks that b is laid out as RFC 3339's date-time: full-date "T"
// partial-time time-offset, each number of its width, and the offset's
// hours and minutes in range.
func shape(b []byte) error {
	const layout = "dddd-dd-ddTdd:dd:dd" // d: a digit
	bad := errors.New("not an RFC 3339 date-time such as 2026-12-01T09:00:00Z")
	if len(b) < len(layout)+1 {
		return bad
	}
	for i := range len(layout) {
		if layout[i] == 'd' && !digit(b[i]) || layout[i] != 'd' && b[i] != layout[i] {
			return bad
		}
	}
	rest := b[len(layout):]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && digit(rest[n]) {
			n++
		}
		if n == 1 {
			return bad
		}
		rest = rest[n:]
	}
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
		return nil
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && digit(rest[1]) && digit(rest[2]) && rest[3] == ':' && digit(rest[4]) && digit(rest[5]):
		if hh, mm := (rest[1]-'0')*10+rest[2]-'0', (rest[4]-'0')*10+rest[5]-'0'; hh > 23 || mm > 59 {
			return errors.New("offset " + string(rest) + " out of range: at most ±23:59")
		}
		return nil
	}
	return bad
}

func digit(c byte) bool { return '0' <= c && c <= '9' }
