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
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
// Helpers

// newCommunity returns a random community id shaped like a UUID.
func newCommunity() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newID returns a random id for sessions and visitors.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func user(id string) streams.Visitor { return streams.Visitor{ID: id, Authenticated: true} }
func anon(id string) streams.Visitor { return streams.Visitor{ID: id} }

func analytics(community string, value int) streams.Event {
	return streams.Event{
		Community: community,
		Type:      streams.TypeAnalyticsUpdate,
		Metric:    "test_metric",
		Value:     json.RawMessage(fmt.Sprint(value)),
	}
}

func publish(t testing.TB, bus streams.Bus, e streams.Event) streams.Event {
	t.Helper()
	got, err := bus.Publish(t.Context(), e)
	if err != nil {
		t.Fatalf("Publish(%s %s) error = %v; want nil", e.Community, e.Type, err)
	}
	return got
}

func touch(t testing.TB, bus streams.Bus, s streams.Source) streams.PresenceResult {
	t.Helper()
	r, err := bus.Touch(t.Context(), s)
	if err != nil {
		t.Fatalf("Touch(%s/%s) error = %v; want nil", s.Visitor.Key(), s.ID, err)
	}
	return r
}

func leave(t testing.TB, bus streams.Bus, community string, v streams.Visitor, source string) streams.PresenceResult {
	t.Helper()
	r, err := bus.Leave(t.Context(), community, v, source)
	if err != nil {
		t.Fatalf("Leave(%s/%s) error = %v; want nil", v.Key(), source, err)
	}
	return r
}

func snapshot(t testing.TB, bus streams.Bus, community string) streams.Snapshot {
	t.Helper()
	s, err := bus.Snapshot(t.Context(), community)
	if err != nil {
		t.Fatalf("Snapshot(%s) error = %v; want nil", community, err)
	}
	return s
}

// want is the expected part of a PresenceResult or presence event.
type want struct {
	Count   int
	Changed bool
	Today   streams.Today
}

func checkResult(t testing.TB, call string, got streams.PresenceResult, w want) {
	t.Helper()
	if got.Count != w.Count || got.Changed != w.Changed || got.Today != w.Today {
		t.Errorf("%s = {Count:%d Changed:%v Today:%+v}; want {Count:%d Changed:%v Today:%+v}",
			call, got.Count, got.Changed, got.Today, w.Count, w.Changed, w.Today)
	}
}

// wantEvent is the expected part of a presence event.
type wantEvent struct {
	Type  string
	Count int
	Today streams.Today
}

func (w wantEvent) String() string {
	return fmt.Sprintf("%s(count=%d today=%d/%d)", w.Type, w.Count, w.Today.Authenticated, w.Today.Anonymous)
}

func checkEvents(t testing.TB, what string, got []streams.Event, want ...wantEvent) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Type == want[i].Type && got[i].Count == want[i].Count && got[i].Today == want[i].Today
	}
	if !ok {
		t.Errorf("%s = %s; want %v", what, describe(got), want)
	}
}

