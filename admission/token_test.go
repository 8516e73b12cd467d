package admission_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
	"github.com/usher-authz/usher/storage/memory"
)

var tokenKey = livekit.APIKey{Key: "APIadmission", Secret: "admission-test-secret-0123456789abcdef"}

// tokenLease is the lease of the token policy's calls, and so the longest a
// token may live.
const tokenLease = 20 * time.Second

// tokenPolicy maps every field of LiveKit's video grant to a permission of
// its own, so that each field can be seen to follow its permission.
// room.enter (roomJoin) is apart from call.join (the rule's join
// permission), for a subject may hold one without the other.
func tokenPolicy() authz.Policy {
	perms := []string{"call.join", "room.enter", "send-audio", "send-video", "screenshare", "subscribe", "chat", "moderate", "record", "hide"}
	var p authz.Policy
	for _, n := range perms {
		p.Permissions = append(p.Permissions, authz.Permission{Name: n})
	}
	p.Resources = []authz.Resource{{Name: "account:acme"}, {Name: "call:acme:1", Parent: "account:acme"}}
	p.Roles = []authz.Role{
		{Name: "host", Scope: "root", Permissions: []string{"*"}},
		{Name: "member", Scope: "root", Permissions: []string{"call.join", "room.enter", "send-audio", "send-video", "screenshare", "subscribe", "chat"}},
		{Name: "viewer", Scope: "root", Permissions: []string{"call.join", "room.enter", "subscribe"}},
		{Name: "recorder", Scope: "root", Permissions: []string{"call.join", "room.enter", "subscribe", "record", "hide"}},
		{Name: "talker", Scope: "root", Permissions: []string{"call.join", "room.enter", "send-audio"}},
		// Holds the join permission but not roomJoin's.
		{Name: "outsider", Scope: "root", Permissions: []string{"call.join", "subscribe"}},
	}
	p.Admissions = []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: tokenLease,
		Media: &authz.MediaMapping{
			RoomJoin:          "room.enter",
			CanPublishSources: map[string]string{"microphone": "send-audio", "camera": "send-video", "screen_share": "screenshare", "screen_share_audio": "screenshare,send-audio"},
			CanSubscribe:      "subscribe",
			CanPublishData:    "chat",
			RoomAdmin:         "moderate",
			RoomRecord:        "record",
			Hidden:            "hide",
		}}}
	return p
}

// newTokenWorld is an engine on the system clock, since LiveKit stamps
// tokens with it, and a manager that signs with tokenKey (or none).
func newTokenWorld(t *testing.T, key *livekit.APIKey) *world {
	t.Helper()
	return newTokenWorldWith(t, admission.Options{LiveKit: key})
}

