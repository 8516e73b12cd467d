package livekit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
)

// jwtHeader is the encoded header of every token: HS256, as
// auth.AccessToken signs.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Signer signs tokens with one API key, for a server that signs one for
// every admitted join. It keeps HMAC states keyed with the secret and reuses
// them, so that a token costs the hashing of its own bytes and not of the
// secret's again, and the buffers tokens are written in. It is safe for
// concurrent use.
type Signer struct {
	key  APIKey
	pool sync.Pool // of *signing, its mac keyed with key.Secret
}

// signing is what signing a token needs: the keyed hash, reset before use,
// and buffers for the claims, the token and the signature, which only the
// returned string outlives.
type signing struct {
	mac           hash.Hash
	claims, token []byte
	sum           [sha256.Size]byte
}

// Signer returns a Signer with k. Check k with Validate first.
func (k APIKey) Signer() *Signer {
	s := &Signer{key: k}
	s.pool.New = func() any { return &signing{mac: hmac.New(sha256.New, []byte(k.Secret))} }
	return s
}

// String names the key and hides the secret.
func (s *Signer) String() string { return s.key.String() }

// Sign is APIKey.Sign with the signer's key.
func (s *Signer) Sign(identity string, grant *auth.VideoGrant, ttl time.Duration) (string, error) {
	if err := signable(identity, grant, ttl); err != nil {
		return "", err
	}
	st := s.pool.Get().(*signing)
	defer s.pool.Put(st)
	st.mac.Reset()
	return sign(s.key, st, identity, grant, time.Now(), ttl.Truncate(time.Second)), nil
}

// sign returns the token auth.AccessToken.ToJWT makes for identity and grant,
// issued at now and valid for ttl: the same claims, under the same names,
// signed with the same HMAC (st.mac, keyed with key's secret and reset), in
// st's buffers. It writes the claims by hand rather than through
// encoding/json's reflection, which costs more than the rest of a Join; a
// test proves that LiveKit's own verifier reads back exactly what ToJWT
// would have signed.
func sign(key APIKey, st *signing, identity string, grant *auth.VideoGrant, now time.Time, ttl time.Duration) string {
	iat := now.Unix()
	claims := append(st.claims[:0], `{"iss":`...)
	claims = appendString(claims, key.Key)
	claims = append(claims, `,"sub":`...)
	claims = appendString(claims, identity)
	claims = append(claims, `,"exp":`...)
	claims = strconv.AppendInt(claims, now.Add(ttl).Unix(), 10)
	claims = append(claims, `,"nbf":`...)
	claims = strconv.AppendInt(claims, iat, 10)
	claims = append(claims, `,"iat":`...)
	claims = strconv.AppendInt(claims, iat, 10)
	claims = append(claims, `,"identity":`...)
	claims = appendString(claims, identity)
	claims = append(claims, `,"video":`...)
	claims = appendVideoGrant(claims, grant)
	claims = append(claims, '}')

	enc := base64.RawURLEncoding
	token := slices.Grow(st.token[:0], len(jwtHeader)+1+enc.EncodedLen(len(claims))+1+enc.EncodedLen(sha256.Size))
	token = append(token, jwtHeader...)
	token = append(token, '.')
	token = enc.AppendEncode(token, claims)
	st.mac.Write(token)
	token = append(token, '.')
	token = enc.AppendEncode(token, st.mac.Sum(st.sum[:0]))
	st.claims, st.token = claims, token
	return string(token)
}

// appendVideoGrant writes the fields of g that VideoGrant sets, as
// encoding/json writes them (omitting what is empty, in the struct's order).
func appendVideoGrant(b []byte, g *auth.VideoGrant) []byte {
	b = append(b, '{')
	first := true
	field := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
	}
	flag := func(name string, v bool) {
		if v {
			field(name)
			b = append(b, "true"...)
		}
	}
	optional := func(name string, v *bool) {
		if v != nil {
			field(name)
			b = strconv.AppendBool(b, *v)
		}
	}
	flag("roomRecord", g.RoomRecord)
	flag("roomAdmin", g.RoomAdmin)
	flag("roomJoin", g.RoomJoin)
	if g.Room != "" {
		field("room")
		b = appendString(b, g.Room)
	}
	optional("canPublish", g.CanPublish)
	optional("canSubscribe", g.CanSubscribe)
	optional("canPublishData", g.CanPublishData)
	if len(g.CanPublishSources) > 0 {
		field("canPublishSources")
		b = append(b, '[')
		for i, s := range g.CanPublishSources {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		b = append(b, ']')
	}
	flag("hidden", g.Hidden)
	return append(b, '}')
}

// appendString writes s as a JSON string, as encoding/json writes it.
// Names are plain ASCII, which needs no escaping; anything else goes
// through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
