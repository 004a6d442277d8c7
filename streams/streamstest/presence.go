package streamstest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Presence

func (s *suite) testTabs(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	alice := user(newID("alice-"))
	one := streams.Today{Authenticated: 1}

	res := touch(t, bus, streams.Source{Community: c, Visitor: alice, ID: "tab1"})
	checkResult(t, "Touch(tab1)", res, want{Count: 1, Changed: true, Today: one})
	joined := r.flush(t)
	checkEvents(t, "events after Touch(tab1)", joined, wantEvent{streams.TypeVisitorJoined, 1, one})
	if len(joined) == 1 && joined[0].Seq != res.Seq {
		t.Errorf("Touch(tab1).Seq = %d; want the visitor_joined Seq %d", res.Seq, joined[0].Seq)
	}

	last := snapshot(t, bus, c).Seq
	res = touch(t, bus, streams.Source{Community: c, Visitor: alice, ID: "tab2"})
	checkResult(t, "Touch(tab2)", res, want{Count: 1, Changed: false, Today: one})
	if res.Seq != last {
		t.Errorf("Touch(tab2).Seq = %d; want the last Seq %d", res.Seq, last)
	}
	res = touch(t, bus, streams.Source{Community: c, Visitor: alice, ID: "tab1"}) // renew
	checkResult(t, "Touch(tab1) again", res, want{Count: 1, Changed: false, Today: one})
	res = leave(t, bus, c, alice, "tab1")
	checkResult(t, "Leave(tab1)", res, want{Count: 1, Changed: false, Today: one})
	checkEvents(t, "events after second tab, renew and Leave(tab1)", r.flush(t))

	res = leave(t, bus, c, alice, "tab2")
	checkResult(t, "Leave(tab2)", res, want{Count: 0, Changed: true, Today: one})
	left := r.flush(t)
	checkEvents(t, "events after Leave(tab2)", left, wantEvent{streams.TypeVisitorLeft, 0, one})
	if len(left) == 1 && left[0].Seq != res.Seq {
		t.Errorf("Leave(tab2).Seq = %d; want the visitor_left Seq %d", res.Seq, left[0].Seq)
	}

	res = leave(t, bus, c, alice, "tab2")
	checkResult(t, "Leave(tab2) again", res, want{Count: 0, Changed: false, Today: one})
	checkEvents(t, "events after Leave(tab2) again", r.flush(t))

	// Presence events are in history like any other.
	if len(joined) == 1 {
		hist, ok, err := bus.History(t.Context(), c, joined[0].ID, 0)
		if err != nil || !ok {
			t.Fatalf("History(%s, joined) = _, %v, %v; want ok", c, ok, err)
		}
		var presence []streams.Event
		for _, e := range hist {
			if e.IsPresence() {
				presence = append(presence, e)
			}
		}
		checkEvents(t, "presence events in History(after joined)", presence, wantEvent{streams.TypeVisitorLeft, 0, one})
	}
}

func (s *suite) testAnonymous(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	id := newID("x-")
	res := touch(t, bus, streams.Source{Community: c, Visitor: user(id), ID: "tab"})
	checkResult(t, "Touch(user x)", res, want{Count: 1, Changed: true, Today: streams.Today{Authenticated: 1}})
	res = touch(t, bus, streams.Source{Community: c, Visitor: anon(id), ID: "tab"})
	checkResult(t, "Touch(anonymous x)", res, want{Count: 2, Changed: true, Today: streams.Today{Authenticated: 1, Anonymous: 1}})
	res = leave(t, bus, c, anon(id), "tab")
	checkResult(t, "Leave(anonymous x)", res, want{Count: 1, Changed: true, Today: streams.Today{Authenticated: 1, Anonymous: 1}})
	snap := snapshot(t, bus, c)
	if snap.Count != 1 {
		t.Errorf("Snapshot(%s).Count = %d; want 1 (user x is still present)", c, snap.Count)
	}
}