// newTokenWorldWith is newTokenWorld with the manager's options.
func newTokenWorldWith(t *testing.T, opts admission.Options) *world {
	t.Helper()
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	w := &world{t: t, ctx: t.Context(), eng: eng, by: authz.Author{Caller: "test"}}
	if _, _, err := eng.ApplyPolicy(w.ctx, w.by, tokenPolicy(), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.m = admission.New(eng, opts)
	t.Cleanup(func() { w.m.Close() })
	return w
}

// lkGrant is what a test compares of a video grant.
type lkGrant struct {
	join, publish, subscribe, data, admin, record, hidden bool
	sources                                               []string
}

func readLKGrant(g *auth.VideoGrant) lkGrant {
	out := lkGrant{join: g.RoomJoin, publish: g.GetCanPublish(), subscribe: g.GetCanSubscribe(), data: g.GetCanPublishData(),
		admin: g.RoomAdmin, record: g.RoomRecord, hidden: g.Hidden}
	for _, s := range g.CanPublishSources {
		out.sources = append(out.sources, strings.ToLower(s))
	}
	slices.Sort(out.sources)
	return out
}

func TestAnAdmittedJoinCarriesATokenLiveKitAccepts(t *testing.T) {
	w := newTokenWorld(t, &tokenKey)
	const call = "call:acme:1"
	all := []string{"camera", "microphone", "screen_share", "screen_share_audio"}
	tests := []struct {
		name    string
		role    string
		blocked []string // permissions a block on the call takes away
		want    lkGrant
	}{
		{"a host's token grants every field", "host", nil,
			lkGrant{join: true, publish: true, subscribe: true, data: true, admin: true, record: true, hidden: true, sources: all}},
		{"a member publishes every source, visibly, without admin or record", "member", nil,
			lkGrant{join: true, publish: true, subscribe: true, data: true, sources: all}},
		{"a member blocked from send-audio gets no microphone, nor the screen's audio", "member", []string{"send-audio"},
			lkGrant{join: true, publish: true, subscribe: true, data: true, sources: []string{"camera", "screen_share"}}},
		{"a member blocked from screenshare shares neither the screen nor its audio", "member", []string{"screenshare"},
			lkGrant{join: true, publish: true, subscribe: true, data: true, sources: []string{"camera", "microphone"}}},
		{"a member blocked from every source publishes nothing", "member", []string{"send-audio", "send-video", "screenshare"},
			lkGrant{join: true, subscribe: true, data: true}},
		{"a viewer without any publishing permission has canPublish false", "viewer", nil,
			lkGrant{join: true, subscribe: true}},
		{"a recorder is hidden and records", "recorder", nil,
			lkGrant{join: true, subscribe: true, record: true, hidden: true}},
		{"a talker publishes its microphone only, and neither subscribes nor sends data", "talker", nil,
			lkGrant{join: true, publish: true, sources: []string{"microphone"}}},
		{"a host blocked from moderate is no room admin", "host", []string{"moderate"},
			lkGrant{join: true, publish: true, subscribe: true, data: true, record: true, hidden: true, sources: all}},
		{"a host blocked from hide is no room admin, with which it could hide itself", "host", []string{"hide"},
			lkGrant{join: true, publish: true, subscribe: true, data: true, record: true, sources: all}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject := "user:" + strings.Repeat("x", i+1)
			w.grant(subject, tt.role, call)
			if tt.blocked != nil {
				if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: subject, Resource: call, Permissions: tt.blocked}); err != nil {
					t.Fatal(err)
				}
			}
			before := time.Now()
			r := w.wantJoin(subject, call, admission.Admitted)
			after := time.Now()
			if r.Token == "" || r.Grant == nil {
				t.Fatalf("an admitted join with a LiveKit mapping and key carries no token: %+v", r)
			}
			v, err := auth.ParseAPIToken(r.Token)
			if err != nil {
				t.Fatalf("auth.ParseAPIToken: %v", err)
			}
			claims, grants, err := v.Verify(tokenKey.Secret)
			if err != nil {
				t.Fatalf("LiveKit's verifier refuses the token: %v", err)
			}
			if _, _, err := v.Verify("another-secret-another-secret-0123456789"); err == nil {
				t.Error("the token verifies with another secret")
			}
			if v.APIKey() != tokenKey.Key {
				t.Errorf("api key %q, want %q", v.APIKey(), tokenKey.Key)
			}
			if v.Identity() != subject || grants.Identity != subject {
				t.Errorf("identity %q / %q, want the subject %q", v.Identity(), grants.Identity, subject)
			}
			if grants.Video == nil || grants.Video.Room != call {
				t.Fatalf("video grant %+v, want room %q", grants.Video, call)
			}
			exp := claims.ExpiresAt.Time
			if !exp.After(before) || exp.After(after.Add(r.Lease)) {
				t.Errorf("token expires at %s; want after now (%s) and no later than now + lease %s (%s)",
					exp, before, r.Lease, after.Add(r.Lease))
			}
			if r.Lease != tokenLease {
				t.Errorf("lease %s, want the rule's %s", r.Lease, tokenLease)
			}
			if got := readLKGrant(grants.Video); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("signed grant = %+v\nwant           %+v\n(capabilities %v)", got, tt.want, r.Capabilities)
			}
			if !reflect.DeepEqual(grants.Video, r.Grant) {
				t.Errorf("the signed grant %+v differs from the one Join reports %+v", grants.Video, r.Grant)
			}
			for _, p := range tt.blocked {
				if slices.Contains(r.Capabilities, p) {
					t.Errorf("capabilities %v hold the blocked %q", r.Capabilities, p)
				}
			}
		})
	}
}

func TestJoinWithoutRoomJoinGetsNoToken(t *testing.T) {
	w := newTokenWorld(t, &tokenKey)
	w.grant("user:outsider", "outsider", "call:acme:1")
	r := w.wantJoin("user:outsider", "call:acme:1", admission.NoGrant)
	if r.Token != "" || r.Grant != nil || r.Session != "" {
		t.Errorf("a subject without roomJoin's permission got token %q, grant %+v, session %q", r.Token, r.Grant, r.Session)
	}
	if !strings.Contains(r.Reason, `"room.enter"`) {
		t.Errorf("reason %q does not name the missing room_join permission", r.Reason)
	}
	// It made no session: the call is empty for a watcher.
	watch, err := w.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if len(watch.Initial) != 1 || watch.Initial[0].Kind != admission.EventSynced {
		t.Errorf("a NO_GRANT join left state behind: %+v", watch.Initial)
	}
}

