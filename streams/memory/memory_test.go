package memory_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/streamstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	streamstest.Run(t, func(t testing.TB, o streamstest.Options) streams.Bus {
		b := memory.New(memory.Options{Location: o.Location, ReapInterval: o.ReapInterval})
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// ---------------------------------------------------------------------------
// Helpers

// paris is the zone of the day roll-over tests: its midnight is not UTC's.
func paris(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	return loc
}

const community = "123e4567-e89b-12d3-a456-426614174000"

// newFakeBus returns a bus on a fake clock starting at start. Its reaper
// ticks every reap of real time (an hour makes it never run, so that only
// the lazy settling before each operation moves things on).
func newFakeBus(t testing.TB, loc *time.Location, start time.Time, reap time.Duration) (*memory.Bus, *streamstest.FakeClock) {
	t.Helper()
	clock := streamstest.NewFakeClock(start)
	b := memory.New(memory.Options{Clock: clock, Location: loc, ReapInterval: reap})
	t.Cleanup(func() { b.Close() })
	return b, clock
}

// events records the events of a subscription.
type events struct {
	mu  sync.Mutex
	evs []streams.Event
}

func record(t testing.TB, b streams.Bus, c string) *events {
	t.Helper()
	r := &events{}
	cancel, err := b.Subscribe(t.Context(), c, func(e *streams.Event) {
		r.mu.Lock()
		r.evs = append(r.evs, *e)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Subscribe(%s) error = %v; want nil", c, err)
	}
	t.Cleanup(cancel)
	return r
}

// upTo waits until the event with sequence number seq has arrived and
// returns all events so far.
func (r *events) upTo(t testing.TB, seq uint64) []streams.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		evs := append([]streams.Event(nil), r.evs...)
		r.mu.Unlock()
		if seq == 0 || (len(evs) > 0 && evs[len(evs)-1].Seq >= seq) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("event #%d not delivered within 5s; got %d events", seq, len(evs))
		}
		time.Sleep(time.Millisecond)
	}
}