func (s *suite) testTodaySplit(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	visitors := []streams.Visitor{user(newID("u1-")), user(newID("u2-")), anon(newID("a1-")), anon(newID("a2-")), anon(newID("a3-"))}
	for _, v := range visitors {
		touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "api", TTL: time.Minute})
	}
	want5 := streams.Today{Authenticated: 2, Anonymous: 3}
	snap := snapshot(t, bus, c)
	if snap.Count != 5 || snap.Today != want5 {
		t.Errorf("Snapshot(%s) = {Count:%d Today:%+v}; want {Count:5 Today:%+v}", c, snap.Count, snap.Today, want5)
	}
	if snap.Today.Total() != 5 {
		t.Errorf("Snapshot(%s).Today.Total() = %d; want 5", c, snap.Today.Total())
	}
	for _, v := range visitors {
		leave(t, bus, c, v, "api")
	}
	snap = snapshot(t, bus, c)
	if snap.Count != 0 || snap.Today != want5 {
		t.Errorf("Snapshot(%s) after all left = {Count:%d Today:%+v}; want {Count:0 Today:%+v}", c, snap.Count, snap.Today, want5)
	}
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, streams.Today{Authenticated: 1}},
		wantEvent{streams.TypeVisitorJoined, 2, streams.Today{Authenticated: 2}},
		wantEvent{streams.TypeVisitorJoined, 3, streams.Today{Authenticated: 2, Anonymous: 1}},
		wantEvent{streams.TypeVisitorJoined, 4, streams.Today{Authenticated: 2, Anonymous: 2}},
		wantEvent{streams.TypeVisitorJoined, 5, want5},
		wantEvent{streams.TypeVisitorLeft, 4, want5},
		wantEvent{streams.TypeVisitorLeft, 3, want5},
		wantEvent{streams.TypeVisitorLeft, 2, want5},
		wantEvent{streams.TypeVisitorLeft, 1, want5},
		wantEvent{streams.TypeVisitorLeft, 0, want5},
	)
}

func (s *suite) testRejoin(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := anon(newID("anon-"))
	one := streams.Today{Anonymous: 1}
	checkResult(t, "Touch", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "api"}), want{1, true, one})
	checkResult(t, "Leave", leave(t, bus, c, v, "api"), want{0, true, one})
	checkResult(t, "Touch again", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "api"}), want{1, true, one})
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, one},
		wantEvent{streams.TypeVisitorLeft, 0, one},
		wantEvent{streams.TypeVisitorJoined, 1, one},
	)
}

func (s *suite) testLeaveUnknown(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	res := leave(t, bus, c, user(newID("nobody-")), "tab")
	checkResult(t, "Leave(unknown visitor, unused community)", res, want{})
	if res.Seq != 0 {
		t.Errorf("Leave(unknown visitor, unused community).Seq = %d; want 0", res.Seq)
	}

	r := subscribe(t, bus, c)
	bob := user(newID("bob-"))
	joined := touch(t, bus, streams.Source{Community: c, Visitor: bob, ID: "tab"})
	one := streams.Today{Authenticated: 1}
	for _, call := range []struct {
		name   string
		v      streams.Visitor
		source string
	}{
		{"Leave(unknown visitor)", user(newID("nobody-")), "tab"},
		{"Leave(unknown source)", bob, "other-tab"},
		{"Leave(anonymous namesake)", anon(bob.ID), "tab"},
	} {
		res := leave(t, bus, c, call.v, call.source)
		checkResult(t, call.name, res, want{Count: 1, Changed: false, Today: one})
		if res.Seq != joined.Seq {
			t.Errorf("%s.Seq = %d; want the last Seq %d", call.name, res.Seq, joined.Seq)
		}
	}
	checkEvents(t, "events", r.flush(t), wantEvent{streams.TypeVisitorJoined, 1, one})
}

