package server_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// A WatchCall whose client stops reading falls behind, but its stream
// stays open, its last messages held by HTTP/2 flow control, until the
// client reads (and the stream starts again in place) or goes. It counts
// against the server's WatchCall streams until then: otherwise a client
// could hold any number of them open, each with what it has not read, by
// letting each fall behind.
func TestAWatchCallCutOffButUnreadStillCounts(t *testing.T) {
	w := newAdmWorld(t, admission.Options{MaxWatchers: 2})
	w.grant("user:busy", "call-member", meeting7)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Far more than the slow client's window, gRPC's write quota and the
	// buffer hold; the reading watch hears of each, so every one has been
	// offered to the slow watch too.
	const pairs = 1500
	slowCtx, slowCancel := context.WithCancel(ctx)
	stream, reader := w.fallBehind(t, slowCtx, pairs)
	for range 2 * pairs {
		reader.next("an event on the reading watch", func(*usherv1.CallEvent) bool { return true })
	}

	// The slow stream is still open: two streams are, and a third is
	// refused.
	err := watchCall(t, w.adm, meeting7, 0).end(5 * time.Second)
	wantStatus(t, err, codes.ResourceExhausted, "at most 2 WatchCall streams")

	// The slow client reads at last, and goes; its slot is free again.
	readToTheRestart(t, stream, pairs)
	slowCancel()
	eventually(t, 5*time.Second, "the cut-off stream's slot is free once it ended", func() bool {
		probe, err := w.adm.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: meeting7})
		if err != nil {
			return false
		}
		_, err = probe.Recv()
		return err == nil
	})
}

