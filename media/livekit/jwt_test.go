package livekit

import (
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
		ours := sign(key, identity, grant, time.Now(), 30*time.Second)
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
