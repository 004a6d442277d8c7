package streamstest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Leave grace, today's peak, anonymous identities

// A leave grace, as the gateway applies it: when a stream connection
// closes, its held source is touched again with TTL grace (one operation,
// like a leave), so that the visitor stays present for the grace.
func release(t testing.TB, bus streams.Bus, c string, v streams.Visitor, source string, grace time.Duration) streams.PresenceResult {
	t.Helper()
	return touch(t, bus, streams.Source{Community: c, Visitor: v, ID: source, TTL: grace})
}

// testGraceReturn: a visitor whose last held source lingers and who comes
// back with a new source within the grace publishes nothing, then or when
// the lingering source ends.
func (s *suite) testGraceReturn(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := user(newID("reloader-"))
	one := streams.Today{Authenticated: 1}
	checkResult(t, "Touch(conn-1)", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "conn-1"}), want{1, true, one})
	checkResult(t, "release(conn-1)", release(t, bus, c, v, "conn-1", shortTTL), want{1, false, one})
	checkResult(t, "Touch(conn-2) within the grace", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "conn-2"}), want{1, false, one})
	time.Sleep(3 * shortTTL) // conn-1's grace runs out: still present
	if snap := snapshot(t, bus, c); snap.Count != 1 {
		t.Errorf("Snapshot(%s).Count = %d after the grace of conn-1; want 1 (conn-2 holds)", c, snap.Count)
	}
	checkEvents(t, "events", r.flush(t), wantEvent{streams.TypeVisitorJoined, 1, one})
	checkResult(t, "Leave(conn-2)", leave(t, bus, c, v, "conn-2"), want{0, true, one})
}

// testGraceLeaves: a visitor that does not come back leaves once, no
// earlier than the grace after its source was released.
func (s *suite) testGraceLeaves(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := anon(newID("guest-"))
	one := streams.Today{Anonymous: 1}
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "conn-1"})
	start := time.Now()
	checkResult(t, "release(conn-1)", release(t, bus, c, v, "conn-1", shortTTL), want{1, false, one})
	if snap := snapshot(t, bus, c); snap.Count != 1 {
		t.Errorf("Snapshot(%s).Count = %d in the grace; want 1", c, snap.Count)
	}
	r.waitUntil(t, "visitor_left after the grace", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.Type == streams.TypeVisitorLeft })
	})
	if elapsed := time.Since(start); elapsed < shortTTL-50*time.Millisecond {
		t.Errorf("visitor_left %v after the release; want no earlier than the grace %v", elapsed, shortTTL)
	}
	time.Sleep(2 * shortTTL) // a second visitor_left would come now
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, one},
		wantEvent{streams.TypeVisitorLeft, 0, one},
	)
}

// testGraceManyReloads: many reloads, each back within the grace, publish
// nothing; the last release leaves once.
func (s *suite) testGraceManyReloads(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := user(newID("clicker-"))
	one := streams.Today{Authenticated: 1}
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "conn-0"})
	for i := 1; i <= 8; i++ {
		release(t, bus, c, v, fmt.Sprintf("conn-%d", i-1), 2*shortTTL)
		time.Sleep(shortTTL / 4)
		checkResult(t, "Touch after a reload", touch(t, bus, streams.Source{Community: c, Visitor: v, ID: fmt.Sprintf("conn-%d", i)}), want{1, false, one})
	}
	release(t, bus, c, v, "conn-8", shortTTL)
	r.waitUntil(t, "visitor_left", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.Type == streams.TypeVisitorLeft })
	})
	time.Sleep(3 * shortTTL)
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, one},
		wantEvent{streams.TypeVisitorLeft, 0, one},
	)
}

// testGraceOtherTab: a lingering source of a visitor with another open tab
// ends silently; the visitor leaves with that tab, at once.
func (s *suite) testGraceOtherTab(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	v := user(newID("tabs-"))
	one := streams.Today{Authenticated: 1}
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "tab-1"})
	touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "tab-2"})
	release(t, bus, c, v, "tab-1", shortTTL)
	time.Sleep(3 * shortTTL)
	checkEvents(t, "events while tab-2 is open", r.flush(t), wantEvent{streams.TypeVisitorJoined, 1, one})
	checkResult(t, "Leave(tab-2)", leave(t, bus, c, v, "tab-2"), want{0, true, one})
}

