package server

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// distinguishedName is the subject of cert as RFC 2253 writes it, and as
// `openssl x509 -subject -nameopt RFC2253` prints it: every attribute of
// every relative name, the last first, several in one joined by "+".
// x509.Certificate.Subject.String() will not do: it keeps one common name
// of several, reads a name of several attributes as several names, puts
// the attributes it knows in an order of its own and spells the others, a
// domain component or a user id, as numbers. "O=acme,CN=stranger,
// CN=console" would read as "CN=console,O=acme".
func distinguishedName(cert *x509.Certificate) string {
	var rdns []relativeNameSET
	if rest, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || len(rest) > 0 {
		// x509 parsed the same bytes: this cannot happen.
		return cert.Subject.String()
	}
	var b strings.Builder
	for i := len(rdns) - 1; i >= 0; i-- {
		for j := len(rdns[i]) - 1; j >= 0; j-- {
			switch {
			case j < len(rdns[i])-1:
				b.WriteByte('+')
			case i < len(rdns)-1:
				b.WriteByte(',')
			}
			a := rdns[i][j]
			name, known := attributeNames[a.Type.String()]
			if !known {
				// RFC 2253: an attribute named by its OID has its value
				// as # and its DER in hexadecimal.
				b.WriteString(a.Type.String())
				b.WriteString("=#")
				b.WriteString(hex.EncodeToString(a.Value.FullBytes))
				continue
			}
			b.WriteString(name)
			b.WriteByte('=')
			writeAttributeValue(&b, a.Value)
		}
	}
	return b.String()
}

// relativeNameSET is one relative distinguished name: encoding/asn1 reads a
// slice type whose name ends in SET as a SET OF.
type relativeNameSET []nameAttribute

type nameAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// attributeNames are the names OpenSSL prints attribute types by.
var attributeNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "title",
	"2.5.4.15":                   "businessCategory",
	"2.5.4.17":                   "postalCode",
	"2.5.4.42":                   "GN",
	"2.5.4.43":                   "initials",
	"2.5.4.44":                   "generationQualifier",
	"2.5.4.46":                   "dnQualifier",
	"2.5.4.65":                   "pseudonym",
	"2.5.4.97":                   "organizationIdentifier",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.25": "DC",
	"1.2.840.113549.1.9.1":       "emailAddress",
}

// writeAttributeValue writes a string value as UTF-8 escaped as RFC 2253
// and OpenSSL escape it, each byte of a multi-byte character or a control
// character as \XX; any other value as # and its DER in hexadecimal.
func writeAttributeValue(b *strings.Builder, v asn1.RawValue) {
	s, ok := attributeText(v)
	if !ok {
		b.WriteByte('#')
		b.WriteString(hex.EncodeToString(v.FullBytes))
		return
	}
	const upper = "0123456789ABCDEF"
	for i, c := range s {
		switch {
		case c < 0x20 || c >= 0x7f:
			b.WriteByte('\\')
			b.WriteByte(upper[c>>4])
			b.WriteByte(upper[c&0xf])
			continue
		case strings.IndexByte(`,+"\<>;`, c) >= 0,
			c == '#' && i == 0,
			c == ' ' && (i == 0 || i == len(s)-1):
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
}

// attributeText is a string value as UTF-8, or false for a value of
// another type.
func attributeText(v asn1.RawValue) ([]byte, bool) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return nil, false
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString, 26: // 26: VisibleString
		return v.Bytes, true
	case asn1.TagT61String: // read as Latin-1, as OpenSSL does
		var s []byte
		for _, c := range v.Bytes {
			s = utf8.AppendRune(s, rune(c))
		}
		return s, true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return nil, false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(v.Bytes[2*i:])
		}
		var s []byte
		for _, r := range utf16.Decode(u) {
			s = utf8.AppendRune(s, r)
		}
		return s, true
	case 28: // UniversalString
		if len(v.Bytes)%4 != 0 {
			return nil, false
		}
		var s []byte
		for i := 0; i < len(v.Bytes); i += 4 {
			s = utf8.AppendRune(s, rune(binary.BigEndian.Uint32(v.Bytes[i:])))
		}
		return s, true
	}
	return nil, false
}