// A hostile tenant at the lobby, over gRPC: end users acting through a
// media server's sidecar (a check caller) try to list, admit into and deny
// from a lobby they hold no admit power over, to admit or deny
// themselves, and to do it while banned. Every attempt is PERMISSION_DENIED
// naming its rule, and nothing is written: no revision, no change record,
// and every knock still waits.
func TestHostileTenantAtTheLobbyOverGRPC(t *testing.T) {
	w, sidecarConn, backendConn := newAdmWorldWithCallers(t)
	sidecar := usherv1.NewAdmissionServiceClient(sidecarConn)
	// hank hosts call 7, olga call 42; mallory moderates call 7 and is
	// banned from it; gus and gail wait to enter call 7, gwen call 42.
	w.grant("user:hank", "host", meeting7)
	w.grant("user:olga", "host", stream42)
	w.grant("user:mallory", "moderator", meeting7)
	w.block("user:mallory", meeting7)
	guests := []struct{ subject, call string }{{"user:gus", meeting7}, {"user:gail", meeting7}, {"user:gwen", stream42}}
	knocks := map[string]string{}
	for _, g := range guests {
		w.grant(g.subject, "guest", g.call)
		resp, err := sidecar.Knock(callCtx(t), &usherv1.KnockRequest{Subject: g.subject, Resource: g.call})
		if err != nil || resp.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
			t.Fatalf("Knock(%s, %s) = %v, %v", g.subject, g.call, resp, err)
		}
		knocks[g.subject] = resp.GetSessionId()
	}
	missing := func(resource string) map[string]string {
		return map[string]string{"rule": "missing permission", "permission": "update-call-permissions", "resource": resource}
	}
	self := func(actor string) map[string]string {
		return map[string]string{"rule": "no self-service", "subject": actor}
	}
	ctx := callCtx(t)
	for _, a := range []struct {
		name, actor, reason string
		meta                map[string]string
		call                func() error
	}{
		{"another call's host lists the lobby", "user:olga", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.ListLobby(ctx, &usherv1.ListLobbyRequest{Resource: meeting7, Actor: "user:olga"})
			return err
		}},
		{"another call's host admits", "user:olga", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:olga"})
			return err
		}},
		{"another call's host denies", "user:olga", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Deny(ctx, &usherv1.DenyRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:olga"})
			return err
		}},
		{"a host admits into another call", "user:hank", "MISSING_PERMISSION", missing(stream42), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: stream42, Subject: "user:gwen", Actor: "user:hank"})
			return err
		}},
		{"a guest admits itself", "user:gus", "NO_SELF_SERVICE", self("user:gus"), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:gus"})
			return err
		}},
		{"a guest admits another", "user:gus", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gail", Actor: "user:gus"})
			return err
		}},
		{"a guest lists the lobby it waits in", "user:gus", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.ListLobby(ctx, &usherv1.ListLobbyRequest{Resource: meeting7, Actor: "user:gus"})
			return err
		}},
		{"a guest denies another", "user:gus", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Deny(ctx, &usherv1.DenyRequest{Resource: meeting7, Subject: "user:gail", Actor: "user:gus"})
			return err
		}},
		{"a banned moderator admits", "user:mallory", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:mallory"})
			return err
		}},
		{"a banned moderator denies", "user:mallory", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Deny(ctx, &usherv1.DenyRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:mallory"})
			return err
		}},
		{"a banned moderator admits for a while", "user:mallory", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:mallory",
				ExpireTime: timestamppb.New(time.Now().Add(time.Minute))})
			return err
		}},
		{"a stranger admits", "user:nobody", "MISSING_PERMISSION", missing(meeting7), func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:nobody"})
			return err
		}},
		{"a host denies itself", "user:hank", "NO_SELF_SERVICE", self("user:hank"), func() error {
			_, err := sidecar.Deny(ctx, &usherv1.DenyRequest{Resource: meeting7, Subject: "user:hank", Actor: "user:hank"})
			return err
		}},
	} {
		t.Run(a.name, func(t *testing.T) {
			rev, changes := w.revision(backendConn)
			st := wantCode(t, a.call(), codes.PermissionDenied)
			if !strings.Contains(st.Message(), a.actor) {
				t.Errorf("message %q does not name the actor %s", st.Message(), a.actor)
			}
			wantDetails(t, st, refusal{reason: a.reason, field: "actor", value: a.actor, meta: a.meta})
			if r, n := w.revision(backendConn); r != rev || n != changes {
				t.Errorf("the refused call wrote: revision %d with %d change records, was %d with %d", r, n, rev, changes)
			}
		})
	}
	if got := w.lobby(sidecar, meeting7); !slices.Equal(got, []string{"user:gus", "user:gail"}) {
		t.Errorf("lobby of %s after the refusals = %v, want gus and gail", meeting7, got)
	}
	if got := w.lobby(sidecar, stream42); !slices.Equal(got, []string{"user:gwen"}) {
		t.Errorf("lobby of %s after the refusals = %v, want gwen", stream42, got)
	}
	for subject, id := range knocks {
		if resp, err := sidecar.KeepAlive(callCtx(t), &usherv1.KeepAliveRequest{SessionId: id}); err != nil || resp.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
			t.Errorf("%s's knock after the refusals: %v, %v; want it still waiting", subject, resp, err)
		}
	}
	for _, g := range guests {
		if resp, err := sidecar.Join(callCtx(t), &usherv1.JoinRequest{Subject: g.subject, Resource: g.call}); err != nil ||
			resp.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY || resp.GetSessionId() != knocks[g.subject] {
			t.Errorf("Join(%s, %s) after the refusals: %v, %v; want LOBBY with its knock", g.subject, g.call, resp, err)
		}
	}
}