// Knock answers what Join would where there is no lobby to wait in: a
// subject without roomJoin's permission is NO_GRANT, naming it, and one with
// it may join without knocking; neither is put anywhere.
func TestAKnockAnswersWhatJoinWouldOfRoomJoin(t *testing.T) {
	w := newTokenWorld(t, &tokenKey)
	w.grant("user:outsider", "outsider", "call:acme:1")
	w.grant("user:member", "member", "call:acme:1")
	r, err := w.m.Knock(w.ctx, "", "user:outsider", "call:acme:1", "")
	if err != nil || r.Outcome != admission.NoGrant || !strings.Contains(r.Reason, `"room.enter"`) {
		t.Errorf("Knock without roomJoin's permission = %s (%q), %v; want NO_GRANT naming room.enter", r.Outcome, r.Reason, err)
	}
	r, err = w.m.Knock(w.ctx, "", "user:member", "call:acme:1", "")
	if err != nil || r.Outcome != admission.Admitted || !strings.Contains(r.Reason, "without knocking") {
		t.Errorf("Knock of a member = %s (%q), %v; want ADMITTED, without knocking", r.Outcome, r.Reason, err)
	}
	if r.Session != "" || r.Token != "" || r.Grant != nil {
		t.Errorf("a Knock that knocked nowhere answered session %q, token %q, grant %+v", r.Session, r.Token, r.Grant)
	}
	if c := w.m.Counts(); c.Sessions != 0 || c.Knocks != 0 {
		t.Errorf("the knocks left %d sessions and %d knocks, want none", c.Sessions, c.Knocks)
	}
}

func TestWithoutAKeyAJoinCarriesTheGrantButNoToken(t *testing.T) {
	w := newTokenWorld(t, nil)
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	if r.Token != "" {
		t.Errorf("a manager without a key signed a token")
	}
	if r.Grant == nil || !r.Grant.RoomJoin || r.Grant.Room != "call:acme:1" {
		t.Errorf("grant %+v, want the member's video grant", r.Grant)
	}
}

// A token outlives neither the lease nor the grant it was signed from: a
// media server cannot take it back, and with it the subject could connect
// again after the grant ran out. The session keeps the rule's lease; its
// KeepAlive after the grant ran out ends it.
func TestATokenOutlivesNoGrantItWasSignedFrom(t *testing.T) {
	w := newTokenWorld(t, &tokenKey)
	const call, subject = "call:acme:1", "user:brief"
	before := time.Now()
	expires := before.Add(8 * time.Second)
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: subject, Role: "member", Resource: call, Expires: expires}); err != nil {
		t.Fatal(err)
	}
	r := w.wantJoin(subject, call, admission.Admitted)
	if r.Lease != tokenLease {
		t.Errorf("lease %s, want the rule's %s", r.Lease, tokenLease)
	}
	claims := verifiedClaims(t, r.Token)
	// LiveKit stamps whole seconds: the token may end up to a second
	// before the grant, never after it.
	if exp := claims.ExpiresAt.Time; exp.After(expires) || exp.Before(expires.Add(-2*time.Second)) {
		t.Errorf("the token expires at %s, the grant at %s: want the token to end with the grant, no later", exp, expires)
	}
}

// A participant who loses roomJoin's permission mid-call may no longer join
// (Join answers NO_GRANT), so it may no longer stay either: LiveKit's
// UpdateParticipant has no roomJoin to take away, and a CHANGED event with
// roomJoin false would leave it in the room, its session renewed for good.
func TestAParticipantWhoLosesRoomJoinIsEjected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		loses func(w *world, subject, call string)
	}{
		{"a block of roomJoin's permission", func(w *world, subject, call string) {
			if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: subject, Resource: call, Permissions: []string{"room.enter"}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"a demotion to a role without it", func(w *world, subject, call string) {
			w.grant(subject, "outsider", call)
			if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: subject, Role: "member", Resource: call}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTokenWorld(t, &tokenKey)
			const call, subject = "call:acme:1", "user:member"
			w.grant(subject, "member", call)
			r := w.wantJoin(subject, call, admission.Admitted)
			watch := w.watch(call)
			tc.loses(w, subject, call)
			if again := w.join(subject, call); again.Outcome != admission.NoGrant {
				t.Fatalf("a new Join = %s (%s), want NO_GRANT", again.Outcome, again.Reason)
			}
			// The new Join made no session, so the old one is the subject's.
			ev := nextEvent(t, watch, "EJECTED of the participant without roomJoin", func(ev admission.Event) bool {
				return ev.Subject == subject && (ev.Kind == admission.EventEjected || ev.Kind == admission.EventChanged && ev.Grant != nil && !ev.Grant.RoomJoin)
			})
			if ev.Kind != admission.EventEjected || ev.Outcome != admission.NoGrant || ev.Session != r.Session {
				t.Errorf("event = %+v, want EJECTED of session %s with NO_GRANT", ev, r.Session)
			}
			if ren, err := w.m.KeepAlive(w.ctx, r.Session); err != nil || ren.Outcome != admission.NoGrant || !ren.Expires.IsZero() {
				t.Errorf("KeepAlive = %+v, %v; want NO_GRANT and no renewal", ren, err)
			}
		})
	}
}