func (s *suite) testSnapshot(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	snap := snapshot(t, bus, c)
	if snap.Count != 0 || snap.Seq != 0 || snap.Today != (streams.Today{}) || !snap.Changed.IsZero() {
		t.Errorf("Snapshot(unused community) = %+v; want zero figures, Seq 0, zero Changed", snap)
	}
	r := subscribe(t, bus, c)
	carol := user(newID("carol-"))
	res := touch(t, bus, streams.Source{Community: c, Visitor: carol, ID: "tab"})
	joined := r.waitN(t, 1)[0]
	snap = snapshot(t, bus, c)
	if snap.Count != 1 || snap.Seq != res.Seq || snap.Today != (streams.Today{Authenticated: 1}) {
		t.Errorf("Snapshot(%s) = %+v; want Count 1, Seq %d, Today {1 0}", c, snap, res.Seq)
	}
	if !snap.Changed.Equal(joined.Time) {
		t.Errorf("Snapshot(%s).Changed = %v; want the visitor_joined time %v", c, snap.Changed, joined.Time)
	}
	// The ids name the last event, so that an SSE client starting from a
	// snapshot (or a presence result) resumes from it without a gap.
	if res.ID != joined.ID || snap.LastID != joined.ID {
		t.Errorf("PresenceResult.ID = %q, Snapshot.LastID = %q; want the visitor_joined id %q", res.ID, snap.LastID, joined.ID)
	}
	e := publish(t, bus, analytics(c, 1))
	snap2 := snapshot(t, bus, c)
	if snap2.Seq != e.Seq || snap2.LastID != e.ID {
		t.Errorf("Snapshot(%s) after Publish = {Seq:%d LastID:%q}; want {Seq:%d LastID:%q}", c, snap2.Seq, snap2.LastID, e.Seq, e.ID)
	}
	if missed, ok, err := bus.History(t.Context(), c, snap.LastID, 0); err != nil || !ok || len(missed) != 1 || missed[0].ID != e.ID {
		t.Errorf("History(after Snapshot.LastID %q) = %s, %v, %v; want [%s]", snap.LastID, describe(missed), ok, err, e.ID)
	}
	// A second tab changes nothing: its result still names the last event.
	tab2 := touch(t, bus, streams.Source{Community: c, Visitor: carol, ID: "tab2"})
	if tab2.Changed || tab2.Seq != e.Seq || tab2.ID != e.ID {
		t.Errorf("Touch(second tab) = %+v; want unchanged, Seq %d, ID %q", tab2, e.Seq, e.ID)
	}
	if !snap2.Changed.Equal(snap.Changed) || snap2.Count != 1 {
		t.Errorf("Snapshot(%s) after analytics = {Count:%d Changed:%v}; want {Count:1 Changed:%v} (not a presence change)",
			c, snap2.Count, snap2.Changed, snap.Changed)
	}
}

func (s *suite) testTTLExpires(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := anon(newID("poller-"))
	one := streams.Today{Anonymous: 1}
	start := time.Now()
	checkResult(t, "Touch(ttl)", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "poll", TTL: shortTTL}), want{1, true, one})
	r.waitUntil(t, "visitor_left", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.Type == streams.TypeVisitorLeft })
	})
	if elapsed := time.Since(start); elapsed < shortTTL-50*time.Millisecond {
		t.Errorf("visitor_left %v after Touch(ttl %v); want no earlier than the TTL", elapsed, shortTTL)
	}
	time.Sleep(2 * shortTTL) // a second visitor_left would come now
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, one},
		wantEvent{streams.TypeVisitorLeft, 0, one},
	)
	if snap := snapshot(t, bus, c); snap.Count != 0 || snap.Today != one {
		t.Errorf("Snapshot(%s) = {Count:%d Today:%+v}; want {Count:0 Today:%+v}", c, snap.Count, snap.Today, one)
	}
	// The source is gone: leaving it changes nothing.
	checkResult(t, "Leave(expired source)", leave(t, bus, c, v, "poll"), want{0, false, one})
}

func (s *suite) testTouchRenews(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := user(newID("dave-"))
	one := streams.Today{Authenticated: 1}
	src := streams.Source{Community: c, Visitor: v, ID: "poll", TTL: 2 * shortTTL}
	checkResult(t, "Touch(ttl)", touch(t, bus, src), want{1, true, one})
	// Renew well within the TTL for two TTLs.
	for end := time.Now().Add(2 * src.TTL); time.Now().Before(end); {
		time.Sleep(src.TTL / 6)
		checkResult(t, "Touch(ttl) renewal", touch(t, bus, src), want{1, false, one})
	}
	checkEvents(t, "events while renewing", r.flush(t), wantEvent{streams.TypeVisitorJoined, 1, one})
	r.waitUntil(t, "visitor_left once renewals stopped", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.Type == streams.TypeVisitorLeft })
	})
	checkEvents(t, "events after renewals stopped", r.flush(t), wantEvent{streams.TypeVisitorLeft, 0, one})
}

