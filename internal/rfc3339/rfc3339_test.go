package rfc3339

import (
	"errors"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Time // zero: refused
	}{
		{"2026-12-01T09:00:00Z", time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)},
		{"2026-12-01T09:00:00.123456789Z", time.Date(2026, 12, 1, 9, 0, 0, 123456789, time.UTC)},
		{"2026-12-01T11:30:00+02:30", time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)},
		{"2026-12-01T00:00:00-23:59", time.Date(2026, 12, 1, 23, 59, 0, 0, time.UTC)},
		{"2026-12-01T09:00:00+23:59", time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).Add(-(23*time.Hour + 59*time.Minute))},
		// RFC 3339 5.6: "T" and "Z" may be lowercase.
		{"2026-12-01t09:00:00z", time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)},
		// Offsets past ±23:59, which time.Parse takes.
		{"2027-01-01T00:00:00+24:00", time.Time{}},
		{"2027-01-01T00:00:00+24:59", time.Time{}},
		{"2027-01-01T00:00:00+00:60", time.Time{}},
		{"2027-01-01T00:00:00-99:99", time.Time{}},
		{"2027-01-01T00:00:00", time.Time{}},
		// Go's time.Parse takes these; RFC 3339 does not.
		{"2026-12-01T9:00:00Z", time.Time{}},
		{"2026-12-01T09:00:00,5Z", time.Time{}},
		{"2026-12-01T09:00:00.Z", time.Time{}},
		{"2026-12-01T09:00:00+0200", time.Time{}},
		{"２026-12-01T09:00:00Z", time.Time{}},
		// A leap second, which neither Go's time nor a Timestamp holds.
		{"2016-12-31T23:59:60Z", time.Time{}},
		// time.Parse still judges the fields' values.
		{"2026-13-01T09:00:00Z", time.Time{}},
		{"2026-12-01T24:00:00Z", time.Time{}},
		{"2027-01-01 00:00:00Z", time.Time{}},
		{"", time.Time{}},
		{"z", time.Time{}},
	} {
		got, err := Parse(c.in)
		if c.want.IsZero() {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want it refused", c.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestALeapSecondIsRefusedAsOne(t *testing.T) {
	if _, err := Parse("2016-12-31T23:59:60Z"); !errors.Is(err, ErrLeapSecond) {
		t.Errorf("Parse of a leap second: %v, want ErrLeapSecond", err)
	}
}