// An Admit of a subject banned since it knocked is FAILED_PRECONDITION
// (SUBJECT_BLOCKED) naming the subject and the block, whether the call's
// host asks or the platform on its own authority: nothing is written, and
// the knock ends only at its KeepAlive, which says the subject is blocked.
func TestAnAdmitOfASubjectBannedSinceItKnockedIsRefusedOverGRPC(t *testing.T) {
	w, sidecarConn, backendConn := newAdmWorldWithCallers(t)
	sidecar, backend := usherv1.NewAdmissionServiceClient(sidecarConn), usherv1.NewAdmissionServiceClient(backendConn)
	w.grant("user:hank", "host", meeting7)
	w.grant("user:gus", "guest", meeting7)
	knock, err := sidecar.Knock(callCtx(t), &usherv1.KnockRequest{Subject: "user:gus", Resource: meeting7})
	if err != nil || knock.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
		t.Fatalf("Knock = %v, %v", knock, err)
	}
	block := w.block("user:gus", meeting7, "join-call")
	ctx := callCtx(t)
	for _, a := range []struct {
		name  string
		admit func() error
	}{
		{"the call's host admits", func() error {
			_, err := sidecar.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:hank"})
			return err
		}},
		{"the platform admits", func() error {
			_, err := backend.Admit(ctx, &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus"})
			return err
		}},
	} {
		t.Run(a.name, func(t *testing.T) {
			rev, changes := w.revision(backendConn)
			st := wantCode(t, a.admit(), codes.FailedPrecondition)
			wantDetails(t, st, refusal{reason: "SUBJECT_BLOCKED", field: "subject", value: "user:gus",
				meta: map[string]string{"block": block, "scope": meeting7, "permission": "join-call", "resource": meeting7}})
			if r, n := w.revision(backendConn); r != rev || n != changes {
				t.Errorf("the refused Admit wrote: revision %d with %d change records, was %d with %d", r, n, rev, changes)
			}
		})
	}
	if n := w.m.Counts().Knocks; n != 1 {
		t.Errorf("after the refused Admits the server holds %d knocks, want the banned subject's", n)
	}
	if resp, err := sidecar.KeepAlive(callCtx(t), &usherv1.KeepAliveRequest{SessionId: knock.GetSessionId()}); err != nil ||
		resp.GetOutcome() != usherv1.Outcome_OUTCOME_BLOCKED {
		t.Errorf("KeepAlive of the banned subject's knock = %v, %v; want BLOCKED", resp, err)
	}
	w.join(sidecar, "user:gus", meeting7, usherv1.Outcome_OUTCOME_BLOCKED)
}