// waitFor polls the recorded events until one satisfies match.
func (r *events) waitFor(t testing.TB, what string, match func(streams.Event) bool) streams.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for _, e := range r.evs {
			if match(e) {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func summary(evs []streams.Event) string {
	parts := make([]string, 0, len(evs))
	for _, e := range evs {
		if e.IsPresence() {
			parts = append(parts, fmt.Sprintf("%s(%d %d/%d)", e.Type, e.Count, e.Today.Authenticated, e.Today.Anonymous))
		}
	}
	return strings.Join(parts, " ")
}

func user(id string) streams.Visitor { return streams.Visitor{ID: id, Authenticated: true} }
func anon(id string) streams.Visitor { return streams.Visitor{ID: id} }

func today(auth, anon int) streams.Today {
	return streams.Today{Authenticated: auth, Anonymous: anon}
}

// step is one operation of a presence scenario, at a time relative to its
// start.
type step struct {
	at      time.Duration
	op      string // "touch", "leave" or "snapshot"
	v       streams.Visitor
	source  string
	ttl     time.Duration
	count   int
	changed bool // ignored for snapshot
	today   streams.Today
}

func touchAt(at time.Duration, v streams.Visitor, source string, ttl time.Duration, count int, changed bool, td streams.Today) step {
	return step{at: at, op: "touch", v: v, source: source, ttl: ttl, count: count, changed: changed, today: td}
}

func leaveAt(at time.Duration, v streams.Visitor, source string, count int, changed bool, td streams.Today) step {
	return step{at: at, op: "leave", v: v, source: source, count: count, changed: changed, today: td}
}

func snapAt(at time.Duration, count int, td streams.Today) step {
	return step{at: at, op: "snapshot", count: count, today: td}
}

type scenario struct {
	name  string
	steps []step
	// events lists the presence events the scenario publishes, as
	// "type(count auth/anon)".
	events string
}

// runScenario plays sc on a fresh bus whose clock starts at start and
// whose reaper never runs.
func runScenario(t *testing.T, loc *time.Location, start time.Time, sc scenario) {
	t.Helper()
	b, clock := newFakeBus(t, loc, start, time.Hour)
	rec := record(t, b, community)
	ctx := t.Context()
	for i, s := range sc.steps {
		clock.Set(start.Add(s.at))
		var (
			call    string
			count   int
			changed bool
			td      streams.Today
		)
		switch s.op {
		case "touch":
			call = fmt.Sprintf("step %d at %v: Touch(%s/%s ttl %v)", i, s.at, s.v.Key(), s.source, s.ttl)
			r, err := b.Touch(ctx, streams.Source{Community: community, Visitor: s.v, ID: s.source, TTL: s.ttl})
			if err != nil {
				t.Fatalf("%s error = %v; want nil", call, err)
			}
			count, changed, td = r.Count, r.Changed, r.Today
		case "leave":
			call = fmt.Sprintf("step %d at %v: Leave(%s/%s)", i, s.at, s.v.Key(), s.source)
			r, err := b.Leave(ctx, community, s.v, s.source)
			if err != nil {
				t.Fatalf("%s error = %v; want nil", call, err)
			}
			count, changed, td = r.Count, r.Changed, r.Today
		case "snapshot":
			call = fmt.Sprintf("step %d at %v: Snapshot", i, s.at)
			r, err := b.Snapshot(ctx, community)
			if err != nil {
				t.Fatalf("%s error = %v; want nil", call, err)
			}
			count, td = r.Count, r.Today
			changed = s.changed
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		if count != s.count || changed != s.changed || td != s.today {
			t.Errorf("%s = {Count:%d Changed:%v Today:%+v}; want {Count:%d Changed:%v Today:%+v}",
				call, count, changed, td, s.count, s.changed, s.today)
		}
	}
	snap, err := b.Snapshot(ctx, community)
	if err != nil {
		t.Fatalf("Snapshot error = %v; want nil", err)
	}
	if got := summary(rec.upTo(t, snap.Seq)); got != sc.events {
		t.Errorf("presence events = %q; want %q", got, sc.events)
	}
}

// ---------------------------------------------------------------------------
// Presence on a fake clock

func TestPresence(t *testing.T) {
	alice, bob := user("alice"), user("bob")
	const s = time.Second
	scenarios := []scenario{
		{
			name: "tabs count once",
			steps: []step{
				touchAt(0, alice, "tab1", 0, 1, true, today(1, 0)),
				touchAt(1*s, alice, "tab2", 0, 1, false, today(1, 0)),
				touchAt(2*s, alice, "tab1", 0, 1, false, today(1, 0)),
				leaveAt(3*s, alice, "tab1", 1, false, today(1, 0)),
				snapAt(4*s, 1, today(1, 0)),
				leaveAt(5*s, alice, "tab2", 0, true, today(1, 0)),
				leaveAt(6*s, alice, "tab2", 0, false, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "held device outlives a polling device",
			steps: []step{
				touchAt(0, alice, "ws-phone", 0, 1, true, today(1, 0)),
				touchAt(1*s, alice, "poll-laptop", 30*s, 1, false, today(1, 0)),
				snapAt(40*s, 1, today(1, 0)),
				leaveAt(50*s, alice, "ws-phone", 0, true, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "two polling devices",
			steps: []step{
				touchAt(0, alice, "poll-phone", 30*s, 1, true, today(1, 0)),
				touchAt(20*s, alice, "poll-laptop", 30*s, 1, false, today(1, 0)),
				snapAt(35*s, 1, today(1, 0)),
				snapAt(49*s, 1, today(1, 0)),
				snapAt(50*s, 0, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "ttl expires at its deadline",
			steps: []step{
				touchAt(0, alice, "poll", 30*s, 1, true, today(1, 0)),
				snapAt(30*s-time.Nanosecond, 1, today(1, 0)),
				snapAt(30*s, 0, today(1, 0)),
				leaveAt(31*s, alice, "poll", 0, false, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "touch renews a ttl source",
			steps: []step{
				touchAt(0, alice, "poll", 30*s, 1, true, today(1, 0)),
				touchAt(20*s, alice, "poll", 30*s, 1, false, today(1, 0)),
				snapAt(40*s, 1, today(1, 0)),
				snapAt(50*s, 0, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "touch without ttl holds a ttl source",
			steps: []step{
				touchAt(0, alice, "api", 30*s, 1, true, today(1, 0)),
				touchAt(10*s, alice, "api", 0, 1, false, today(1, 0)),
				snapAt(time.Hour, 1, today(1, 0)),
			},
			events: "visitor_joined(1 1/0)",
		},
		{
			name: "expired visitors leave in deadline order",
			steps: []step{
				touchAt(0, bob, "poll", 20*s, 1, true, today(1, 0)),
				touchAt(1*s, alice, "poll", 10*s, 2, true, today(2, 0)),
				touchAt(2*s, anon("carol"), "poll", 30*s, 3, true, today(2, 1)),
				snapAt(time.Minute, 0, today(2, 1)),
			},
			events: "visitor_joined(1 1/0) visitor_joined(2 2/0) visitor_joined(3 2/1) " +
				"visitor_left(2 2/1) visitor_left(1 2/1) visitor_left(0 2/1)",
		},
		{
			name: "anonymous and authenticated with the same id",
			steps: []step{
				touchAt(0, user("x"), "tab", 0, 1, true, today(1, 0)),
				touchAt(1*s, anon("x"), "tab", 0, 2, true, today(1, 1)),
				leaveAt(2*s, user("x"), "tab", 1, true, today(1, 1)),
				leaveAt(3*s, user("x"), "tab", 1, false, today(1, 1)),
				leaveAt(4*s, anon("x"), "tab", 0, true, today(1, 1)),
			},
			events: "visitor_joined(1 1/0) visitor_joined(2 1/1) visitor_left(1 1/1) visitor_left(0 1/1)",
		},
		{
			name: "rejoin the same day counts once",
			steps: []step{
				touchAt(0, anon("a1"), "api", 0, 1, true, today(0, 1)),
				leaveAt(1*s, anon("a1"), "api", 0, true, today(0, 1)),
				touchAt(2*s, anon("a1"), "api", 0, 1, true, today(0, 1)),
			},
			events: "visitor_joined(1 0/1) visitor_left(0 0/1) visitor_joined(1 0/1)",
		},
		{
			name: "leave of an unknown visitor",
			steps: []step{
				leaveAt(0, alice, "tab", 0, false, today(0, 0)),
				snapAt(1*s, 0, today(0, 0)),
			},
			events: "",
		},
	}
	start := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, time.UTC, start, sc)
		})
	}
}

func TestDayRollover(t *testing.T) {
	loc := paris(t)
	// 23:00 in Paris on a winter day (UTC+1): local midnight is one hour
	// later, at 23:00 UTC, while the UTC day goes on for another hour.
	start := time.Date(2026, 1, 15, 23, 0, 0, 0, loc)
	alice, bob := user("alice"), anon("bob")
	const (
		s        = time.Second
		m        = time.Minute
		midnight = time.Hour
	)
	scenarios := []scenario{
		{
			name: "present across midnight counts for both days",
			steps: []step{
				touchAt(0, alice, "ws", 0, 1, true, today(1, 0)),
				touchAt(50*m, bob, "ws", 0, 2, true, today(1, 1)),
				leaveAt(55*m, bob, "ws", 1, true, today(1, 1)),
				snapAt(midnight-s, 1, today(1, 1)),
				snapAt(midnight+10*m, 1, today(1, 0)),
				touchAt(midnight+15*m, bob, "ws", 0, 2, true, today(1, 1)),
			},
			events: "visitor_joined(1 1/0) visitor_joined(2 1/1) visitor_left(1 1/1) visitor_joined(2 1/1)",
		},
		{
			name: "local midnight, not UTC midnight",
			steps: []step{
				touchAt(0, alice, "ws", 0, 1, true, today(1, 0)),
				leaveAt(30*m, alice, "ws", 0, true, today(1, 0)),
				// 00:05 in Paris, 23:05 UTC the same UTC day.
				snapAt(midnight+5*m, 0, today(0, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "ttl expired before midnight and reaped after it",
			steps: []step{
				touchAt(59*m, alice, "poll", 30*s, 1, true, today(1, 0)),
				snapAt(midnight+10*s, 0, today(0, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 0/0)",
		},
		{
			name: "ttl ending exactly at midnight",
			steps: []step{
				touchAt(59*m+30*s, alice, "poll", 30*s, 1, true, today(1, 0)),
				snapAt(midnight+10*s, 0, today(0, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 0/0)",
		},
		{
			name: "ttl alive at midnight and reaped after it",
			steps: []step{
				touchAt(59*m+50*s, alice, "poll", 30*s, 1, true, today(1, 0)),
				snapAt(midnight+5*m, 0, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0)",
		},
		{
			name: "rejoin after midnight counts once",
			steps: []step{
				touchAt(0, alice, "ws", 0, 1, true, today(1, 0)),
				leaveAt(midnight+5*m, alice, "ws", 0, true, today(1, 0)),
				touchAt(midnight+10*m, alice, "ws", 0, 1, true, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_left(0 1/0) visitor_joined(1 1/0)",
		},
		{
			name: "several idle days",
			steps: []step{
				touchAt(0, alice, "ws", 0, 1, true, today(1, 0)),
				touchAt(1*m, bob, "poll", 30*s, 2, true, today(1, 1)),
				snapAt(49*time.Hour, 1, today(1, 0)),
			},
			events: "visitor_joined(1 1/0) visitor_joined(2 1/1) visitor_left(1 1/0)",
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, loc, start, sc)
		})
	}
}

func TestDayRolloverChangedTime(t *testing.T) {
	loc := paris(t)
	start := time.Date(2026, 1, 15, 23, 0, 0, 0, loc)
	midnight := time.Date(2026, 1, 16, 0, 0, 0, 0, loc)
	b, clock := newFakeBus(t, loc, start, time.Hour)
	ctx := t.Context()
	mustTouch(t, b, streams.Source{Community: community, Visitor: user("alice"), ID: "ws"})
	clock.Set(start.Add(10 * time.Minute))
	mustTouch(t, b, streams.Source{Community: community, Visitor: anon("bob"), ID: "poll", TTL: time.Minute})
	joined := start.Add(10 * time.Minute).UTC()

	if snap, _ := b.Snapshot(ctx, community); !snap.Changed.Equal(joined) {
		t.Errorf("Snapshot().Changed = %v; want %v (bob joined)", snap.Changed, joined)
	}
	// bob's poll expired at 23:11; with the reaper stopped, it ends when
	// the next operation settles the community: Changed is that time.
	settled := midnight.Add(-time.Second)
	clock.Set(settled)
	if snap, _ := b.Snapshot(ctx, community); !snap.Changed.Equal(settled) {
		t.Errorf("Snapshot().Changed before midnight = %v; want %v (bob's reaped leave)", snap.Changed, settled.UTC())
	}
	clock.Set(midnight.Add(time.Hour))
	snap, _ := b.Snapshot(ctx, community)
	if !snap.Changed.Equal(midnight) || snap.Today != today(1, 0) {
		t.Errorf("Snapshot() after midnight = {Changed:%v Today:%+v}; want {Changed:%v Today:{1 0}}", snap.Changed, snap.Today, midnight.UTC())
	}
	// The next midnight changes nothing (alice alone, before and after):
	// Changed stays, so REST ETags stay stable.
	clock.Set(midnight.Add(25 * time.Hour))
	if snap2, _ := b.Snapshot(ctx, community); !snap2.Changed.Equal(midnight) || snap2.Today != today(1, 0) {
		t.Errorf("Snapshot() a day later = {Changed:%v Today:%+v}; want {Changed:%v Today:{1 0}}", snap2.Changed, snap2.Today, midnight.UTC())
	}
}

func mustTouch(t testing.TB, b streams.Bus, s streams.Source) streams.PresenceResult {
	t.Helper()
	r, err := b.Touch(t.Context(), s)
	if err != nil {
		t.Fatalf("Touch(%s/%s) error = %v; want nil", s.Visitor.Key(), s.ID, err)
	}
	return r
}

func TestReaperPublishesLeave(t *testing.T) {
	start := time.Date(2026, 3, 10, 10, 0, 0, 500_000_000, time.UTC)
	b, clock := newFakeBus(t, time.UTC, start, 5*time.Millisecond)
	rec := record(t, b, community)
	mustTouch(t, b, streams.Source{Community: community, Visitor: user("alice"), ID: "poll", TTL: 10 * time.Second})
	mustTouch(t, b, streams.Source{Community: community, Visitor: user("bob"), ID: "ws"})
	now := clock.Advance(11 * time.Second)
	// No operation on the bus: the reaper alone must end alice's source.
	left := rec.waitFor(t, "visitor_left", func(e streams.Event) bool { return e.Type == streams.TypeVisitorLeft })
	if want := now.Truncate(time.Second); !left.Time.Equal(want) || left.Count != 1 || left.Today != today(2, 0) {
		t.Errorf("reaped visitor_left = {Time:%v Count:%d Today:%+v}; want {Time:%v Count:1 Today:{2 0}}",
			left.Time, left.Count, left.Today, want)
	}
}

// ---------------------------------------------------------------------------
// History on a fake clock

func TestHistoryRetention(t *testing.T) {
	tests := []struct {
		name      string
		opts      memory.Options
		published int
		age       time.Duration // how long after the burst History is read
		// oldestAfter is the oldest seq History accepts as afterID.
		oldestAfter uint64
	}{
		{"young events are all kept", memory.Options{}, 150, time.Minute, 1},
		{"old events: the last 100 are kept", memory.Options{}, 150, 6 * time.Minute, 50},
		{"hard cap", memory.Options{}, memory.MaxHistory + 50, time.Minute, 50},
		{"custom size and age", memory.Options{HistorySize: 5, HistoryAge: time.Minute}, 10, 2 * time.Minute, 5},
		{"custom age keeps young events", memory.Options{HistorySize: 5, HistoryAge: time.Minute}, 10, 30 * time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := streamstest.NewFakeClock(time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC))
			tt.opts.Clock = clock
			tt.opts.ReapInterval = time.Hour
			b := memory.New(tt.opts)
			t.Cleanup(func() { b.Close() })
			ctx := t.Context()
			var ids []string
			for i := range tt.published {
				e, err := b.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate, Metric: "m", Value: json.RawMessage(fmt.Sprint(i))})
				if err != nil {
					t.Fatalf("Publish error = %v; want nil", err)
				}
				ids = append(ids, e.ID)
			}
			clock.Advance(tt.age)
			last := uint64(tt.published)
			evs, ok, err := b.History(ctx, community, ids[tt.oldestAfter-1], 0)
			if err != nil || !ok || uint64(len(evs)) != last-tt.oldestAfter {
				t.Errorf("History(after #%d) = %d events, %v, %v; want %d events, true, nil", tt.oldestAfter, len(evs), ok, err, last-tt.oldestAfter)
			} else if evs[0].Seq != tt.oldestAfter+1 || evs[len(evs)-1].Seq != last {
				t.Errorf("History(after #%d) spans #%d..#%d; want #%d..#%d", tt.oldestAfter, evs[0].Seq, evs[len(evs)-1].Seq, tt.oldestAfter+1, last)
			}
			if tt.oldestAfter > 1 {
				if _, ok, err := b.History(ctx, community, ids[tt.oldestAfter-2], 0); err != nil || ok {
					t.Errorf("History(after #%d) ok = %v, %v; want false, nil (no longer in history)", tt.oldestAfter-1, ok, err)
				}
			}
		})
	}
}

func TestIDsDifferAcrossBuses(t *testing.T) {
	ctx := t.Context()
	b1 := memory.New(memory.Options{})
	defer b1.Close()
	b2 := memory.New(memory.Options{})
	defer b2.Close()
	e1, err := b1.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := b2.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate})
	if err != nil {
		t.Fatal(err)
	}
	if e1.Seq != 1 || e2.Seq != 1 || e1.ID == e2.ID {
		t.Errorf("first events of two buses = (%s #%d), (%s #%d); want #1 each with different ids", e1.ID, e1.Seq, e2.ID, e2.Seq)
	}
	if !strings.HasSuffix(e1.ID, "-1") {
		t.Errorf("Publish().ID = %q; want \"<epoch>-1\"", e1.ID)
	}
	if _, ok, _ := b2.History(ctx, community, e1.ID, 0); ok {
		t.Errorf("History(id of another bus) ok = true; want false")
	}
}

func TestPublishCopiesPayload(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := t.Context()
	first, _ := b.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate})
	value := json.RawMessage(`12`)
	if _, err := b.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate, Metric: "m", Value: value}); err != nil {
		t.Fatal(err)
	}
	value[0] = '9'
	evs, _, _ := b.History(ctx, community, first.ID, 0)
	if len(evs) != 1 || string(evs[0].Value) != "12" {
		t.Errorf("History().Value after the caller changed its buffer = %s; want 12", evs[0].Value)
	}
}

// ---------------------------------------------------------------------------
// Delivery

// A handler may call back into the bus, even into its own community.
func TestHandlerMayCallTheBus(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	echoed := make(chan streams.Event, 1)
	var once sync.Once
	cancel, err := b.Subscribe(ctx, community, func(e *streams.Event) {
		if e.Metric == "echo" {
			echoed <- *e
			return
		}
		once.Do(func() {
			if _, err := b.Snapshot(ctx, community); err != nil {
				t.Errorf("Snapshot from handler error = %v; want nil", err)
			}
			if _, err := b.Touch(ctx, streams.Source{Community: community, Visitor: user("h"), ID: "x"}); err != nil {
				t.Errorf("Touch from handler error = %v; want nil", err)
			}
			if _, err := b.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate, Metric: "echo"}); err != nil {
				t.Errorf("Publish from handler error = %v; want nil", err)
			}
			c2, err := b.Subscribe(ctx, community, func(*streams.Event) {})
			if err != nil {
				t.Errorf("Subscribe from handler error = %v; want nil", err)
			} else {
				c2()
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := b.Publish(ctx, streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-echoed:
		if e.Seq != 3 { // #1 the trigger, #2 visitor_joined, #3 the echo
			t.Errorf("echo Seq = %d; want 3", e.Seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event published from a handler not delivered within 5s (deadlock?)")
	}
}

func TestNoDeliveryAfterClose(t *testing.T) {
	b := memory.New(memory.Options{})
	var calls atomic.Int64
	if _, err := b.Subscribe(t.Context(), community, func(*streams.Event) { calls.Add(1) }); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if _, err := b.Publish(t.Context(), streams.Event{Community: community, Type: streams.TypeAnalyticsUpdate}); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	n := calls.Load()
	time.Sleep(20 * time.Millisecond)
	if got := calls.Load(); got != n {
		t.Errorf("handler calls after Close returned = %d; want 0", got-n)
	}
	if got := b.Pending(); got < 0 {
		t.Errorf("Pending() = %d; want >= 0", got)
	}
}

// ---------------------------------------------------------------------------
// Validation

func TestInvalidInput(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := t.Context()
	v := user("alice")
	tests := []struct {
		name string
		err  error
	}{
		{"Publish(empty community)", second(b.Publish(ctx, streams.Event{Type: streams.TypeAnalyticsUpdate}))},
		{"Subscribe(empty community)", second(b.Subscribe(ctx, "", func(*streams.Event) {}))},
		{"Subscribe(nil handler)", second(b.Subscribe(ctx, community, nil))},
		{"Touch(empty community)", second(b.Touch(ctx, streams.Source{Visitor: v, ID: "tab"}))},
		{"Touch(empty visitor)", second(b.Touch(ctx, streams.Source{Community: community, ID: "tab"}))},
		{"Touch(negative ttl)", second(b.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "tab", TTL: -time.Second}))},
		{"CreateSession(empty id)", b.CreateSession(ctx, streams.Session{UserID: "u", ExpiresAt: time.Now().Add(time.Hour)})},
		{"CreateSession(zero expiry)", b.CreateSession(ctx, streams.Session{ID: "s", UserID: "u"})},
	}
	for _, tt := range tests {
		if tt.err == nil {
			t.Errorf("%s error = nil; want an error", tt.name)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Snapshot(cancelled, community); !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot(cancelled ctx) error = %v; want %v", err, context.Canceled)
	}
}

func second[T any](_ T, err error) error { return err }

// ---------------------------------------------------------------------------
// Sessions on a fake clock

func TestSessions(t *testing.T) {
	start := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	b, clock := newFakeBus(t, time.UTC, start, 2*time.Millisecond)
	ctx := t.Context()
	create := func(id string, expires time.Time) {
		t.Helper()
		if err := b.CreateSession(ctx, streams.Session{ID: id, UserID: "u", ExpiresAt: expires}); err != nil {
			t.Fatalf("CreateSession(%s) error = %v; want nil", id, err)
		}
	}
	check := func(id string, want error) {
		t.Helper()
		if _, err := b.Session(ctx, id); !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Errorf("Session(%s) at %v error = %v; want %v", id, clock.Now().Sub(start), err, want)
		}
	}
	// eventually waits for the reaper (real time) to prune.
	eventually := func(id string, want error) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := b.Session(ctx, id)
			if errors.Is(err, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Session(%s) error = %v; want %v within 5s", id, err, want)
			}
			time.Sleep(time.Millisecond)
		}
	}

	create("expiring", start.Add(time.Hour))
	create("revoked", start.Add(time.Hour))
	create("long", start.Add(72*time.Hour))
	if err := b.CreateSession(ctx, streams.Session{ID: "expiring", UserID: "u", ExpiresAt: start.Add(time.Hour)}); err == nil {
		t.Errorf("CreateSession(id in use) error = nil; want an error")
	}

	clock.Set(start.Add(time.Hour - time.Nanosecond))
	check("expiring", nil)
	if err := b.RevokeSession(ctx, "revoked"); err != nil {
		t.Fatalf("RevokeSession(revoked) error = %v; want nil", err)
	}
	clock.Set(start.Add(time.Hour))
	check("expiring", streams.ErrSessionExpired)
	check("revoked", streams.ErrSessionRevoked)
	if err := b.RevokeSession(ctx, "expiring"); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(expired) error = %v; want %v", err, streams.ErrSessionNotFound)
	}

	// Remembered until a day after expiry, then forgotten by the reaper.
	clock.Set(start.Add(25*time.Hour - time.Second))
	time.Sleep(20 * time.Millisecond) // let the reaper run a few times
	check("expiring", streams.ErrSessionExpired)
	check("revoked", streams.ErrSessionRevoked)
	clock.Set(start.Add(25 * time.Hour))
	eventually("expiring", streams.ErrSessionNotFound)
	eventually("revoked", streams.ErrSessionNotFound)
	check("long", nil)

	// A forgotten id may be used again.
	create("expiring", start.Add(48*time.Hour))
	check("expiring", nil)
}

// TestPeakTodayRollsOver: at local midnight the day's peak starts again
// from the visitors present then, reached at midnight.
func TestPeakTodayRollsOver(t *testing.T) {
	loc := paris(t)
	start := time.Date(2026, 1, 15, 22, 0, 0, 0, loc)
	b, clock := newFakeBus(t, loc, start, time.Hour)
	ctx := t.Context()
	for _, v := range []string{"a", "b", "c"} {
		if _, err := b.Touch(ctx, streams.Source{Community: community, Visitor: user(v), ID: "ws"}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(30 * time.Minute)
	for _, v := range []string{"a", "b"} {
		if _, err := b.Leave(ctx, community, user(v), "ws"); err != nil {
			t.Fatal(err)
		}
	}
	snap, _ := b.Snapshot(ctx, community)
	if want := (streams.Peak{Count: 3, At: start.Unix()}); snap.Peak != want {
		t.Fatalf("peak before midnight = %+v; want %+v", snap.Peak, want)
	}
	clock.Set(time.Date(2026, 1, 16, 0, 10, 0, 0, loc))
	snap, _ = b.Snapshot(ctx, community)
	midnight := time.Date(2026, 1, 16, 0, 0, 0, 0, loc)
	if want := (streams.Peak{Count: 1, At: midnight.Unix()}); snap.Peak != want {
		t.Fatalf("peak after midnight = %+v; want %+v (the one visitor present at midnight)", snap.Peak, want)
	}
	if _, err := b.Touch(ctx, streams.Source{Community: community, Visitor: user("d"), ID: "ws"}); err != nil {
		t.Fatal(err)
	}
	snap, _ = b.Snapshot(ctx, community)
	if snap.Peak.Count != 2 || snap.Peak.At != clock.Now().Unix() {
		t.Fatalf("peak after a new visitor = %+v; want 2 now", snap.Peak)
	}
}
