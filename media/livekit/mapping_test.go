package livekit_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/livekit/protocol/auth"
	lkproto "github.com/livekit/protocol/livekit"
	"go.yaml.in/yaml/v3"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
)

// streamMapping maps the default policy's call capabilities (Stream Video's)
// onto LiveKit's grant.
var streamMapping = livekit.Mapping{
	RoomJoin: "join-call",
	CanPublishSources: map[string]string{
		"microphone":         "send-audio",
		"camera":             "send-video",
		"screen_share":       "screenshare",
		"screen_share_audio": "screenshare,send-audio",
	},
	CanSubscribe:   "join-call",
	CanPublishData: "create-reaction",
	RoomAdmin:      "update-call-permissions",
	RoomRecord:     "start-record-call",
	Hidden:         "join-backstage",
}

const streamMappingYAML = `
room_join: join-call
can_publish_sources: {microphone: send-audio, camera: send-video, screen_share: screenshare, screen_share_audio: "screenshare,send-audio"}
can_subscribe: join-call
can_publish_data: create-reaction
room_admin: update-call-permissions
room_record: start-record-call
hidden: join-backstage
`

func TestMappingReadsFromYAMLAndJSON(t *testing.T) {
	var fromYAML livekit.Mapping
	dec := yaml.NewDecoder(strings.NewReader(streamMappingYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&fromYAML); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if !reflect.DeepEqual(fromYAML, streamMapping) {
		t.Errorf("yaml decoded %+v, want %+v", fromYAML, streamMapping)
	}
	// sigs.k8s.io/yaml goes through JSON, as a policy converted to its proto
	// would.
	var fromJSON livekit.Mapping
	if err := k8syaml.UnmarshalStrict([]byte(streamMappingYAML), &fromJSON); err != nil {
		t.Fatalf("json: %v", err)
	}
	if !reflect.DeepEqual(fromJSON, streamMapping) {
		t.Errorf("json decoded %+v, want %+v", fromJSON, streamMapping)
	}
	if err := fromYAML.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestValidateNamesFieldAndValue(t *testing.T) {
	with := func(change func(*livekit.Mapping)) livekit.Mapping {
		m := streamMapping
		m.CanPublishSources = map[string]string{}
		for k, v := range streamMapping.CanPublishSources {
			m.CanPublishSources[k] = v
		}
		change(&m)
		return m
	}
	tests := []struct {
		name  string
		m     livekit.Mapping
		field string
		value string
	}{
		{"a mapping must say what gives roomJoin", with(func(m *livekit.Mapping) { m.RoomJoin = "" }), "room_join", ""},
		{"a permission must be well formed", with(func(m *livekit.Mapping) { m.Hidden = "Join Backstage" }), "hidden", "Join Backstage"},
		{"can_publish is checked", with(func(m *livekit.Mapping) { m.CanPublish = "send*" }), "can_publish", "send*"},
		{"can_subscribe is checked", with(func(m *livekit.Mapping) { m.CanSubscribe = ".join" }), "can_subscribe", ".join"},
		{"can_publish_data is checked", with(func(m *livekit.Mapping) { m.CanPublishData = "chat!" }), "can_publish_data", "chat!"},
		{"room_admin is checked", with(func(m *livekit.Mapping) { m.RoomAdmin = "Admin" }), "room_admin", "Admin"},
		{"each permission of a room_admin list is checked", with(func(m *livekit.Mapping) { m.RoomAdmin = "mute-users,Admin" }), "room_admin", "Admin"},
		{"a room_record list names no empty permission", with(func(m *livekit.Mapping) { m.RoomRecord = "start-record-call," }), "room_record", ""},
		{"room_record is checked", with(func(m *livekit.Mapping) { m.RoomRecord = "rec ord" }), "room_record", "rec ord"},
		{"a source's permission is named by its source", with(func(m *livekit.Mapping) { m.CanPublishSources["camera"] = "Send Video" }), "can_publish_sources.camera", "Send Video"},
		{"a source must name a permission", with(func(m *livekit.Mapping) { m.CanPublishSources["microphone"] = "" }), "can_publish_sources.microphone", ""},
		{"each permission of a source's list is checked", with(func(m *livekit.Mapping) { m.CanPublishSources["screen_share_audio"] = "screenshare,Send Audio" }), "can_publish_sources.screen_share_audio", "Send Audio"},
		{"a source's list names no empty permission", with(func(m *livekit.Mapping) { m.CanPublishSources["screen_share_audio"] = "screenshare," }), "can_publish_sources.screen_share_audio", ""},
		{"a source's list names at most 64 permissions", with(func(m *livekit.Mapping) {
			m.CanPublishSources["screen_share_audio"] = strings.Repeat("screenshare,", 64) + "send-audio"
		}), "can_publish_sources.screen_share_audio", "65"},
		{"a source LiveKit does not know is refused", with(func(m *livekit.Mapping) { m.CanPublishSources["cam"] = "send-video" }), "can_publish_sources", "cam"},
		{"LiveKit's source names are lower case", with(func(m *livekit.Mapping) { m.CanPublishSources["CAMERA"] = "send-video" }), "can_publish_sources", "CAMERA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			var e *authz.Error
			if !errors.As(err, &e) {
				t.Fatalf("Validate() = %v, want an *authz.Error", err)
			}
			if e.Code != authz.Invalid || e.Field != tt.field || e.Value != tt.value {
				t.Errorf("Validate() = code %d field %q value %q, want Invalid %q %q", e.Code, e.Field, e.Value, tt.field, tt.value)
			}
			if !strings.HasPrefix(err.Error(), tt.field) {
				t.Errorf("message %q does not start with the field", err)
			}
		})
	}
}

func TestPermissionsListsEveryMappedPermissionOnce(t *testing.T) {
	want := []string{"create-reaction", "join-backstage", "join-call", "screenshare", "send-audio", "send-video", "start-record-call", "update-call-permissions"}
	if got := streamMapping.Permissions(); !slices.Equal(got, want) {
		t.Errorf("Permissions() = %v, want %v", got, want)
	}
}

// Capability sets of the default policy's call roles (policy/policies/default.yaml).
var (
	hostCaps = []string{"join-call", "read-call", "create-call", "join-ended-call", "join-backstage", "update-call",
		"update-call-settings", "screenshare", "send-video", "send-audio", "start-record-call", "stop-record-call",
		"start-broadcast-call", "stop-broadcast-call", "end-call", "mute-users", "update-call-permissions",
		"block-users", "create-reaction", "pin-for-everyone", "remove-call-member", "start-transcription-call",
		"stop-transcription-call"}
	memberCaps = []string{"join-call", "read-call", "send-audio", "send-video", "screenshare", "create-reaction"}
	// mutedCaps is a member blocked from send-audio.
	mutedCaps = []string{"join-call", "read-call", "send-video", "screenshare", "create-reaction"}
	// viewerCaps is a member blocked from every source.
	viewerCaps = []string{"join-call", "read-call", "create-reaction"}
)

// grant is what a test expects of a video grant, read through LiveKit's own
// getters so that LiveKit's defaults for unset fields count.
type grant struct {
	join, publish, subscribe, data, admin, record, hidden bool
	sources                                               []lkproto.TrackSource
}

func readGrant(g *auth.VideoGrant) grant {
	out := grant{
		join: g.RoomJoin, publish: g.GetCanPublish(), subscribe: g.GetCanSubscribe(), data: g.GetCanPublishData(),
		admin: g.RoomAdmin, record: g.RoomRecord, hidden: g.Hidden,
	}
	for _, s := range []lkproto.TrackSource{lkproto.TrackSource_CAMERA, lkproto.TrackSource_MICROPHONE,
		lkproto.TrackSource_SCREEN_SHARE, lkproto.TrackSource_SCREEN_SHARE_AUDIO} {
		if g.GetCanPublishSource(s) {
			out.sources = append(out.sources, s)
		}
	}
	return out
}

var (
	camera      = lkproto.TrackSource_CAMERA
	microphone  = lkproto.TrackSource_MICROPHONE
	screen      = lkproto.TrackSource_SCREEN_SHARE
	screenAudio = lkproto.TrackSource_SCREEN_SHARE_AUDIO
	allSources  = []lkproto.TrackSource{camera, microphone, screen, screenAudio}
)

func TestVideoGrant(t *testing.T) {
	publishGate := streamMapping
	publishGate.CanPublish = "send-media"
	publishOnly := livekit.Mapping{RoomJoin: "join-call", CanPublish: "send-video", CanSubscribe: "join-call"}
	adminList := streamMapping
	adminList.RoomAdmin, adminList.RoomRecord = "mute-users,remove-call-member", "start-record-call,stop-record-call"
	tests := []struct {
		name    string
		m       livekit.Mapping
		granted []string
		want    grant
	}{
		{"a host gets every source, subscribe, data, admin, record and backstage invisibility", streamMapping, hostCaps,
			grant{join: true, publish: true, subscribe: true, data: true, admin: true, record: true, hidden: true, sources: allSources}},
		{"a call member publishes every source but administers nothing and is visible", streamMapping, memberCaps,
			grant{join: true, publish: true, subscribe: true, data: true, sources: allSources}},
		// The client names a track's source: audio published as
		// screen_share_audio is heard as a microphone is.
		{"a muted participant (no send-audio) gets no microphone source, nor the screen's audio", streamMapping, mutedCaps,
			grant{join: true, publish: true, subscribe: true, data: true, sources: []lkproto.TrackSource{camera, screen}}},
		{"a source's list is given only to a holder of every permission in it", streamMapping, []string{"join-call", "send-audio"},
			grant{join: true, publish: true, subscribe: true, sources: []lkproto.TrackSource{microphone}}},
		{"a moderator muted by a block gets no roomAdmin, with which it could unmute itself", streamMapping, slices.DeleteFunc(slices.Clone(hostCaps), func(p string) bool { return p == "send-audio" }),
			grant{join: true, publish: true, subscribe: true, data: true, record: true, hidden: true, sources: []lkproto.TrackSource{camera, screen}}},
		{"nor one kept from data messages", streamMapping, slices.DeleteFunc(slices.Clone(hostCaps), func(p string) bool { return p == "create-reaction" }),
			grant{join: true, publish: true, subscribe: true, record: true, hidden: true, sources: allSources}},
		{"nor one kept from hiding, which LiveKit's UpdateParticipant would let it give itself", streamMapping, slices.DeleteFunc(slices.Clone(hostCaps), func(p string) bool { return p == "join-backstage" }),
			grant{join: true, publish: true, subscribe: true, data: true, record: true, sources: allSources}},
		{"canPublish is false when no source is granted, not every source", streamMapping, viewerCaps,
			grant{join: true, subscribe: true, data: true}},
		{"hidden only when the hidden permission is held", streamMapping, append(slices.Clone(memberCaps), "join-backstage"),
			grant{join: true, publish: true, subscribe: true, data: true, hidden: true, sources: allSources}},
		{"nothing held, nothing granted", streamMapping, nil, grant{}},
		{"a room_admin list gives roomAdmin only to a holder of every permission in it", adminList, append(slices.Clone(memberCaps), "mute-users"),
			grant{join: true, publish: true, subscribe: true, data: true, sources: allSources}},
		{"a room_record list gives roomRecord only to a holder of every permission in it", adminList, append(slices.Clone(memberCaps), "start-record-call"),
			grant{join: true, publish: true, subscribe: true, data: true, sources: allSources}},
		{"holding every permission of both lists gives roomAdmin and roomRecord", adminList,
			append(slices.Clone(memberCaps), "mute-users", "remove-call-member", "start-record-call", "stop-record-call", "join-backstage"),
			grant{join: true, publish: true, subscribe: true, data: true, admin: true, record: true, hidden: true, sources: allSources}},
		{"a permission outside the mapping gives nothing", streamMapping, []string{"end-call", "mute-users"}, grant{}},
		{"an unmapped field is never granted, whatever is held",
			livekit.Mapping{RoomJoin: "join-call", CanPublishSources: map[string]string{"camera": "send-video"}}, hostCaps,
			grant{join: true, publish: true, sources: []lkproto.TrackSource{camera}}},
		{"can_publish gates every source", publishGate, memberCaps,
			grant{join: true, subscribe: true, data: true}},
		{"can_publish and a source both held publish that source", publishGate, []string{"join-call", "send-media", "send-audio"},
			grant{join: true, publish: true, subscribe: true, sources: []lkproto.TrackSource{microphone}}},
		{"can_publish alone allows every source", publishOnly, memberCaps,
			grant{join: true, publish: true, subscribe: true, sources: allSources}},
		{"can_publish alone, not held, publishes nothing", publishOnly, mutedCaps[:2],
			grant{join: true, subscribe: true}},
		{"a mapping that names no publishing lets nobody publish", livekit.Mapping{RoomJoin: "join-call"}, hostCaps,
			grant{join: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.m.VideoGrant("call:meeting:7", tt.granted)
			if g.Room != "call:meeting:7" {
				t.Errorf("room = %q", g.Room)
			}
			if got := readGrant(g); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("grant = %+v, want %+v", got, tt.want)
			}
			if g.CanPublish == nil || g.CanSubscribe == nil || g.CanPublishData == nil {
				t.Errorf("canPublish, canSubscribe and canPublishData must be set, not left to LiveKit's defaults: %+v", g)
			}
		})
	}
}

// A grant's sources are written as Usher's names: they must be the names
// LiveKit's SetCanPublishSources writes of its track sources.
func TestSourcesAreLiveKitsNames(t *testing.T) {
	for _, src := range livekit.Sources {
		var g auth.VideoGrant
		g.SetCanPublishSources([]lkproto.TrackSource{lkproto.TrackSource(lkproto.TrackSource_value[strings.ToUpper(src)])})
		if !slices.Equal(g.CanPublishSources, []string{src}) {
			t.Errorf("LiveKit writes source %q as %q", src, g.CanPublishSources)
		}
	}
}