// slowJoinStore takes delay to make each session, as a cluster store does
// when many joins of one call queue behind each other.
type slowJoinStore struct {
	*admission.MemoryStore
	delay time.Duration
}

func (s slowJoinStore) Join(ctx context.Context, sess admission.Session, max uint32) (admission.Outcome, string, error) {
	time.Sleep(s.delay)
	return s.MemoryStore.Join(ctx, sess, max)
}

// A token is valid from when it is signed: a Join that waited on its store
// signs one that still ends with the session's lease, and with the grant
// it was admitted by, not that long after them.
func TestATokenOfASlowJoinOutlivesNeitherTheLeaseNorTheGrant(t *testing.T) {
	const delay = 2500 * time.Millisecond
	for _, grantFor := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprintf("a grant for %s", grantFor), func(t *testing.T) {
			w := newTokenWorldWith(t, admission.Options{LiveKit: &tokenKey,
				Store: slowJoinStore{admission.NewMemoryStore(admission.MemoryOptions{}), delay}})
			const call, subject = "call:acme:1", "user:member"
			g := authz.Grant{Subject: subject, Role: "member", Resource: call}
			if grantFor > 0 {
				g.Expires = time.Now().Add(grantFor)
			}
			if _, err := w.eng.Grant(w.ctx, w.by, g); err != nil {
				t.Fatal(err)
			}
			r := w.wantJoin(subject, call, admission.Admitted)
			claims := verifiedClaims(t, r.Token)
			exp := claims.ExpiresAt.Time
			if exp.After(r.Expires) {
				t.Errorf("the token expires at %s, after the session's lease (%s)", exp, r.Expires)
			}
			if grantFor > 0 && exp.After(g.Expires) {
				t.Errorf("the token expires at %s, after the grant it was signed from (%s)", exp, g.Expires)
			}
		})
	}
}

// A Join that waits on its store until the grant it was admitted by has
// run out is decided again: a token signed then, valid for the second a
// token lasts at least, would let a subject whose grant ended enter the
// room with it.
func TestAJoinThatOutwaitsItsGrantIsDecidedAgain(t *testing.T) {
	w := newTokenWorldWith(t, admission.Options{LiveKit: &tokenKey,
		Store: slowJoinStore{admission.NewMemoryStore(admission.MemoryOptions{}), time.Second}})
	const call, subject = "call:acme:1", "user:member"
	g := authz.Grant{Subject: subject, Role: "member", Resource: call, Expires: time.Now().Add(400 * time.Millisecond)}
	if _, err := w.eng.Grant(w.ctx, w.by, g); err != nil {
		t.Fatal(err)
	}
	r := w.join(subject, call)
	if r.Outcome == admission.Admitted {
		exp := verifiedClaims(t, r.Token).ExpiresAt.Time
		t.Fatalf("Join = ADMITTED with a token that expires at %s, after the grant it was signed from (%s); want NO_GRANT", exp, g.Expires)
	}
	if r.Outcome != admission.NoGrant || r.Token != "" || r.Session != "" {
		t.Fatalf("Join = %s (%s), token %q, session %q; want NO_GRANT without either", r.Outcome, r.Reason, r.Token, r.Session)
	}
	// The session the first decision made ends with it (the view may be
	// ending it, having seen the grant run out).
	eventually(t, "no session live after the join was refused", func() bool { return w.m.Counts().Sessions == 0 })
}

// verifiedClaims are the claims of token, which LiveKit's own verifier
// accepts with tokenKey.
func verifiedClaims(t *testing.T, token string) *jwt.RegisteredClaims {
	t.Helper()
	v, err := auth.ParseAPIToken(token)
	if err != nil {
		t.Fatalf("auth.ParseAPIToken: %v", err)
	}
	claims, _, err := v.Verify(tokenKey.Secret)
	if err != nil {
		t.Fatalf("LiveKit's verifier refuses the token: %v", err)
	}
	return claims
}