func describe(evs []streams.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		switch {
		case e.IsPresence():
			parts[i] = fmt.Sprintf("#%d %s(count=%d today=%d/%d)", e.Seq, e.Type, e.Count, e.Today.Authenticated, e.Today.Anonymous)
		case e.Type == streams.TypeAnalyticsUpdate:
			parts[i] = fmt.Sprintf("#%d %s(%s=%s)", e.Seq, e.Type, e.Metric, e.Value)
		default:
			parts[i] = fmt.Sprintf("#%d %s", e.Seq, e.Type)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// recorder is a subscription that records every event it receives.
type recorder struct {
	bus       streams.Bus
	community string
	cancel    func()
	signal    chan struct{} // capacity 1: "an event arrived"

	mu     sync.Mutex
	events []streams.Event

	cursor int // next event flush returns; used by the test goroutine only
}

func subscribe(t testing.TB, bus streams.Bus, community string) *recorder {
	t.Helper()
	r := &recorder{bus: bus, community: community, signal: make(chan struct{}, 1)}
	cancel, err := bus.Subscribe(t.Context(), community, r.handle)
	if err != nil {
		t.Fatalf("Subscribe(%s) error = %v; want nil", community, err)
	}
	r.cancel = cancel
	t.Cleanup(cancel)
	return r
}

func (r *recorder) handle(e *streams.Event) {
	r.mu.Lock()
	r.events = append(r.events, *e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []streams.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitUntil waits until cond holds for the events received so far and
// returns them; it fails the test after waitTimeout.
func (r *recorder) waitUntil(t testing.TB, what string, cond func([]streams.Event) bool) []streams.Event {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		evs := r.all()
		if cond(evs) {
			return evs
		}
		select {
		case <-r.signal:
		case <-deadline.C:
			t.Fatalf("no %s after %v; events received: %s", what, waitTimeout, describe(evs))
		}
	}
}

// waitN waits for at least n events and returns them all.
func (r *recorder) waitN(t testing.TB, n int) []streams.Event {
	t.Helper()
	return r.waitUntil(t, fmt.Sprintf("%d events", n), func(evs []streams.Event) bool { return len(evs) >= n })
}

// flush publishes a marker event, waits for it and returns the events
// received since the previous flush, without markers. Events are delivered
// in Seq order, so once the marker arrived every event published before it
// has arrived too: flush returns exactly those not yet returned.
func (r *recorder) flush(t testing.TB) []streams.Event {
	t.Helper()
	m := publish(t, r.bus, streams.Event{
		Community: r.community,
		Type:      streams.TypeAnalyticsUpdate,
		Metric:    markerMetric,
		Value:     json.RawMessage(`true`),
	})
	evs := r.waitUntil(t, "marker "+m.ID, func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.ID == m.ID })
	})
	i := slices.IndexFunc(evs, func(e streams.Event) bool { return e.ID == m.ID })
	if i < r.cursor {
		t.Fatalf("marker %s arrived before events already returned", m.ID)
	}
	out := slices.DeleteFunc(slices.Clone(evs[r.cursor:i]), func(e streams.Event) bool { return e.Metric == markerMetric })
	r.cursor = i + 1
	return out
}