func (s *suite) testHeldOutlivesTTL(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := user(newID("erin-"))
	one := streams.Today{Authenticated: 1}
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "ws-1"})                // held
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "poll", TTL: shortTTL}) // expires
	time.Sleep(3 * shortTTL)
	if snap := snapshot(t, bus, c); snap.Count != 1 {
		t.Errorf("Snapshot(%s).Count = %d; want 1 (a held source outlives a TTL source)", c, snap.Count)
	}
	checkEvents(t, "events", r.flush(t), wantEvent{streams.TypeVisitorJoined, 1, one})
	checkResult(t, "Leave(ws-1)", leave(t, bus, c, v, "ws-1"), want{0, true, one})
}

func (s *suite) testConcurrentPresence(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	const visitors, rounds = 16, 10
	var mu sync.Mutex
	results := make(map[uint64]int) // seq -> count, for changed results
	var wg sync.WaitGroup
	for i := range visitors {
		v := user(fmt.Sprintf("%s-%d", newID("v-"), i))
		wg.Go(func() {
			for range rounds {
				var rs []streams.PresenceResult
				for _, op := range []func() (streams.PresenceResult, error){
					func() (streams.PresenceResult, error) {
						return bus.Touch(context.Background(), streams.Source{Community: c, Visitor: v, ID: "tab1"})
					},
					func() (streams.PresenceResult, error) {
						return bus.Touch(context.Background(), streams.Source{Community: c, Visitor: v, ID: "tab2"})
					},
					func() (streams.PresenceResult, error) { return bus.Leave(context.Background(), c, v, "tab1") },
					func() (streams.PresenceResult, error) { return bus.Leave(context.Background(), c, v, "tab2") },
				} {
					res, err := op()
					if err != nil {
						t.Errorf("presence operation error = %v; want nil", err)
						return
					}
					rs = append(rs, res)
				}
				if !rs[0].Changed || rs[1].Changed || rs[2].Changed || !rs[3].Changed {
					t.Errorf("Changed of Touch, Touch, Leave, Leave = %v %v %v %v; want true false false true",
						rs[0].Changed, rs[1].Changed, rs[2].Changed, rs[3].Changed)
				}
				mu.Lock()
				results[rs[0].Seq] = rs[0].Count
				results[rs[3].Seq] = rs[3].Count
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	evs := r.flush(t)
	count, joined, left := 0, 0, 0
	for i, e := range evs {
		if i > 0 && e.Seq <= evs[i-1].Seq {
			t.Errorf("event #%d Seq = %d; want > %d", i, e.Seq, evs[i-1].Seq)
		}
		switch e.Type {
		case streams.TypeVisitorJoined:
			count++
			joined++
		case streams.TypeVisitorLeft:
			count--
			left++
		default:
			t.Errorf("event #%d type = %s; want only presence events", i, e.Type)
			continue
		}
		if e.Count != count {
			t.Errorf("event #%d (%s) Count = %d; want %d (each presence event changes the count by one)", i, e.Type, e.Count, count)
			count = e.Count
		}
		if want, ok := results[e.Seq]; ok && want != e.Count {
			t.Errorf("event #%d Count = %d; want %d as the PresenceResult with its Seq said", i, e.Count, want)
		}
		delete(results, e.Seq)
	}
	if joined != visitors*rounds || left != visitors*rounds {
		t.Errorf("received %d visitor_joined and %d visitor_left; want %d of each", joined, left, visitors*rounds)
	}
	if len(results) != 0 {
		t.Errorf("%d changed PresenceResults have a Seq no event carries", len(results))
	}
	wantToday := streams.Today{Authenticated: visitors}
	if snap := snapshot(t, bus, c); snap.Count != 0 || snap.Today != wantToday {
		t.Errorf("Snapshot(%s) = {Count:%d Today:%+v}; want {Count:0 Today:%+v}", c, snap.Count, snap.Today, wantToday)
	}
}
