package server

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// The subjects below were printed by openssl x509 -noout -subject
// -nameopt RFC2253 for certificates of the same subjects.
func TestDistinguishedNameIsWhatOpenSSLPrints(t *testing.T) {
	oid := func(s ...int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier(s) }
	var (
		cn, o, ou, c = oid(2, 5, 4, 3), oid(2, 5, 4, 10), oid(2, 5, 4, 11), oid(2, 5, 4, 6)
		dc, uid      = oid(0, 9, 2342, 19200300, 100, 1, 25), oid(0, 9, 2342, 19200300, 100, 1, 1)
		email        = oid(1, 2, 840, 113549, 1, 9, 1)
		serial       = oid(2, 5, 4, 5)
	)
	one := func(t asn1.ObjectIdentifier, v any) []pkix.AttributeTypeAndValue {
		return []pkix.AttributeTypeAndValue{{Type: t, Value: v}}
	}
	for _, tc := range []struct {
		name string
		rdns pkix.RDNSequence
		want string
	}{
		{"the last relative name first", pkix.RDNSequence{one(o, "acme"), one(cn, "console")}, "CN=console,O=acme"},
		{"the certificate's order, not a usual one", pkix.RDNSequence{one(cn, "console"), one(o, "acme")}, "O=acme,CN=console"},
		{"domain components and two units", pkix.RDNSequence{one(dc, "com"), one(dc, "acme"), one(o, "acme"), one(ou, "eu"), one(ou, "media"), one(cn, "console")},
			"CN=console,OU=media,OU=eu,O=acme,DC=acme,DC=com"},
		{"two common names", pkix.RDNSequence{one(o, "acme"), one(cn, "stranger"), one(cn, "console")}, "CN=console,CN=stranger,O=acme"},
		{"a relative name of two attributes", pkix.RDNSequence{{{Type: o, Value: "acme"}, {Type: cn, Value: "console"}}}, "CN=console+O=acme"},
		{"characters RFC 2253 escapes", pkix.RDNSequence{one(o, "ac,me"), one(cn, "#lead <x>;\"q\" é"), one(ou, " sp "), one(cn, `back\slash`)},
			`CN=back\\slash,OU=\ sp\ ,CN=\#lead \<x\>\;\"q\" \C3\A9,O=ac\,me`},
		{"names OpenSSL knows", pkix.RDNSequence{one(c, "DE"), one(serial, "7"), one(uid, "1"), one(email, "a@b")}, "emailAddress=a@b,UID=1,serialNumber=7,C=DE"},
		{"names OpenSSL knows beyond the usual", pkix.RDNSequence{one(dc, "com"), one(o, "acme"), one(oid(2, 5, 4, 13), "ops"), one(oid(2, 5, 4, 41), "n"),
			one(oid(0, 9, 2342, 19200300, 100, 1, 3), "a@b"), one(oid(1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 3), "DE"), one(oid(2, 5, 4, 15), "x"),
			one(oid(2, 5, 4, 12), "t"), one(oid(2, 5, 4, 72), "r"), one(cn, "console")},
			"CN=console,role=r,title=t,businessCategory=x,jurisdictionC=DE,mail=a@b,name=n,description=ops,O=acme,DC=com"},
		{"an attribute OpenSSL does not know", pkix.RDNSequence{one(oid(1, 2, 3, 4), "x")}, "1.2.3.4=#130178"},
		{"a value that is not a string", pkix.RDNSequence{one(cn, 42)}, "CN=#02012a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := asn1.Marshal(tc.rdns)
			if err != nil {
				t.Fatal(err)
			}
			if got := distinguishedName(&x509.Certificate{RawSubject: raw}); got != tc.want {
				t.Errorf("distinguishedName = %s, want %s", got, tc.want)
			}
		})
	}
}

func FuzzDistinguishedName(f *testing.F) {
	raw, _ := asn1.Marshal(pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "console"}}})
	f.Add(raw)
	f.Fuzz(func(t *testing.T, raw []byte) {
		// A subject x509 would refuse reads as x509 reads it, and none
		// panics.
		distinguishedName(&x509.Certificate{RawSubject: raw})
	})
}