// testPeakToday: today's peak is the highest count so far and when it was
// first reached; leaves do not lower it, and reaching it again does not
// move its time. Results, snapshots and presence events all carry it.
func (s *suite) testPeakToday(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	start := time.Now().Unix()
	a, b, d := user(newID("a-")), user(newID("b-")), anon(newID("d-"))
	touch(t, bus, streams.Source{Community: c, Visitor: a, ID: "ws"})
	res := touch(t, bus, streams.Source{Community: c, Visitor: b, ID: "ws"})
	if res.Peak.Count != 2 || res.Peak.At < start || res.Peak.At > time.Now().Unix() {
		t.Fatalf("Touch(b).Peak = %+v; want count 2 reached now", res.Peak)
	}
	first := res.Peak
	time.Sleep(1100 * time.Millisecond) // the next peak's second differs
	leave(t, bus, c, a, "ws")
	res = touch(t, bus, streams.Source{Community: c, Visitor: a, ID: "ws"}) // back to 2
	if res.Peak != first {
		t.Errorf("peak after a leave and a return to 2 = %+v; want %+v (not lowered, time not moved)", res.Peak, first)
	}
	res = touch(t, bus, streams.Source{Community: c, Visitor: d, ID: "ws"})
	if res.Peak.Count != 3 || res.Peak.At <= first.At {
		t.Errorf("peak after a third visitor = %+v; want count 3, reached after %d", res.Peak, first.At)
	}
	third := res.Peak
	leave(t, bus, c, d, "ws")
	if snap := snapshot(t, bus, c); snap.Peak != third || snap.Count != 2 {
		t.Errorf("Snapshot = {Count:%d Peak:%+v}; want count 2, peak %+v", snap.Count, snap.Peak, third)
	}
	evs := r.flush(t)
	if len(evs) == 0 || evs[len(evs)-1].Peak != third {
		t.Errorf("the last presence event's Peak = %+v; want %+v", evs[len(evs)-1].Peak, third)
	}
}

// testAnonymousSources: the anonymous visitor x is one visitor whichever
// sources it has (a stream's held source for an anonymous token, the
// service API's TTL source, a poll), and another visitor than the
// authenticated x.
func (s *suite) testAnonymousSources(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	id := newID("anon-")
	oneA := streams.Today{Anonymous: 1}
	checkResult(t, "Touch(anonymous x, stream)", touch(t, bus, streams.Source{Community: c, Visitor: anon(id), ID: "conn-1"}), want{1, true, oneA})
	checkResult(t, "Touch(anonymous x, api)", touch(t, bus, streams.Source{Community: c, Visitor: anon(id), ID: "api", TTL: time.Minute}), want{1, false, oneA})
	checkResult(t, "Touch(anonymous x, poll)", touch(t, bus, streams.Source{Community: c, Visitor: anon(id), ID: "poll", TTL: time.Minute}), want{1, false, oneA})
	both := streams.Today{Authenticated: 1, Anonymous: 1}
	checkResult(t, "Touch(user x, api)", touch(t, bus, streams.Source{Community: c, Visitor: user(id), ID: "api", TTL: time.Minute}), want{2, true, both})
	checkResult(t, "Leave(anonymous x, api)", leave(t, bus, c, anon(id), "api"), want{2, false, both})
	checkResult(t, "Leave(anonymous x, poll)", leave(t, bus, c, anon(id), "poll"), want{2, false, both})
	checkResult(t, "Leave(anonymous x, stream)", leave(t, bus, c, anon(id), "conn-1"), want{1, true, both})
	checkEvents(t, "events", r.flush(t),
		wantEvent{streams.TypeVisitorJoined, 1, oneA},
		wantEvent{streams.TypeVisitorJoined, 2, both},
		wantEvent{streams.TypeVisitorLeft, 1, both},
	)
}
