package livekit

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/livekit/protocol/auth"
	lkproto "github.com/livekit/protocol/livekit"

	"github.com/usher-authz/usher/authz"
)

// Mapping says which Usher permission gives each field of LiveKit's video
// grant. A field that names no permission is never granted: forgetting a
// line of the mapping takes a power away rather than handing it to everyone.
//
// In a policy it reads:
//
//	room_join: join-call
//	can_publish_sources: {microphone: send-audio, camera: send-video, screen_share: screenshare}
//	can_subscribe: join-call
//	can_publish_data: create-reaction
//	room_admin: update-call-permissions
//	hidden: join-backstage
//
// room_record may name permissions too, but LiveKit checks roomRecord
// against no room: a token that carries it may record every room of the
// LiveKit server.
type Mapping struct {
	// RoomJoin gives roomJoin; it is required, and a participant who does
	// not hold it gets no token at all.
	RoomJoin string `json:"room_join" yaml:"room_join"`
	// CanPublish, when set, must be held for any publishing. With
	// CanPublishSources empty it gives canPublish for every source.
	CanPublish string `json:"can_publish,omitempty" yaml:"can_publish,omitempty"`
	// CanPublishSources maps a LiveKit track source (camera, microphone,
	// screen_share, screen_share_audio) to the permission that lets a
	// participant publish it, or to several, separated by commas, all of
	// which it must hold: the client names a track's source, so audio
	// published as screen_share_audio is heard as a microphone is, and
	// "screenshare,send-audio" keeps a participant muted by a block of
	// send-audio from speaking through it. canPublish is true when at least
	// one source is granted.
	CanPublishSources map[string]string `json:"can_publish_sources,omitempty" yaml:"can_publish_sources,omitempty"`
	// CanSubscribe gives canSubscribe.
	CanSubscribe string `json:"can_subscribe,omitempty" yaml:"can_subscribe,omitempty"`
	// CanPublishData gives canPublishData (chat, reactions, data messages).
	CanPublishData string `json:"can_publish_data,omitempty" yaml:"can_publish_data,omitempty"`
	// RoomAdmin gives roomAdmin: moderating the room through LiveKit's API,
	// which mutes and removes participants and sets any participant's
	// permissions, its holder's own included. It may name several
	// permissions, separated by commas, all of which a participant must
	// hold, so that the token carries no power its holder's capabilities do
	// not: "mute-users,remove-call-member,update-call-permissions". It is
	// also given only to a participant who holds every permission the
	// mapping's publishing, subscribing, data and hidden fields name, each
	// of which LiveKit's UpdateParticipant sets: one whom a block mutes,
	// say, gets no roomAdmin, with which it could unmute itself.
	RoomAdmin string `json:"room_admin,omitempty" yaml:"room_admin,omitempty"`
	// RoomRecord gives roomRecord: starting and stopping every egress,
	// recordings and broadcasts alike, of every room of the LiveKit server
	// (LiveKit checks it against no room). Like RoomAdmin it may name
	// several permissions, all required.
	RoomRecord string `json:"room_record,omitempty" yaml:"room_record,omitempty"`
	// Hidden gives hidden: the participant is invisible to the others.
	Hidden string `json:"hidden,omitempty" yaml:"hidden,omitempty"`
}

// Sources are LiveKit's track sources a Mapping may name, in the order a
// token lists them.
var Sources = []string{"camera", "microphone", "screen_share", "screen_share_audio"}

// sourceEnum holds LiveKit's enum value of each source, so that a source
// name LiveKit would not recognise is refused here rather than silently
// read as "unknown" by the SFU.
var sourceEnum = map[string]lkproto.TrackSource{
	"camera":             lkproto.TrackSource_CAMERA,
	"microphone":         lkproto.TrackSource_MICROPHONE,
	"screen_share":       lkproto.TrackSource_SCREEN_SHARE,
	"screen_share_audio": lkproto.TrackSource_SCREEN_SHARE_AUDIO,
}