// farStore is a memory store the manager takes for one a round trip away:
// its joins are told to the view as another node's would be.
type farStore struct{ *admission.MemoryStore }

// A write that takes capabilities away, committed while a Join writes its
// session, is in the Join's answer and its token as in the JOINED event the
// call's watchers hear: a media server that follows WatchCall is told of
// every later change as CHANGED, and of none before.
func TestAJoinAnswersWhatItsWatchersAreTold(t *testing.T) {
	const call = "call:acme:1"
	muteEnds := time.Now().Add(5 * time.Second)
	writes := []struct {
		name  string
		roles []string
		write func(w *world) (authz.Revision, error)
		want  lkGrant
		// until bounds the token's expiry, when the write makes the
		// standing end sooner than the lease.
		until time.Time
	}{
		{"a mute", []string{"member"}, func(w *world) (authz.Revision, error) {
			rev, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:m", Resource: call, Permissions: []string{"send-audio"}})
			return rev, err
		}, lkGrant{join: true, publish: true, subscribe: true, data: true, sources: []string{"camera", "screen_share"}}, time.Time{}},
		{"a host demoted to member", []string{"member", "host"}, func(w *world) (authz.Revision, error) {
			return w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:m", Role: "host", Resource: call})
		}, lkGrant{join: true, publish: true, subscribe: true, data: true, sources: []string{"camera", "microphone", "screen_share", "screen_share_audio"}}, time.Time{}},
		{"a mute for five seconds", []string{"member"}, func(w *world) (authz.Revision, error) {
			rev, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:m", Resource: call, Permissions: []string{"send-audio"}, Expires: muteEnds})
			return rev, err
		}, lkGrant{join: true, publish: true, subscribe: true, data: true, sources: []string{"camera", "screen_share"}}, muteEnds},
	}
	stores := []struct {
		name string
		make func() admission.Store
	}{
		{"the node's store", func() admission.Store { return admission.NewMemoryStore(admission.MemoryOptions{}) }},
		{"a store a round trip away", func() admission.Store { return farStore{admission.NewMemoryStore(admission.MemoryOptions{})} }},
	}
	for _, st := range stores {
		for _, c := range writes {
			t.Run(st.name+"/"+c.name, func(t *testing.T) {
				w := newTokenWorldWith(t, admission.Options{LiveKit: &tokenKey, Store: st.make()})
				for _, role := range c.roles {
					w.grant("user:m", role, call)
				}
				watch := w.watch(call)
				var wrote authz.Revision
				w.m.WriteWhileJoining(func() {
					rev, err := c.write(w)
					if err != nil {
						t.Errorf("the write: %v", err)
					}
					wrote = rev
				})
				r := w.join("user:m", call)
				if r.Outcome != admission.Admitted || r.Revision >= wrote {
					t.Fatalf("Join = %s at revision %d, the write at %d; want it admitted, read before the write", r.Outcome, r.Revision, wrote)
				}
				now := w.eng.Index().Presence("user:m", call)
				if !slices.Equal(r.Capabilities, now.Capabilities) {
					t.Errorf("capabilities %v, want %v as the write left them", r.Capabilities, now.Capabilities)
				}
				if got := readLKGrant(r.Grant); !reflect.DeepEqual(got, c.want) {
					t.Errorf("the answer's grant %+v, want %+v", got, c.want)
				}
				claims := verifiedClaims(t, r.Token)
				v, err := auth.ParseAPIToken(r.Token)
				if err != nil {
					t.Fatal(err)
				}
				_, grants, err := v.Verify(tokenKey.Secret)
				if err != nil {
					t.Fatal(err)
				}
				if got := readLKGrant(grants.Video); !reflect.DeepEqual(got, c.want) {
					t.Errorf("the token's grant %+v, want %+v", got, c.want)
				}
				if !c.until.IsZero() && claims.ExpiresAt.After(c.until) {
					t.Errorf("the token expires at %s, after the mute ends at %s", claims.ExpiresAt.Time, c.until)
				}
				joined := nextEvent(t, watch, "JOINED", kindOf(admission.EventJoined, "user:m"))
				if !slices.Equal(joined.Capabilities, r.Capabilities) || !reflect.DeepEqual(readLKGrant(joined.Grant), c.want) {
					t.Errorf("JOINED tells %v, %+v; the answer %v, %+v", joined.Capabilities, readLKGrant(joined.Grant), r.Capabilities, readLKGrant(r.Grant))
				}
			})
		}
	}
}