// A lobby holds a bounded number of knocks: one past it, by Knock or by a
// Join that would wait, is RESOURCE_EXHAUSTED naming the call and the
// limit, and leaves no knock behind; those already waiting still renew
// their knocks.
func TestAFullLobbyRefusesKnocksNamingTheCall(t *testing.T) {
	w := newAdmWorld(t, admission.Options{Store: admission.NewMemoryStore(admission.MemoryOptions{MaxKnocks: 2})})
	for _, g := range []string{"user:g1", "user:g2", "user:g3"} {
		w.grant(g, "guest", meeting7)
	}
	first := w.join(w.adm, "user:g1", meeting7, usherv1.Outcome_OUTCOME_LOBBY)
	w.join(w.adm, "user:g2", meeting7, usherv1.Outcome_OUTCOME_LOBBY)
	for name, call := range map[string]func() error{
		"Join": func() error {
			_, err := w.adm.Join(callCtx(t), &usherv1.JoinRequest{Subject: "user:g3", Resource: meeting7})
			return err
		},
		"Knock": func() error {
			_, err := w.adm.Knock(callCtx(t), &usherv1.KnockRequest{Subject: "user:g3", Resource: meeting7, Note: "let me in"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			wantStatus(t, err, codes.ResourceExhausted, named("resource", meeting7))
			wantStatus(t, err, codes.ResourceExhausted, "at most 2 knocks")
			wantDetails(t, wantCode(t, err, codes.ResourceExhausted),
				refusal{reason: "LIMIT_EXCEEDED", field: "resource", value: meeting7, meta: map[string]string{"limit": "2"}})
			if got := w.lobby(w.adm, meeting7); !slices.Equal(got, []string{"user:g1", "user:g2"}) {
				t.Errorf("lobby after the refusal = %v, want g1 and g2", got)
			}
		})
	}
	if c := w.m.Counts(); c.Knocks != 2 {
		t.Errorf("%d knocks after the refusals, want 2", c.Knocks)
	}
	again := w.join(w.adm, "user:g1", meeting7, usherv1.Outcome_OUTCOME_LOBBY)
	if again.GetSessionId() != first.GetSessionId() {
		t.Errorf("g1 knocking again in a full lobby got knock %q, want its own %q", again.GetSessionId(), first.GetSessionId())
	}
}

// Joins that race over gRPC fill a call to its capacity and no further, and
// a room held exclusively admits one holder of the exclusive role: those
// refused are FULL or IN_USE, with no session.
func TestRacingJoinsOverGRPCKeepCapacityAndExclusiveOccupancy(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	for _, rule := range []authz.Admission{
		{Scope: meeting7, ResourceType: "call", Join: "join-call", MaxParticipants: 3, UncountedRoles: []string{"host"}},
		{Scope: stream42, ResourceType: "call", Join: "join-call", ExclusiveRoles: []string{"host"}},
	} {
		if _, err := w.engine.PutAdmission(t.Context(), w.by, rule); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		call, role string
		admitted   int
		refused    usherv1.Outcome
	}{
		{meeting7, "call-member", 3, usherv1.Outcome_OUTCOME_FULL},
		{stream42, "host", 1, usherv1.Outcome_OUTCOME_IN_USE},
	} {
		t.Run(c.call, func(t *testing.T) {
			const racers = 24
			var subjects []string
			for i := range racers {
				s := fmt.Sprintf("user:racer-%02d", i)
				w.grant(s, c.role, c.call)
				subjects = append(subjects, s)
			}
			outcomes := make([]*usherv1.JoinResponse, racers)
			errs := make([]error, racers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, s := range subjects {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					outcomes[i], errs[i] = w.adm.Join(callCtx(t), &usherv1.JoinRequest{Subject: s, Resource: c.call})
				}()
			}
			close(start)
			wg.Wait()
			admitted := 0
			for i, resp := range outcomes {
				switch {
				case errs[i] != nil:
					t.Errorf("Join(%s): %v", subjects[i], errs[i])
				case resp.GetOutcome() == usherv1.Outcome_OUTCOME_ADMITTED:
					admitted++
				case resp.GetOutcome() != c.refused || resp.GetSessionId() != "" || resp.GetLivekitToken() != "":
					t.Errorf("Join(%s) = %s (%s) session %q, want %s with no session or token", subjects[i], resp.GetOutcome(),
						resp.GetReason(), resp.GetSessionId(), c.refused)
				}
			}
			if admitted != c.admitted {
				t.Errorf("%d of %d racing joins admitted, want %d", admitted, racers, c.admitted)
			}
		})
	}
	if c := w.m.Counts(); c.Sessions != 4 {
		t.Errorf("%d sessions after the races, want 4", c.Sessions)
	}
}

// Any check caller may resume a WatchCall from any revision, and a
// revision may be a policy's whose change set holds a hundred thousand
// resources. The watch needs only when that revision was committed: it
// reads no more of the change set, even one the server no longer keeps in
// memory and must read from its file. Decoding it whole took the server
// 20 MB and 300 ms a watch: a few hundred watches at once held gigabytes.
func TestAWatchCallResumedFromALargeChangeSetDoesNotDecodeIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	large := server.FromPolicy(msg)
	for i := range 20_000 {
		large.Resources = append(large.Resources, authz.Resource{Name: fmt.Sprintf("room:large:%06d", i)})
	}
	// Committed by a server before this one, so that this one reads it
	// from the file.
	store, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rev, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, large, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	engine.Close()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	w := newAdmWorldOn(t, path, admission.Options{})
	w.grant("user:hank", "host", meeting7)
	if r, err := w.adm.Join(callCtx(t), &usherv1.JoinRequest{Subject: "user:hank", Resource: meeting7}); err != nil || r.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED {
		t.Fatalf("Join: %v, %v", r, err)
	}
	// The process's allocations count whatever else runs beside the watch:
	// each is measured apart, and the least of them counts.
	per := uint64(math.MaxUint64)
	for range 5 {
		ctx, cancel := context.WithCancel(t.Context())
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		stream, err := w.adm.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: meeting7, AfterRevision: uint64(rev)})
		if err != nil {
			t.Fatal(err)
		}
		var present []string
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("WatchCall(%s) from revision %d: %v", meeting7, rev, err)
			}
			if m.GetEvent().GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT {
				present = append(present, m.GetEvent().GetSubject())
			}
			if m.GetEvent().GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
				break
			}
		}
		runtime.ReadMemStats(&after)
		cancel()
		if !slices.Equal(present, []string{"user:hank"}) {
			t.Fatalf("WatchCall(%s) from revision %d told of %v present; want user:hank", meeting7, rev, present)
		}
		per = min(per, after.TotalAlloc-before.TotalAlloc)
	}
	// Client and server both: the stream, the call's state and its events.
	if per > 1<<20 {
		t.Errorf("a WatchCall resumed from revision %d, of %d resources, allocated %d bytes; want at most 1 MiB", rev, len(large.Resources), per)
	}
}

