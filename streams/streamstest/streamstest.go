// Package streamstest is the conformance suite of streams.Bus. Every
// implementation runs Run unchanged from its own tests:
//
//	func TestConformance(t *testing.T) {
//		streamstest.Run(t, func(t testing.TB, o streamstest.Options) streams.Bus {
//			b := memory.New(memory.Options{Location: o.Location, ReapInterval: o.ReapInterval})
//			t.Cleanup(func() { b.Close() })
//			return b
//		})
//	}
//
// The suite runs on real time only (a bus backed by a server cannot be
// driven by a fake clock): TTLs of a few hundred milliseconds, and waits
// that poll with deadlines of seconds, so that a slow machine makes it
// slower, not flaky. Everything that needs a controlled clock (days,
// exact deadlines) belongs in the implementation's own tests; FakeClock
// helps there.
package streamstest

import (
	"errors"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// Options is what the suite asks of each bus it creates.
type Options struct {
	// Location is the zone that defines "today" for the bus.
	Location *time.Location
	// ReapInterval is how often the bus should end expired sources. The
	// suite's TTLs are a few hundred milliseconds, so it asks for a short
	// interval; a bus that expires sources by other means may ignore it,
	// as long as a source ends within a second or so of its deadline.
	ReapInterval time.Duration
}

// Timing of the suite.
const (
	// waitTimeout bounds every wait for something the bus must do.
	waitTimeout = 5 * time.Second
	// shortTTL is the TTL of sources meant to expire during a test.
	shortTTL = 300 * time.Millisecond
	// reapInterval is the ReapInterval the suite asks for.
	reapInterval = 50 * time.Millisecond
	// markerMetric names the analytics events the suite publishes to learn
	// that everything published before has been delivered.
	markerMetric = "streamstest_marker"
)

// Run runs the conformance suite. newBus returns a fresh, running bus
// configured as opts says, and closes it in t.Cleanup; the suite may close
// it earlier. Subtests run in parallel, each on its own bus and on
// communities with random ids.
func Run(t *testing.T, newBus func(t testing.TB, opts Options) streams.Bus) {
	s := &suite{newBus: newBus}
	groups := []struct {
		name  string
		tests []subtest
	}{
		{"PublishSubscribe", []subtest{
			{"Order", s.testPublishOrder},
			{"Time", s.testPublishTime},
			{"Isolation", s.testIsolation},
			{"Fanout", s.testFanout},
			{"OnlyLaterEvents", s.testOnlyLaterEvents},
			{"Cancel", s.testCancel},
			{"CancelWaitsForHandler", s.testCancelWaitsForHandler},
		}},
		{"History", []subtest{
			{"AfterID", s.testHistoryAfterID},
			{"Unknown", s.testHistoryUnknown},
			{"Keeps", s.testHistoryKeeps},
			{"Limit", s.testHistoryLimit},
		}},
		{"Presence", []subtest{
			{"Tabs", s.testTabs},
			{"AnonymousIsNotAuthenticated", s.testAnonymous},
			{"TodaySplit", s.testTodaySplit},
			{"RejoinCountsOnce", s.testRejoin},
			{"LeaveUnknown", s.testLeaveUnknown},
			{"Snapshot", s.testSnapshot},
			{"TTLExpires", s.testTTLExpires},
			{"TouchRenews", s.testTouchRenews},
			{"HeldOutlivesTTL", s.testHeldOutlivesTTL},
			{"Concurrent", s.testConcurrentPresence},
		}},
		{"LeaveGrace", []subtest{
			{"ReturnWithinGrace", s.testGraceReturn},
			{"LeavesOnceAfterGrace", s.testGraceLeaves},
			{"ManyReloads", s.testGraceManyReloads},
			{"OtherTabOpen", s.testGraceOtherTab},
		}},
		{"PeakToday", []subtest{
			{"RisesNeverFalls", s.testPeakToday},
		}},
		{"AnonymousIdentities", []subtest{
			{"TokenIsServiceAnonymous", s.testAnonymousSources},
		}},
		{"VisitorHistory", s.historyTests()},
		{"Sessions", []subtest{
			{"CreateGet", s.testSessionCreateGet},
			{"NotFound", s.testSessionNotFound},
			{"Expire", s.testSessionExpire},
			{"Revoke", s.testSessionRevoke},
		}},
		{"Close", []subtest{
			{"Semantics", s.testClose},
		}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, st := range g.tests {
				t.Run(st.name, func(t *testing.T) {
					t.Parallel()
					st.f(t)
				})
			}
		})
	}
}

type subtest struct {
	name string
	f    func(t *testing.T)
}

type suite struct {
	newBus func(t testing.TB, opts Options) streams.Bus
}

func (s *suite) bus(t testing.TB) streams.Bus {
	t.Helper()
	b := s.newBus(t, Options{Location: time.UTC, ReapInterval: reapInterval})
	if b == nil {
		t.Fatal("newBus returned nil")
	}
	return b
}

// ---------------------------------------------------------------------------
// Close

func (s *suite) testClose(t *testing.T) {
	bus := s.bus(t)
	ctx := t.Context()
	c := newCommunity()
	if err := bus.Ping(ctx); err != nil {
		t.Fatalf("Ping() = %v; want nil", err)
	}
	r := subscribe(t, bus, c)
	revokeCancel := bus.OnRevoke(func(string) {})
	if err := bus.Close(); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	if err := bus.Close(); err != nil && !errors.Is(err, streams.ErrClosed) {
		t.Errorf("second Close() = %v; want nil or %v", err, streams.ErrClosed)
	}

	// Cancel functions taken before Close still return.
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.cancel()
		revokeCancel()
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("cancel after Close did not return within %v", waitTimeout)
	}

	v := user("closed")
	calls := []struct {
		name string
		err  error
	}{
		{"Ping", bus.Ping(ctx)},
		{"Publish", second(bus.Publish(ctx, analytics(c, 1)))},
		{"Subscribe", second(bus.Subscribe(ctx, c, func(*streams.Event) {}))},
		{"History", third(bus.History(ctx, c, "x", 0))},
		{"Touch", second(bus.Touch(ctx, streams.Source{Community: c, Visitor: v, ID: "tab"}))},
		{"Leave", second(bus.Leave(ctx, c, v, "tab"))},
		{"Snapshot", second(bus.Snapshot(ctx, c))},
		{"CreateSession", bus.CreateSession(ctx, streams.Session{ID: newID("s-"), UserID: "u", ExpiresAt: time.Now().Add(time.Hour)})},
		{"Session", second(bus.Session(ctx, "x"))},
		{"RevokeSession", bus.RevokeSession(ctx, "x")},
	}
	for _, call := range calls {
		if !errors.Is(call.err, streams.ErrClosed) {
			t.Errorf("%s after Close error = %v; want %v", call.name, call.err, streams.ErrClosed)
		}
	}
	bus.OnRevoke(func(string) {})() // must not panic
}
