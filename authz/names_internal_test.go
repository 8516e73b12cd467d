package authz

import (
	"testing"
	"unicode"
)

func TestPrintableASCIIIsTheRule(t *testing.T) {
	for c := rune(0); c < 0x80; c++ {
		want := c != 0xFFFD && unicode.IsGraphic(c) && !unicode.IsSpace(c)
		if got := printableASCII(string(c)); got != want {
			t.Errorf("%q: %v, want %v", c, got, want)
		}
	}
}