// A call deleted and then registered again, by another tenant, is another
// call: a WatchCall of the first tells of its participant's ejection and
// then ends NOT_FOUND, as a WatchCall started then would be refused, and
// tells nothing of the second call's participants, whom a WatchCall of the
// second follows.
func TestAWatchCallOfADeletedCallEndsNotFound(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	w.grant("user:m", "call-member", meeting7)
	w.join(w.adm, "user:m", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	old := watchCall(t, w.adm, meeting7, 0)
	old.initial()
	if _, err := w.admin.DeleteResource(callCtx(t), &usherv1.DeleteResourceRequest{Name: meeting7}); err != nil {
		t.Fatal(err)
	}
	old.next("the participant's ejection", event(usherv1.CallEventKind_CALL_EVENT_KIND_EJECTED, "user:m"))

	// Another tenant's call of the same name, and its host in it.
	for _, r := range []*usherv1.PutResourceRequest{{Name: "account:other"}, {Name: meeting7, Parent: "account:other"}} {
		if _, err := w.admin.PutResource(callCtx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	w.grant("user:b", "host", meeting7)
	fresh := watchCall(t, w.adm, meeting7, 0)
	fresh.initial()
	w.join(w.adm, "user:b", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	fresh.next("the new call's participant", event(usherv1.CallEventKind_CALL_EVENT_KIND_JOINED, "user:b"))

	deadline := time.After(2 * time.Second)
	for {
		select {
		case a := <-old.events:
			if a.err != nil {
				wantStatus(t, a.err, codes.NotFound, named("resource", meeting7))
				return
			}
			if a.ev.GetSubject() == "user:b" {
				t.Fatalf("the deleted call's WatchCall tells of the new call's participant: %v", a.ev)
			}
		case <-deadline:
			t.Fatal("the deleted call's WatchCall did not end within 2 s")
		}
	}
}

// A knock ends with the call it waits to enter: once the call is deleted
// and its name registered again by another tenant, who invites the same
// guest, the second call's lobby lists no knock made for the first, nor
// shows its note, and the knock is kept alive no more.
func TestAKnockEndsWithItsDeletedCall(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	w.grant("user:gus", "guest", meeting7)
	knock, err := w.adm.Knock(callCtx(t), &usherv1.KnockRequest{Subject: "user:gus", Resource: meeting7, Note: "acme's secret launch"})
	if err != nil || knock.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
		t.Fatalf("Knock = %v, %v", knock, err)
	}
	if _, err := w.admin.DeleteResource(callCtx(t), &usherv1.DeleteResourceRequest{Name: meeting7}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*usherv1.PutResourceRequest{{Name: "account:other"}, {Name: meeting7, Parent: "account:other"}} {
		if _, err := w.admin.PutResource(callCtx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	w.grant("user:gus", "guest", meeting7)
	if got, err := w.adm.ListLobby(callCtx(t), &usherv1.ListLobbyRequest{Resource: meeting7}); err != nil || len(got.GetEntries()) != 0 {
		t.Errorf("the lobby of the call registered again = %v, %v; want none waiting", got.GetEntries(), err)
	}
	resp, err := w.adm.KeepAlive(callCtx(t), &usherv1.KeepAliveRequest{SessionId: knock.GetSessionId()})
	wantStatus(t, err, codes.NotFound, named("session_id", knock.GetSessionId()))
	if resp != nil {
		t.Errorf("the knock made for the deleted call is kept alive: %v", resp)
	}
}

// Livebox's Unshared mode: a holder of an exclusive permission enters only
// a room no other occupant is in, but occupants without one share it with
// it. One whose media server reconnects it, joining again, takes the place
// of its own session: an occupant who came in beside it since does not take
// the room from it, while another holder still finds it in use.
func TestAnUnsharedParticipantWhoJoinsAgainKeepsItsRoom(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	if _, err := w.admin.PutAdmission(callCtx(t), &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{
		Scope: meeting7, ResourceType: "call", JoinPermission: "join-call", ExclusivePermissions: []string{"end-call"}}}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:uma", "host", meeting7) // end-call: unshared
	w.grant("user:ulf", "host", meeting7)
	w.grant("user:sam", "call-member", meeting7) // an occupant, shared
	first := w.join(w.adm, "user:uma", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	w.join(w.adm, "user:sam", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)

	again, err := w.adm.Join(callCtx(t), &usherv1.JoinRequest{Subject: "user:uma", Resource: meeting7})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED {
		t.Fatalf("the unshared participant joining again = %s (%s), want ADMITTED in place of its session", again.GetOutcome(), again.GetReason())
	}
	if _, err := w.adm.KeepAlive(callCtx(t), &usherv1.KeepAliveRequest{SessionId: first.GetSessionId()}); status.Code(err) != codes.NotFound {
		t.Errorf("KeepAlive of the session joined again = %v, want NOT_FOUND: replaced", err)
	}
	if r := w.join(w.adm, "user:ulf", meeting7, usherv1.Outcome_OUTCOME_IN_USE); r.GetExclusive() != "permission end-call" {
		t.Errorf("another holder finds the room in use by %q, want \"permission end-call\"", r.GetExclusive())
	}
}

// A call registered again under the name of a deleted one is another: a
// WatchCall of it resumed from a revision before its registration tells of
// none of the deleted call's participants, who were never in it.
func TestAWatchCallResumedOnACallRegisteredAgainTellsOfNoneOfTheFirst(t *testing.T) {
	w := newAdmWorld(t, admission.Options{})
	w.grant("user:m", "call-member", meeting7)
	joined := w.join(w.adm, "user:m", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	if _, err := w.adm.Leave(callCtx(t), &usherv1.LeaveRequest{SessionId: joined.GetSessionId()}); err != nil {
		t.Fatal(err)
	}
	w.join(w.adm, "user:m", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	if _, err := w.admin.DeleteResource(callCtx(t), &usherv1.DeleteResourceRequest{Name: meeting7}); err != nil {
		t.Fatal(err)
	}
	// Another tenant's call of the same name.
	for _, r := range []*usherv1.PutResourceRequest{{Name: "account:other"}, {Name: meeting7, Parent: "account:other"}} {
		if _, err := w.admin.PutResource(callCtx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range watchCall(t, w.adm, meeting7, joined.GetRevision()).initial() {
		if ev.GetSubject() == "user:m" || ev.GetSessionId() != "" {
			t.Errorf("a WatchCall of the call registered again tells of the deleted call's participant: %v", ev)
		}
	}
}

// An Admit by an actor who holds the lobby's admit permission but not what
// the admit role carries is refused as the grant would be: the admitted
// subject would gain a permission the actor neither holds nor may assign,
// and the message says so, not that the subject would become able to give
// it (it holds no role that gives anything). Nothing is written and the
// subject still waits.
func TestAnAdmitOfMoreThanTheActorHoldsSaysWhatTheSubjectWouldGain(t *testing.T) {
	w, sidecarConn, backendConn := newAdmWorldWithCallers(t)
	sidecar := usherv1.NewAdmissionServiceClient(sidecarConn)
	// An usher holds the admit permission and all that call-member
	// carries but screenshare.
	if _, err := w.engine.PutRole(t.Context(), w.by, authz.Role{Name: "usher", Scope: acme,
		Permissions: []string{"update-call-permissions", "join-call", "read-call", "send-audio", "send-video", "create-reaction"}}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:ursula", "usher", meeting7)
	w.grant("user:gus", "guest", meeting7)
	w.join(sidecar, "user:gus", meeting7, usherv1.Outcome_OUTCOME_LOBBY)
	rev, changes := w.revision(backendConn)
	_, err := sidecar.Admit(callCtx(t), &usherv1.AdmitRequest{Resource: meeting7, Subject: "user:gus", Actor: "user:ursula"})
	st := wantCode(t, err, codes.PermissionDenied)
	if want := `"user:gus" would gain "screenshare" on "` + meeting7 + `"`; !strings.Contains(st.Message(), want) {
		t.Errorf("message %q does not say %s", st.Message(), want)
	}
	if strings.Contains(st.Message(), "able to give") {
		t.Errorf("message %q says the admitted subject would become able to give what it would only hold", st.Message())
	}
	wantDetails(t, st, refusal{reason: "NO_ESCALATION", field: "actor", value: "user:ursula",
		meta: map[string]string{"rule": "no escalation", "subject": "user:gus", "permission": "screenshare", "resource": meeting7}})
	if r, n := w.revision(backendConn); r != rev || n != changes {
		t.Errorf("the refused Admit wrote: revision %d with %d change records, was %d with %d", r, n, rev, changes)
	}
	if got := w.lobby(sidecar, meeting7); !slices.Equal(got, []string{"user:gus"}) {
		t.Errorf("lobby after the refused Admit = %v, want gus still waiting", got)
	}
}