// Validate checks that room_join is set, that every source is one of
// Sources and that every permission is well formed. Whether the permissions
// are declared is for the policy that holds the mapping to check, against
// its catalog (see Permissions). Errors are *authz.Error values naming the
// field, e.g. `can_publish_sources.camera "Send Video": ...`.
func (m Mapping) Validate() error {
	if m.RoomJoin == "" {
		return &authz.Error{Code: authz.Invalid, Field: "room_join", Value: "",
			Reason: "a mapping must name the permission that gives roomJoin, or no participant could enter a room"}
	}
	for _, f := range m.fields() {
		for _, perm := range f.perms() {
			if err := authz.ValidatePermission(f.name, perm); err != nil {
				return err
			}
		}
	}
	for _, src := range slices.Sorted(maps.Keys(m.CanPublishSources)) {
		if _, ok := sourceEnum[src]; !ok {
			return &authz.Error{Code: authz.Invalid, Field: "can_publish_sources", Value: src,
				Reason: "not a LiveKit track source; one of " + strings.Join(Sources, ", ")}
		}
		field := "can_publish_sources." + src
		perms := m.CanPublishSources[src]
		if perms == "" {
			return &authz.Error{Code: authz.Invalid, Field: field, Value: perms,
				Reason: "a source must name the permission that lets a participant publish it; leave the source out to refuse it to everyone"}
		}
		if n := strings.Count(perms, ",") + 1; n > authz.MaxRuleRoles {
			return &authz.Error{Code: authz.Invalid, Field: field, Value: fmt.Sprint(n), Reason: fmt.Sprintf("at most %d permissions", authz.MaxRuleRoles)}
		}
		for _, perm := range authz.MediaPermissions(perms) {
			if err := authz.ValidatePermission(field, perm); err != nil {
				return err
			}
		}
	}
	return nil
}

// Permissions lists every permission the mapping names, sorted and without
// repeats, for a policy to check against its catalog.
func (m Mapping) Permissions() []string {
	var out []string
	for _, f := range m.fields() {
		out = append(out, f.perms()...)
	}
	for _, p := range m.CanPublishSources {
		out = append(out, authz.MediaPermissions(p)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// mappedField is a field that names permissions: one, or, for a list,
// every one of a comma-separated list.
type mappedField struct {
	name, perm string
	list       bool
}

// perms are the permissions the field names; none when it is empty.
func (f mappedField) perms() []string {
	if f.list {
		return authz.MediaPermissions(f.perm)
	}
	if f.perm == "" {
		return nil
	}
	return []string{f.perm}
}

// fields are the fields that name permissions outside
// can_publish_sources, by their YAML names.
func (m Mapping) fields() []mappedField {
	return []mappedField{
		{name: "room_join", perm: m.RoomJoin},
		{name: "can_publish", perm: m.CanPublish},
		{name: "can_subscribe", perm: m.CanSubscribe},
		{name: "can_publish_data", perm: m.CanPublishData},
		{name: "room_admin", perm: m.RoomAdmin, list: true},
		{name: "room_record", perm: m.RoomRecord, list: true},
		{name: "hidden", perm: m.Hidden},
	}
}

// VideoGrant is the grant for a participant of room who holds granted, the
// effective permissions ListPermissions returns for the call.
//
// LiveKit reads an unset canPublish, canSubscribe or canPublishData as
// true, and an empty canPublishSources as "every source", so every one of
// them is set explicitly here, and canPublish is false whenever no source is
// granted: a participant muted on every source must not fall back to
// publishing them all.
func (m Mapping) VideoGrant(room string, granted []string) *auth.VideoGrant {
	// granted is a participant's few permissions: a scan beats a set.
	held := func(perm string) bool { return slices.Contains(granted, perm) }
	has := func(perm string) bool { return perm != "" && held(perm) }
	// hasAll reads a comma-separated list in place: a join makes no list.
	hasAll := func(perms string) bool {
		for rest := perms; rest != ""; {
			var perm string
			perm, rest, _ = strings.Cut(rest, ",")
			if !held(perm) {
				return false
			}
		}
		return perms != ""
	}

	g := &auth.VideoGrant{
		Room:       room,
		RoomJoin:   has(m.RoomJoin),
		RoomAdmin:  hasAll(m.RoomAdmin),
		RoomRecord: hasAll(m.RoomRecord),
		Hidden:     has(m.Hidden),
	}
	publish := m.CanPublish == "" || held(m.CanPublish)
	var sources []string
	if len(m.CanPublishSources) == 0 {
		publish = has(m.CanPublish)
	} else if publish {
		for _, src := range Sources {
			if perms, ok := m.CanPublishSources[src]; ok && hasAll(perms) {
				sources = append(sources, src)
			}
		}
		publish = len(sources) > 0
	}
	g.SetCanPublish(publish)
	if publish && len(sources) > 0 {
		// The names SetCanPublishSources would write, which Sources are,
		// without making each anew.
		g.CanPublishSources = sources
	}
	g.SetCanSubscribe(has(m.CanSubscribe))
	g.SetCanPublishData(has(m.CanPublishData))
	if g.RoomAdmin {
		// roomAdmin would let the participant give itself what it lacks.
		for _, perms := range m.CanPublishSources {
			g.RoomAdmin = g.RoomAdmin && hasAll(perms)
		}
		for _, perm := range []string{m.CanPublish, m.CanSubscribe, m.CanPublishData, m.Hidden} {
			g.RoomAdmin = g.RoomAdmin && (perm == "" || held(perm))
		}
	}
	return g
}
