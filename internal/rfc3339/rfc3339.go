// Package rfc3339 reads times as RFC 3339 writes them, and only so.
package rfc3339

import (
	"errors"
	"time"
)

// Parse reads s, an RFC 3339 date-time (2026-12-01T09:00:00Z, with a
// fraction of a second or an offset such as +02:00). Go's time.Parse takes
// offsets RFC 3339 does not (+24:00, +00:60), which move the time by up to a
// day; they are refused. The lowercase "t" and "z" RFC 3339 allows are
// read as "T" and "Z".
func Parse(s string) (time.Time, error) {
	b := []byte(s)
	if len(b) > 10 && b[10] == 't' {
		b[10] = 'T'
	}
	if n := len(b); n > 0 && b[n-1] == 'z' {
		b[n-1] = 'Z'
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, err
	}
	if n := len(b); b[n-1] != 'Z' {
		// time.Parse took the offset as ±hh:mm.
		hh, mm := int(b[n-5]-'0')*10+int(b[n-4]-'0'), int(b[n-2]-'0')*10+int(b[n-1]-'0')
		if hh > 23 || mm > 59 {
			return time.Time{}, errors.New("offset " + string(b[n-6:]) + " out of range: at most ±23:59")
		}
	}
	return t, nil
}
