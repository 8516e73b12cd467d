package livekit_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	lkproto "github.com/livekit/protocol/livekit"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
)

var testKey = livekit.APIKey{Key: "APIusher", Secret: "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42"}

// verify checks a token the way a LiveKit server does, and returns its
// claims.
func verify(t *testing.T, token string, secret string) (*auth.APIKeyTokenVerifier, *auth.ClaimGrants, time.Time, time.Time, time.Time) {
	t.Helper()
	v, err := auth.ParseAPIToken(token)
	if err != nil {
		t.Fatalf("auth.ParseAPIToken: %v", err)
	}
	claims, grants, err := v.Verify(secret)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if claims.ExpiresAt == nil || claims.NotBefore == nil || claims.IssuedAt == nil {
		t.Fatalf("the token lacks exp, nbf or iat: %+v", claims)
	}
	return v, grants, claims.IssuedAt.Time, claims.NotBefore.Time, claims.ExpiresAt.Time
}

func TestTokenVerifiesWithLiveKitAndCarriesTheCapabilities(t *testing.T) {
	tests := []struct {
		name    string
		granted []string
		want    grant
	}{
		{"a host's token grants every field", hostCaps,
			grant{join: true, publish: true, subscribe: true, data: true, admin: true, record: true, hidden: true, sources: allSources}},
		{"a member's token publishes every source, visibly, without admin or record", memberCaps,
			grant{join: true, publish: true, subscribe: true, data: true, sources: allSources}},
		{"a muted participant's token has no microphone source, nor the screen's audio", mutedCaps,
			grant{join: true, publish: true, subscribe: true, data: true, sources: []lkproto.TrackSource{camera, screen}}},
		{"a participant with no source publishes nothing", viewerCaps,
			grant{join: true, subscribe: true, data: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := streamMapping.Token(testKey, "user:alice", "call:meeting:7", tt.granted, 10*time.Minute)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			v, grants, _, _, _ := verify(t, token, testKey.Secret)
			if v.APIKey() != testKey.Key {
				t.Errorf("api key = %q, want %q", v.APIKey(), testKey.Key)
			}
			if v.Identity() != "user:alice" || grants.Identity != "user:alice" {
				t.Errorf("identity = %q / %q, want user:alice", v.Identity(), grants.Identity)
			}
			if grants.Video == nil {
				t.Fatal("the token has no video grant")
			}
			if grants.Video.Room != "call:meeting:7" {
				t.Errorf("room = %q", grants.Video.Room)
			}
			if got := readGrant(grants.Video); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("grant = %+v, want %+v", got, tt.want)
			}
			// What LiveKit reads is what VideoGrant computed.
			if want := streamMapping.VideoGrant("call:meeting:7", tt.granted); !reflect.DeepEqual(grants.Video, want) {
				t.Errorf("signed grant %+v differs from VideoGrant %+v", grants.Video, want)
			}
		})
	}
}

func TestTokenIsRefusedWithAnotherSecret(t *testing.T) {
	token, err := streamMapping.Token(testKey, "user:alice", "call:meeting:7", memberCaps, time.Minute)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	v, err := auth.ParseAPIToken(token)
	if err != nil {
		t.Fatalf("ParseAPIToken: %v", err)
	}
	if _, _, err := v.Verify(strings.Repeat("x", 40)); err == nil {
		t.Fatal("Verify with another secret succeeded")
	}
}

func TestTokenNeverOutlivesTheLease(t *testing.T) {
	for _, ttl := range []time.Duration{time.Second, 1500 * time.Millisecond, 59*time.Second + 999*time.Millisecond, 90 * time.Second, 6 * time.Hour} {
		t.Run(ttl.String(), func(t *testing.T) {
			before := time.Now()
			token, err := streamMapping.Token(testKey, "user:alice", "call:meeting:7", memberCaps, ttl)
			after := time.Now()
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			_, _, iat, nbf, exp := verify(t, token, testKey.Secret)
			if exp.After(after.Add(ttl)) {
				t.Errorf("exp %v is later than issue time + ttl %v", exp, after.Add(ttl))
			}
			if d := exp.Sub(iat); d > ttl {
				t.Errorf("exp - iat = %v, more than the ttl %v", d, ttl)
			}
			if d := exp.Sub(nbf); d > ttl {
				t.Errorf("exp - nbf = %v, more than the ttl %v", d, ttl)
			}
			// Cutting to whole seconds loses less than two of them.
			if earliest := before.Add(ttl - 2*time.Second); exp.Before(earliest) {
				t.Errorf("exp %v is much earlier than the lease allows (%v)", exp, earliest)
			}
			if nbf.After(after) {
				t.Errorf("nbf %v is in the future", nbf)
			}
		})
	}
}

func TestTokenRefusals(t *testing.T) {
	badMapping := streamMapping
	badMapping.RoomAdmin = "Room Admin"
	tests := []struct {
		name     string
		m        livekit.Mapping
		key      livekit.APIKey
		identity string
		room     string
		granted  []string
		ttl      time.Duration
		want     string
	}{
		{"a bad mapping names its field", badMapping, testKey, "user:a", "r", memberCaps, time.Minute, `room_admin "Room Admin"`},
		{"no ttl: LiveKit's six-hour default must never apply", streamMapping, testKey, "user:a", "r", memberCaps, 0, `ttl "0s"`},
		{"a lease under a second cannot be expressed in a JWT", streamMapping, testKey, "user:a", "r", memberCaps, 999 * time.Millisecond, `ttl "999ms"`},
		{"a negative ttl", streamMapping, testKey, "user:a", "r", memberCaps, -time.Minute, `ttl "-1m0s"`},
		{"an identity is required", streamMapping, testKey, "", "r", memberCaps, time.Minute, "identity"},
		{"a room is required", streamMapping, testKey, "user:a", "", memberCaps, time.Minute, "room"},
		{"no key", streamMapping, livekit.APIKey{Secret: testKey.Secret}, "user:a", "r", memberCaps, time.Minute, "api key"},
		{"a short secret", streamMapping, livekit.APIKey{Key: "k", Secret: "short"}, "user:a", "r", memberCaps, time.Minute, `api key "k": the secret is 5 bytes long`},
		{"no token for one who may not join", streamMapping, testKey, "user:a", "r", []string{"send-audio", "send-video"}, time.Minute, `does not hold "join-call"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := tt.m.Token(tt.key, tt.identity, tt.room, tt.granted, tt.ttl)
			if err == nil {
				t.Fatalf("Token succeeded: %s", token)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey.Secret) {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
	var e *authz.Error
	if _, err := badMapping.Token(testKey, "user:a", "r", memberCaps, time.Minute); !errors.As(err, &e) || e.Field != "room_admin" {
		t.Errorf("a bad mapping's error is %v, want an *authz.Error on room_admin", err)
	}
}