// eventually polls cond every 20ms until it returns "" or waitTimeout
// passes; it then fails with cond's last complaint.
func eventually(t testing.TB, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", waitTimeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Publish and subscribe

func (s *suite) testPublishOrder(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r := subscribe(t, bus, c)
	const n = 50
	var published []streams.Event
	for i := range n {
		published = append(published, publish(t, bus, analytics(c, i)))
	}
	if published[0].Seq != 1 {
		t.Errorf("first Publish(%s).Seq = %d; want 1", c, published[0].Seq)
	}
	ids := make(map[string]bool)
	for i, e := range published {
		if e.ID == "" || ids[e.ID] {
			t.Errorf("Publish #%d ID = %q; want unique and non-empty", i, e.ID)
		}
		ids[e.ID] = true
		if i > 0 && e.Seq <= published[i-1].Seq {
			t.Errorf("Publish #%d Seq = %d; want > %d", i, e.Seq, published[i-1].Seq)
		}
		if e.Community != c || e.Type != streams.TypeAnalyticsUpdate || e.Metric != "test_metric" || string(e.Value) != fmt.Sprint(i) {
			t.Errorf("Publish #%d = %+v; want the event as given", i, e)
		}
	}
	got := r.waitN(t, n)
	if len(got) != n {
		t.Fatalf("received %d events; want %d", len(got), n)
	}
	for i, e := range got {
		p := published[i]
		if e.ID != p.ID || e.Seq != p.Seq || e.Community != c || string(e.Value) != string(p.Value) || !e.Time.Equal(p.Time) {
			t.Errorf("received #%d = {ID:%s Seq:%d Value:%s Time:%v}; want {ID:%s Seq:%d Value:%s Time:%v}",
				i, e.ID, e.Seq, e.Value, e.Time, p.ID, p.Seq, p.Value, p.Time)
		}
	}
}

func (s *suite) testPublishTime(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	before := time.Now().Truncate(time.Second)
	e := publish(t, bus, analytics(c, 1))
	after := time.Now()
	if e.Time.IsZero() || e.Time.Nanosecond() != 0 || e.Time.Before(before.Add(-time.Second)) || e.Time.After(after.Add(time.Second)) {
		t.Errorf("Publish(zero Time).Time = %v; want whole seconds within [%v, %v]", e.Time, before, after)
	}
	if _, off := e.Time.Zone(); off != 0 {
		t.Errorf("Publish(zero Time).Time = %v; want UTC", e.Time)
	}
	given := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := analytics(c, 2)
	ev.Time = given
	if e := publish(t, bus, ev); !e.Time.Equal(given) {
		t.Errorf("Publish(Time %v).Time = %v; want %v", given, e.Time, given)
	}
}

func (s *suite) testIsolation(t *testing.T) {
	bus := s.bus(t)
	a, b := newCommunity(), newCommunity()
	ra, rb := subscribe(t, bus, a), subscribe(t, bus, b)
	for i := range 3 {
		publish(t, bus, analytics(a, i))
	}
	publish(t, bus, analytics(b, 10))
	if got := ra.flush(t); len(got) != 3 {
		t.Errorf("events of %s = %s; want 3 events", a, describe(got))
	}
	got := rb.flush(t)
	if len(got) != 1 || string(got[0].Value) != "10" {
		t.Errorf("events of %s = %s; want only its own analytics_update(test_metric=10)", b, describe(got))
	}
	if len(got) == 1 && got[0].Seq != 1 {
		t.Errorf("first event of %s Seq = %d; want 1 (sequences are per community)", b, got[0].Seq)
	}
}

func (s *suite) testFanout(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r1, r2 := subscribe(t, bus, c), subscribe(t, bus, c)
	e := publish(t, bus, analytics(c, 1))
	for i, r := range []*recorder{r1, r2} {
		got := r.flush(t)
		if len(got) != 1 || got[0].ID != e.ID {
			t.Errorf("subscriber %d received %s; want [%s]", i+1, describe(got), e.ID)
		}
	}
}

func (s *suite) testOnlyLaterEvents(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	publish(t, bus, analytics(c, 1))
	r := subscribe(t, bus, c)
	e := publish(t, bus, analytics(c, 2))
	if got := r.flush(t); len(got) != 1 || got[0].ID != e.ID {
		t.Errorf("subscriber received %s; want only the event published after Subscribe (%s)", describe(got), e.ID)
	}
}

func (s *suite) testCancel(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	r1, r2 := subscribe(t, bus, c), subscribe(t, bus, c)
	e1 := publish(t, bus, analytics(c, 1))
	r1.waitN(t, 1)
	r1.cancel()
	r1.cancel() // idempotent
	publish(t, bus, analytics(c, 2))
	if got := r2.flush(t); len(got) != 2 {
		t.Fatalf("remaining subscriber received %s; want 2 events", describe(got))
	}
	// r2 saw the marker, so r1 would have seen the second event by now.
	if got := r1.all(); len(got) != 1 || got[0].ID != e1.ID {
		t.Errorf("cancelled subscriber received %s; want only [%s]", describe(got), e1.ID)
	}
}

func (s *suite) testCancelWaitsForHandler(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	witness := subscribe(t, bus, c)
	var cancelled atomic.Bool
	var received, late atomic.Int64
	cancel, err := bus.Subscribe(t.Context(), c, func(*streams.Event) {
		if cancelled.Load() {
			late.Add(1)
		}
		received.Add(1)
	})
	if err != nil {
		t.Fatalf("Subscribe(%s) error = %v; want nil", c, err)
	}
	t.Cleanup(cancel)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := bus.Publish(context.Background(), analytics(c, i)); err != nil {
				t.Errorf("Publish error = %v; want nil", err)
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	eventually(t, func() string {
		if n := received.Load(); n < 20 {
			return fmt.Sprintf("handler received %d events; want at least 20", n)
		}
		return ""
	})
	cancel()
	cancelled.Store(true)
	time.Sleep(50 * time.Millisecond) // keep publishing for a while
	close(stop)
	wg.Wait()
	cancel() // idempotent, and harmless once cancelled
	witness.flush(t)
	if n := late.Load(); n != 0 {
		t.Errorf("handler called %d times after cancel returned; want 0", n)
	}
}

// ---------------------------------------------------------------------------
// History

func (s *suite) testHistoryAfterID(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	var published []streams.Event
	for i := range 5 {
		published = append(published, publish(t, bus, analytics(c, i)))
	}
	got, ok, err := bus.History(t.Context(), c, published[1].ID, 0)
	if err != nil || !ok {
		t.Fatalf("History(%s, #2) = _, %v, %v; want ok", c, ok, err)
	}
	if len(got) != 3 {
		t.Fatalf("History(%s, #2) = %s; want the 3 later events", c, describe(got))
	}
	for i, e := range got {
		p := published[i+2]
		if e.ID != p.ID || e.Seq != p.Seq || e.Type != p.Type || string(e.Value) != string(p.Value) || !e.Time.Equal(p.Time) {
			t.Errorf("History(%s, #2)[%d] = %+v; want %+v", c, i, e, p)
		}
	}
	got, ok, err = bus.History(t.Context(), c, published[4].ID, 0)
	if err != nil || !ok || len(got) != 0 {
		t.Errorf("History(%s, last) = %s, %v, %v; want [], true, nil", c, describe(got), ok, err)
	}
}

func (s *suite) testHistoryUnknown(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	e := publish(t, bus, analytics(c, 1))
	for _, id := range []string{"", "unknown", "0", "-1", e.ID + "x", "x" + e.ID} {
		got, ok, err := bus.History(t.Context(), c, id, 0)
		if err != nil || ok {
			t.Errorf("History(%s, %q) = %s, %v, %v; want _, false, nil", c, id, describe(got), ok, err)
		}
	}
	got, ok, err := bus.History(t.Context(), newCommunity(), "unknown", 0)
	if err != nil || ok {
		t.Errorf("History(unused community, unknown) = %s, %v, %v; want _, false, nil", describe(got), ok, err)
	}
}

// testHistoryLimit: with a limit, a gap of more events than the limit is
// not ok (the caller starts from a snapshot); up to the limit it is read.
func (s *suite) testHistoryLimit(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	var published []streams.Event
	for i := range 10 {
		published = append(published, publish(t, bus, analytics(c, i)))
	}
	if got, ok, err := bus.History(t.Context(), c, published[0].ID, 8); err != nil || ok || len(got) != 0 {
		t.Errorf("History(%s, #1, limit 8) = %s, %v, %v; want nothing, false (9 events missed)", c, describe(got), ok, err)
	}
	got, ok, err := bus.History(t.Context(), c, published[0].ID, 9)
	if err != nil || !ok || len(got) != 9 || got[0].ID != published[1].ID {
		t.Errorf("History(%s, #1, limit 9) = %s, %v, %v; want the 9 later events", c, describe(got), ok, err)
	}
	if got, ok, err := bus.History(t.Context(), c, published[9].ID, 1); err != nil || !ok || len(got) != 0 {
		t.Errorf("History(%s, last, limit 1) = %s, %v, %v; want [], true", c, describe(got), ok, err)
	}
}

func (s *suite) testHistoryKeeps(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	const n = 150
	var published []streams.Event
	for i := range n {
		published = append(published, publish(t, bus, analytics(c, i)))
	}
	// All n events are younger than 5 minutes: all are kept.
	for _, from := range []int{0, n - 101, n - 2} {
		got, ok, err := bus.History(t.Context(), c, published[from].ID, 0)
		if err != nil || !ok {
			t.Fatalf("History(%s, #%d of %d) = _, %v, %v; want ok", c, from+1, n, ok, err)
		}
		if len(got) != n-from-1 {
			t.Fatalf("History(%s, #%d of %d) returned %d events; want %d", c, from+1, n, len(got), n-from-1)
		}
		for i, e := range got {
			if e.ID != published[from+1+i].ID {
				t.Fatalf("History(%s, #%d)[%d].ID = %s; want %s", c, from+1, i, e.ID, published[from+1+i].ID)
			}
		}
	}
}

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

// ---------------------------------------------------------------------------
// Sessions

func checkSession(t testing.TB, got, want streams.Session) {
	t.Helper()
	if got.ID != want.ID || got.UserID != want.UserID || got.Role != want.Role ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !maps.Equal(got.Communities, want.Communities) {
		t.Errorf("Session(%s) = %+v; want %+v", want.ID, got, want)
	}
}

func (s *suite) testSessionCreateGet(t *testing.T) {
	bus := s.bus(t)
	sess := streams.Session{
		ID:          newID("sess-"),
		UserID:      "user-1",
		Communities: map[string]string{newCommunity(): "member", newCommunity(): "moderator"},
		Role:        "admin",
		ExpiresAt:   time.Now().Add(time.Hour).Truncate(time.Second).UTC(),
	}
	if err := bus.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession error = %v; want nil", err)
	}
	got, err := bus.Session(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("Session(%s) error = %v; want nil", sess.ID, err)
	}
	checkSession(t, got, sess)
	// The caller owns what it gets: changing it changes nothing stored.
	for k := range got.Communities {
		got.Communities[k] = "admin"
	}
	again, err := bus.Session(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("Session(%s) error = %v; want nil", sess.ID, err)
	}
	checkSession(t, again, sess)
}

func (s *suite) testSessionNotFound(t *testing.T) {
	bus := s.bus(t)
	id := newID("missing-")
	if _, err := bus.Session(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("Session(unknown) error = %v; want %v", err, streams.ErrSessionNotFound)
	}
	if err := bus.RevokeSession(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(unknown) error = %v; want %v", err, streams.ErrSessionNotFound)
	}
}

func (s *suite) testSessionExpire(t *testing.T) {
	bus := s.bus(t)
	sess := streams.Session{ID: newID("sess-"), UserID: "user-2", ExpiresAt: time.Now().Add(2 * shortTTL).Truncate(time.Millisecond)}
	if err := bus.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession error = %v; want nil", err)
	}
	if _, err := bus.Session(t.Context(), sess.ID); err != nil {
		t.Fatalf("Session(%s) before expiry error = %v; want nil", sess.ID, err)
	}
	eventually(t, func() string {
		_, err := bus.Session(t.Context(), sess.ID)
		switch {
		case errors.Is(err, streams.ErrSessionExpired):
			return ""
		case err != nil:
			t.Fatalf("Session(%s) error = %v; want nil, then %v", sess.ID, err, streams.ErrSessionExpired)
		}
		return fmt.Sprintf("Session(%s) error = nil; want %v", sess.ID, streams.ErrSessionExpired)
	})
	if time.Now().Before(sess.ExpiresAt) {
		t.Errorf("Session(%s) expired before its ExpiresAt", sess.ID)
	}
	if err := bus.RevokeSession(t.Context(), sess.ID); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(expired) error = %v; want %v (nothing to revoke)", err, streams.ErrSessionNotFound)
	}
	if _, err := bus.Session(t.Context(), sess.ID); !errors.Is(err, streams.ErrSessionExpired) {
		t.Errorf("Session(%s) after RevokeSession(expired) error = %v; want %v", sess.ID, err, streams.ErrSessionExpired)
	}
}

