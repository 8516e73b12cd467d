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

// attributeNames are the names OpenSSL prints attribute types by: every
// type under X.520's, COSINE's, PKCS #9's and the EV jurisdiction's arcs
// that OpenSSL 3 names, as `openssl x509 -noout -subject -nameopt RFC2253`
// printed a certificate of each. OpenSSL prints any other type by its OID.
var attributeNames = map[string]string{
	// X.520.
	"2.5.4.3":   "CN",
	"2.5.4.4":   "SN",
	"2.5.4.5":   "serialNumber",
	"2.5.4.6":   "C",
	"2.5.4.7":   "L",
	"2.5.4.8":   "ST",
	"2.5.4.9":   "street",
	"2.5.4.10":  "O",
	"2.5.4.11":  "OU",
	"2.5.4.12":  "title",
	"2.5.4.13":  "description",
	"2.5.4.14":  "searchGuide",
	"2.5.4.15":  "businessCategory",
	"2.5.4.16":  "postalAddress",
	"2.5.4.17":  "postalCode",
	"2.5.4.18":  "postOfficeBox",
	"2.5.4.19":  "physicalDeliveryOfficeName",
	"2.5.4.20":  "telephoneNumber",
	"2.5.4.21":  "telexNumber",
	"2.5.4.22":  "teletexTerminalIdentifier",
	"2.5.4.23":  "facsimileTelephoneNumber",
	"2.5.4.24":  "x121Address",
	"2.5.4.25":  "internationaliSDNNumber",
	"2.5.4.26":  "registeredAddress",
	"2.5.4.27":  "destinationIndicator",
	"2.5.4.28":  "preferredDeliveryMethod",
	"2.5.4.29":  "presentationAddress",
	"2.5.4.30":  "supportedApplicationContext",
	"2.5.4.31":  "member",
	"2.5.4.32":  "owner",
	"2.5.4.33":  "roleOccupant",
	"2.5.4.34":  "seeAlso",
	"2.5.4.35":  "userPassword",
	"2.5.4.36":  "userCertificate",
	"2.5.4.37":  "cACertificate",
	"2.5.4.38":  "authorityRevocationList",
	"2.5.4.39":  "certificateRevocationList",
	"2.5.4.40":  "crossCertificatePair",
	"2.5.4.41":  "name",
	"2.5.4.42":  "GN",
	"2.5.4.43":  "initials",
	"2.5.4.44":  "generationQualifier",
	"2.5.4.45":  "x500UniqueIdentifier",
	"2.5.4.46":  "dnQualifier",
	"2.5.4.47":  "enhancedSearchGuide",
	"2.5.4.48":  "protocolInformation",
	"2.5.4.49":  "distinguishedName",
	"2.5.4.50":  "uniqueMember",
	"2.5.4.51":  "houseIdentifier",
	"2.5.4.52":  "supportedAlgorithms",
	"2.5.4.53":  "deltaRevocationList",
	"2.5.4.54":  "dmdName",
	"2.5.4.65":  "pseudonym",
	"2.5.4.72":  "role",
	"2.5.4.97":  "organizationIdentifier",
	"2.5.4.98":  "c3",
	"2.5.4.99":  "n3",
	"2.5.4.100": "dnsName",
	// RFC 4524 (COSINE).
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.2":  "textEncodedORAddress",
	"0.9.2342.19200300.100.1.3":  "mail",
	"0.9.2342.19200300.100.1.4":  "info",
	"0.9.2342.19200300.100.1.5":  "favouriteDrink",
	"0.9.2342.19200300.100.1.6":  "roomNumber",
	"0.9.2342.19200300.100.1.7":  "photo",
	"0.9.2342.19200300.100.1.8":  "userClass",
	"0.9.2342.19200300.100.1.9":  "host",
	"0.9.2342.19200300.100.1.10": "manager",
	"0.9.2342.19200300.100.1.11": "documentIdentifier",
	"0.9.2342.19200300.100.1.12": "documentTitle",
	"0.9.2342.19200300.100.1.13": "documentVersion",
	"0.9.2342.19200300.100.1.14": "documentAuthor",
	"0.9.2342.19200300.100.1.15": "documentLocation",
	"0.9.2342.19200300.100.1.20": "homeTelephoneNumber",
	"0.9.2342.19200300.100.1.21": "secretary",
	"0.9.2342.19200300.100.1.22": "otherMailbox",
	"0.9.2342.19200300.100.1.23": "lastModifiedTime",
	"0.9.2342.19200300.100.1.24": "lastModifiedBy",
	"0.9.2342.19200300.100.1.25": "DC",
	"0.9.2342.19200300.100.1.26": "aRecord",
	"0.9.2342.19200300.100.1.27": "pilotAttributeType27",
	"0.9.2342.19200300.100.1.28": "mXRecord",
	"0.9.2342.19200300.100.1.29": "nSRecord",
	"0.9.2342.19200300.100.1.30": "sOARecord",
	"0.9.2342.19200300.100.1.31": "cNAMERecord",
	"0.9.2342.19200300.100.1.37": "associatedDomain",
	"0.9.2342.19200300.100.1.38": "associatedName",
	"0.9.2342.19200300.100.1.39": "homePostalAddress",
	"0.9.2342.19200300.100.1.40": "personalTitle",
	"0.9.2342.19200300.100.1.41": "mobileTelephoneNumber",
	"0.9.2342.19200300.100.1.42": "pagerTelephoneNumber",
	"0.9.2342.19200300.100.1.43": "friendlyCountryName",
	"0.9.2342.19200300.100.1.44": "uid",
	"0.9.2342.19200300.100.1.45": "organizationalStatus",
	"0.9.2342.19200300.100.1.46": "janetMailbox",
	"0.9.2342.19200300.100.1.47": "mailPreferenceOption",
	"0.9.2342.19200300.100.1.48": "buildingName",
	"0.9.2342.19200300.100.1.49": "dSAQuality",
	"0.9.2342.19200300.100.1.50": "singleLevelQuality",
	"0.9.2342.19200300.100.1.51": "subtreeMinimumQuality",
	"0.9.2342.19200300.100.1.52": "subtreeMaximumQuality",
	"0.9.2342.19200300.100.1.53": "personalSignature",
	"0.9.2342.19200300.100.1.54": "dITRedirect",
	"0.9.2342.19200300.100.1.55": "audio",
	"0.9.2342.19200300.100.1.56": "documentPublisher",
	// PKCS #9.
	"1.2.840.113549.1.9.1":  "emailAddress",
	"1.2.840.113549.1.9.2":  "unstructuredName",
	"1.2.840.113549.1.9.3":  "contentType",
	"1.2.840.113549.1.9.4":  "messageDigest",
	"1.2.840.113549.1.9.5":  "signingTime",
	"1.2.840.113549.1.9.6":  "countersignature",
	"1.2.840.113549.1.9.7":  "challengePassword",
	"1.2.840.113549.1.9.8":  "unstructuredAddress",
	"1.2.840.113549.1.9.9":  "extendedCertificateAttributes",
	"1.2.840.113549.1.9.14": "extReq",
	"1.2.840.113549.1.9.15": "SMIME-CAPS",
	"1.2.840.113549.1.9.16": "SMIME",
	"1.2.840.113549.1.9.20": "friendlyName",
	"1.2.840.113549.1.9.21": "localKeyID",
	// EV jurisdiction.
	"1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
	"1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
	"1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
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
