package policy_test

import (
	"slices"
	"testing"

	"github.com/usher-authz/usher/media/livekit"
	"github.com/usher-authz/usher/policy"
)

// The LiveKit grant of the shipped Stream policies carries no power the
// participant's capabilities (seeds/003: "A capability is an action ... The
// list of capabilities assigned to a role defines what a user is allowed to
// do") do not: LiveKit's roomAdmin lists, mutes, removes and re-permissions
// participants and updates the room; its roomRecord, which LiveKit checks
// against no room, would record every room of the LiveKit server, so the
// shipped policies map it to nothing.
func TestStreamLiveKitGrantCarriesOnlyTheCapabilities(t *testing.T) {
	joins := []string{"join-call", "send-audio", "send-video", "screenshare", "create-reaction"}
	with := func(caps ...string) []string { return append(slices.Clone(joins), caps...) }
	all := with("read-call", "create-call", "join-ended-call", "join-backstage", "update-call",
		"update-call-settings", "start-record-call", "stop-record-call", "start-broadcast-call",
		"stop-broadcast-call", "end-call", "mute-users", "update-call-permissions", "block-users",
		"pin-for-everyone", "remove-call-member", "start-transcription-call", "stop-transcription-call")
	cases := []struct {
		quote         string
		caps          []string
		admin, record bool
	}{
		{"the example admin, which may only mute (\"admin\": [\"send-audio\", \"send-video\", \"mute-users\"]), gets no roomAdmin",
			with("mute-users"), false, false},
		{"a role that mutes and removes but does not update call permissions gets no roomAdmin",
			with("read-call", "update-call", "mute-users", "remove-call-member"), false, false},
		{"start-record-call alone gets no roomRecord, with which it could stop recordings",
			with("start-record-call"), false, false},
		{"the built-in host and admin, with all 23 capabilities, get roomAdmin and no roomRecord, which is every room's", all, true, false},
	}
	for _, name := range []string{"stream", "default"} {
		p, err := policy.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range p.GetAdmissions() {
			m := a.GetLivekit()
			if m == nil {
				continue
			}
			mapping := livekit.Mapping{RoomJoin: m.GetRoomJoin(), CanPublish: m.GetCanPublish(),
				CanPublishSources: m.GetCanPublishSources(), CanSubscribe: m.GetCanSubscribe(),
				CanPublishData: m.GetCanPublishData(), RoomAdmin: m.GetRoomAdmin(),
				RoomRecord: m.GetRoomRecord(), Hidden: m.GetHidden()}
			for _, c := range cases {
				t.Run(name+" "+a.GetScope()+" "+c.quote, func(t *testing.T) {
					g := mapping.VideoGrant("call:default:1", c.caps)
					if g.RoomAdmin != c.admin || g.RoomRecord != c.record {
						t.Errorf("roomAdmin %v, roomRecord %v for %v; want %v, %v", g.RoomAdmin, g.RoomRecord, c.caps, c.admin, c.record)
					}
				})
			}
		}
	}
}

// A policy that maps room_record is warned: LiveKit's roomRecord lets its
// bearer record every room of the LiveKit server, not the call's alone.
func TestAMappingOfRoomRecordIsWarned(t *testing.T) {
	d, _ := policy.Read("p.yaml", []byte(`permissions:
  - name: join-call
  - name: record
admissions:
  - resource_type: call
    join_permission: join-call
    livekit: {room_join: join-call, room_record: record}
`))
	var got []string
	for _, f := range policy.Validate(d) {
		got = append(got, f.String())
	}
	want := `p.yaml:7:50: warning: admissions[0].livekit.room_record: "record": LiveKit checks roomRecord against no room: a token that carries it lets its bearer start and stop the egress of every room of the LiveKit server; map it only where each holder of record may record every room there, or start recordings from the platform's backend`
	if len(got) != 1 || got[0] != want {
		t.Errorf("findings %q, want one: %s", got, want)
	}
}