func (s *suite) testSessionRevoke(t *testing.T) {
	bus := s.bus(t)
	type handler struct {
		ids    chan string
		cancel func()
	}
	var hs []handler
	for range 2 {
		ids := make(chan string, 10)
		cancel := bus.OnRevoke(func(id string) {
			select {
			case ids <- id:
			default:
			}
		})
		t.Cleanup(cancel)
		hs = append(hs, handler{ids, cancel})
	}
	create := func() string {
		t.Helper()
		sess := streams.Session{ID: newID("sess-"), UserID: "user-3", ExpiresAt: time.Now().Add(time.Hour)}
		if err := bus.CreateSession(t.Context(), sess); err != nil {
			t.Fatalf("CreateSession error = %v; want nil", err)
		}
		return sess.ID
	}
	expect := func(h handler, want string) {
		t.Helper()
		select {
		case got := <-h.ids:
			if got != want {
				t.Errorf("OnRevoke handler got %q; want %q", got, want)
			}
		case <-time.After(waitTimeout):
			t.Errorf("OnRevoke handler not called within %v; want %q", waitTimeout, want)
		}
	}

	id := create()
	if err := bus.RevokeSession(t.Context(), id); err != nil {
		t.Fatalf("RevokeSession(%s) error = %v; want nil", id, err)
	}
	expect(hs[0], id)
	expect(hs[1], id)
	if _, err := bus.Session(t.Context(), id); !errors.Is(err, streams.ErrSessionRevoked) {
		t.Errorf("Session(revoked) error = %v; want %v", err, streams.ErrSessionRevoked)
	}
	if err := bus.RevokeSession(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(revoked) error = %v; want %v (nothing to revoke)", err, streams.ErrSessionNotFound)
	}

	hs[1].cancel()
	hs[1].cancel() // idempotent
	id2 := create()
	if err := bus.RevokeSession(t.Context(), id2); err != nil {
		t.Fatalf("RevokeSession(%s) error = %v; want nil", id2, err)
	}
	expect(hs[0], id2)
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-hs[0].ids:
		t.Errorf("OnRevoke handler got %q; want nothing more (revoking a revoked session notifies nobody)", got)
	case got := <-hs[1].ids:
		t.Errorf("cancelled OnRevoke handler got %q; want nothing", got)
	default:
	}
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

func second[T any](_ T, err error) error        { return err }
func third[T, U any](_ T, _ U, err error) error { return err }
