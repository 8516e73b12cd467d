package livekit

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/livekit/protocol/auth"
)

// MinSecretLen is the shortest API secret accepted, in bytes: LiveKit's
// server refuses shorter ones, and an HS256 key shorter than the hash is
// weaker than the signature it protects.
const MinSecretLen = 32

// APIKey is a LiveKit API key and its secret. Its String never shows the
// secret, so that logging one by mistake leaks nothing.
type APIKey struct {
	Key    string
	Secret string
}

// Validate checks that the key is named and the secret long enough. Errors
// name the key, never the secret.
func (k APIKey) Validate() error {
	if k.Key == "" {
		return fmt.Errorf("api key: must not be empty")
	}
	if len(k.Secret) < MinSecretLen {
		return fmt.Errorf("api key %q: the secret is %d bytes long; LiveKit needs at least %d", k.Key, len(k.Secret), MinSecretLen)
	}
	return nil
}

// String names the key and hides the secret.
func (k APIKey) String() string { return k.Key + " (secret redacted)" }

// GoString is String for %#v.
func (k APIKey) GoString() string {
	return fmt.Sprintf("livekit.APIKey{Key: %q, Secret: redacted}", k.Key)
}

// Token signs a LiveKit access token for identity in room, with the grant
// VideoGrant gives for the permissions granted. The token expires no later
// than ttl from now: ttl is the session's lease, and a token that outlived
// it would let a participant whose session has ended join again. ttl is cut
// to whole seconds (JWT times are seconds), so it must be at least one.
//
// A participant who does not hold room_join gets an error rather than a
// token that cannot join: admission decides who enters, and a token is
// issued only to those it admitted.
func (m Mapping) Token(key APIKey, identity, room string, granted []string, ttl time.Duration) (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	if err := key.Validate(); err != nil {
		return "", err
	}
	if room == "" {
		return "", fmt.Errorf("room: must not be empty")
	}
	grant := m.VideoGrant(room, granted)
	if !grant.RoomJoin {
		return "", fmt.Errorf("identity %q: does not hold %q, which room_join requires, in room %q", identity, m.RoomJoin, room)
	}
	return key.Sign(identity, grant, ttl)
}

// Sign signs a token for identity with grant, valid for ttl (cut to whole
// seconds, at least one), for a grant a Mapping made: the grant must join
// its room. A server checks its key once, with Validate, and then signs
// with it for every admitted join.
func (k APIKey) Sign(identity string, grant *auth.VideoGrant, ttl time.Duration) (string, error) {
	if err := signable(identity, grant, ttl); err != nil {
		return "", err
	}
	// Like LiveKit, iat and nbf are now and exp now+ttl, each truncated to
	// the second; whole seconds keep exp-iat within ttl too.
	st := &signing{mac: hmac.New(sha256.New, []byte(k.Secret))}
	return sign(k, st, identity, grant, time.Now(), ttl.Truncate(time.Second)), nil
}

// signable refuses what Sign must not sign.
func signable(identity string, grant *auth.VideoGrant, ttl time.Duration) error {
	switch {
	case identity == "":
		return fmt.Errorf("identity: must not be empty")
	case ttl < time.Second:
		return fmt.Errorf("ttl %q: a token must be valid for at least 1s", ttl)
	case grant == nil || !grant.RoomJoin || grant.Room == "":
		return fmt.Errorf("identity %q: the grant does not join a room", identity)
	}
	return nil
}
