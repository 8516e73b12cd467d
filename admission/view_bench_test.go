package admission

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// BenchmarkTouchedByAWriteOnARoom measures how the view finds the sessions
// a change set may reach, with 10,000 live calls, for a room registered
// (nothing below it), a role redefined at an account of 10 calls or of
// 9,990, and an admission rule at the root.
func BenchmarkTouchedByAWriteOnARoom(b *testing.B) {
	m, eng, _ := viewWorld(b)
	by := authz.Author{Caller: "bench"}
	put := func(name, parent string) {
		if _, err := eng.PutResource(b.Context(), by, authz.Resource{Name: name, Parent: parent}); err != nil {
			b.Fatal(err)
		}
	}
	put("account:small", "")
	for i := range 10_000 {
		call, account := fmt.Sprintf("call:acme:c%05d", i), "account:acme"
		if i < 10 {
			call, account = fmt.Sprintf("call:small:c%05d", i), "account:small"
		}
		put(call, account)
		s := fmt.Sprintf("user:u%05d", i)
		if _, err := eng.Grant(b.Context(), by, authz.Grant{Subject: s, Role: "member", Resource: call}); err != nil {
			b.Fatal(err)
		}
		if r, err := m.Join(b.Context(), "", s, call, 0); err != nil || r.Outcome != Admitted {
			b.Fatal(r, err)
		}
	}
	put("room:acme:r1", "account:acme")
	x := eng.Index()
	for _, tc := range []struct {
		name string
		c    authz.Change
	}{
		{"a room", authz.Change{Resource: &authz.Resource{Name: "room:acme:r1", Parent: "account:acme"}}},
		{"an account of 10 calls", authz.Change{Role: &authz.Role{Name: "member", Scope: "account:small"}}},
		{"an account of 9,990 calls", authz.Change{Role: &authz.Role{Name: "member", Scope: "account:acme"}}},
		{"the root", authz.Change{Admission: &authz.Admission{ResourceType: "call"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				dirty := map[*tracked]bool{}
				m.v.mu.Lock()
				m.v.touched(x, tc.c, dirty)
				m.v.mu.Unlock()
			}
		})
	}
}

// BenchmarkWatchOfALargeCall measures starting a watch of a call of 20,000
// participants: the whole of Watch, and start, the part of it under the
// view's lock, for which every Join of the node waits.
func BenchmarkWatchOfALargeCall(b *testing.B) {
	m, eng, _ := viewWorld(b)
	by := authz.Author{Caller: "bench"}
	const call = "call:acme:1"
	for i := range 20_000 {
		s := fmt.Sprintf("user:u%05d", i)
		if _, err := eng.Grant(b.Context(), by, authz.Grant{Subject: s, Role: "member", Resource: call}); err != nil {
			b.Fatal(err)
		}
		if r, err := m.Join(b.Context(), "", s, call, 0); err != nil || r.Outcome != Admitted {
			b.Fatal(r, err)
		}
	}
	b.Run("Watch", func(b *testing.B) {
		for b.Loop() {
			w, err := m.Watch(call, 0)
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
		}
	})
	b.Run("start", func(b *testing.B) {
		for b.Loop() {
			w, _, err := m.v.start(call, 0, time.Time{}, false, nil)
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
		}
	})
}

// BenchmarkResumeAfterManyEndings measures start resuming a watch of a call
// while the view remembers as many endings as it may, none of them the
// call's: the part of a resumed WatchCall under the view's lock.
func BenchmarkResumeAfterManyEndings(b *testing.B) {
	m, eng, _ := viewWorld(b)
	by := authz.Author{Caller: "bench"}
	for i := range 1_000 {
		if _, err := eng.PutResource(b.Context(), by, authz.Resource{Name: fmt.Sprintf("call:acme:c%04d", i), Parent: "account:acme"}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := eng.Grant(b.Context(), by, authz.Grant{Subject: "user:u", Role: "member", Resource: "account:acme"}); err != nil {
		b.Fatal(err)
	}
	after := eng.Index().Revision()
	for i := range m.v.rememberN {
		call := fmt.Sprintf("call:acme:c%04d", i%1_000)
		r, err := m.Join(b.Context(), "", "user:u", call, 0)
		if err != nil || r.Outcome != Admitted {
			b.Fatal(r, err)
		}
		if err := m.Leave(b.Context(), r.Session); err != nil {
			b.Fatal(err)
		}
	}
	m.v.storeEvents()
	if n := len(m.v.ended); n != m.v.rememberN {
		b.Fatalf("the view remembers %d endings; want %d", n, m.v.rememberN)
	}
	for b.Loop() {
		w, st, err := m.v.start("call:acme:1", after, time.Time{}, false, nil)
		if err != nil || st.reset {
			b.Fatal(st.reset, err)
		}
		w.Close()
	}
}

// BenchmarkLobbiesTouchedByAGrant measures how the view finds the lobbies a
// grant may reach, with 1,000 watched calls under the grant's account, none
// of them with a knock, as most are: the view does it for every change set
// while any call is watched.
func BenchmarkLobbiesTouchedByAGrant(b *testing.B) {
	m, eng, _ := viewWorld(b)
	by := authz.Author{Caller: "bench"}
	for i := range 1_000 {
		call := fmt.Sprintf("call:acme:w%04d", i)
		if _, err := eng.PutResource(b.Context(), by, authz.Resource{Name: call, Parent: "account:acme"}); err != nil {
			b.Fatal(err)
		}
		w, err := m.Watch(call, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(w.Close)
	}
	x := eng.Index()
	sets := []*authz.ChangeSet{{Changes: []authz.Change{{Grant: &authz.Grant{Subject: "user:u", Role: "member", Resource: "account:acme"}}}}}
	for b.Loop() {
		m.v.mu.Lock()
		m.v.lobbiesTouched(x, sets, false, nil)
		m.v.mu.Unlock()
	}
}
