package livekit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
)

// claimsOf decodes a token's payload, without its times.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", token, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"exp", "nbf", "iat"} {
		delete(m, k)
	}
	return m
}

// sign writes what LiveKit's own AccessToken writes, for every grant a
// mapping can give: random mappings over random permission sets, compared
// claim by claim with auth.AccessToken.ToJWT's, and verified by LiveKit's
// verifier.
func TestSignWritesWhatLiveKitWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	perms := []string{"p0", "p1", "p2", "p3", "p4", "p5"}
	pick := func() string {
		if rng.IntN(4) == 0 {
			return ""
		}
		return perms[rng.IntN(len(perms))]
	}
	key := APIKey{Key: "APIkey", Secret: "a-secret-that-is-at-least-32-bytes-long"}
	// As a Signer does, one keyed hash and one pair of buffers sign every token.
	st := &signing{mac: hmac.New(sha256.New, []byte(key.Secret))}
	for i := range 2000 {
		m := Mapping{RoomJoin: perms[rng.IntN(len(perms))], CanPublish: pick(), CanSubscribe: pick(), CanPublishData: pick(),
			RoomAdmin: pick(), RoomRecord: pick(), Hidden: pick()}
		if rng.IntN(2) == 0 {
			m.CanPublishSources = map[string]string{}
			for _, src := range Sources {
				if p := pick(); p != "" {
					m.CanPublishSources[src] = p
				}
			}
		}
		var granted []string
		for _, p := range perms {
			if rng.IntN(2) == 0 {
				granted = append(granted, p)
			}
		}
		identity, room := "user:u\"ser-"+strings.Repeat("é", i%3), "call:x/<y>&z"
		grant := m.VideoGrant(room, granted)
		st.mac.Reset()
		ours := sign(key, st, identity, grant, time.Now(), 30*time.Second)
		theirs, err := auth.NewAccessToken(key.Key, key.Secret).SetIdentity(identity).SetVideoGrant(grant).SetValidFor(30 * time.Second).ToJWT()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := claimsOf(t, ours), claimsOf(t, theirs); !reflect.DeepEqual(got, want) {
			t.Fatalf("mapping %+v, granted %v:\n ours   %v\n theirs %v", m, granted, got, want)
		}
		v, err := auth.ParseAPIToken(ours)
		if err != nil {
			t.Fatal(err)
		}
		claims, grants, err := v.Verify(key.Secret)
		if err != nil {
			t.Fatalf("LiveKit's verifier refuses the token: %v", err)
		}
		if d := claims.ExpiresAt.Sub(claims.IssuedAt.Time); d != 30*time.Second {
			t.Fatalf("exp - iat = %s, want 30s", d)
		}
		if !reflect.DeepEqual(grants.Video, grant) || grants.Identity != identity {
			t.Fatalf("LiveKit reads %+v for %s, want %+v", grants.Video, grants.Identity, grant)
		}
	}
}

func BenchmarkToken(b *testing.B) {
	m := Mapping{RoomJoin: "join", CanPublishSources: map[string]string{"camera": "video", "microphone": "audio"}, CanSubscribe: "join"}
	key := APIKey{Key: "k", Secret: "a-secret-that-is-at-least-32-bytes-long"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Token(key, "user:x", "call:y", []string{"join", "video", "audio"}, 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// A Signer refuses what APIKey.Sign refuses, with the same words.
func TestSignerRefusesWhatSignRefuses(t *testing.T) {
	key := APIKey{Key: "k", Secret: "a-secret-that-is-at-least-32-bytes-long"}
	joins := &auth.VideoGrant{RoomJoin: true, Room: "call:y"}
	for _, tc := range []struct {
		name     string
		identity string
		grant    *auth.VideoGrant
		ttl      time.Duration
		want     string
	}{
		{"no identity", "", joins, time.Minute, "identity: must not be empty"},
		{"under a second", "user:x", joins, 999 * time.Millisecond, `ttl "999ms": a token must be valid for at least 1s`},
		{"no grant", "user:x", nil, time.Minute, `identity "user:x": the grant does not join a room`},
		{"no room", "user:x", &auth.VideoGrant{RoomJoin: true}, time.Minute, `identity "user:x": the grant does not join a room`},
		{"no room_join", "user:x", &auth.VideoGrant{Room: "call:y"}, time.Minute, `identity "user:x": the grant does not join a room`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for name, sign := range map[string]func(string, *auth.VideoGrant, time.Duration) (string, error){
				"APIKey.Sign": key.Sign, "Signer.Sign": key.Signer().Sign,
			} {
				token, err := sign(tc.identity, tc.grant, tc.ttl)
				if err == nil || err.Error() != tc.want || token != "" {
					t.Errorf("%s = %q, %v; want the error %q", name, token, err, tc.want)
				}
			}
		})
	}
}

func BenchmarkSign(b *testing.B) {
	key := APIKey{Key: "k", Secret: "a-secret-that-is-at-least-32-bytes-long"}
	grant := Mapping{RoomJoin: "join", CanPublishSources: map[string]string{"camera": "video", "microphone": "audio"}, CanSubscribe: "join"}.
		VideoGrant("call:y", []string{"join", "video", "audio"})
	for name, sign := range map[string]func(string, *auth.VideoGrant, time.Duration) (string, error){
		"key": key.Sign, "signer": key.Signer().Sign,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := sign("user:x", grant, 30*time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
