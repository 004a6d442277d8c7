package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/footfall/footfall/internal/webhook"
	"github.com/footfall/footfall/internal/webhook/webhooktest"
	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/streamstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "0123456789abcdef0123456789abcdef-test"

// start runs an engine until the test ends.
func start(t testing.TB, o webhook.Options) *webhook.Engine {
	t.Helper()
	if o.Secret == nil {
		o.Secret = []byte(secret)
	}
	if o.Poll == 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.SummaryDelay == 0 {
		o.SummaryDelay = -1
	}
	e, err := webhook.New(o)
	if err != nil {
		t.Fatalf("webhook.New error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func newBus(t testing.TB, o memory.Options) *memory.Bus {
	o.Webhooks = &memory.Outbox{}
	b := memory.New(o)
	t.Cleanup(func() { b.Close() })
	return b
}

func touch(t testing.TB, b streams.Bus, c, v string) {
	t.Helper()
	if _, err := b.Touch(context.Background(), streams.Source{Community: c, Visitor: streams.Visitor{ID: v, Authenticated: true}, ID: "s-" + v}); err != nil {
		t.Fatal(err)
	}
}

func leave(t testing.TB, b streams.Bus, c, v string) {
	t.Helper()
	if _, err := b.Leave(context.Background(), c, streams.Visitor{ID: v, Authenticated: true}, "s-"+v); err != nil {
		t.Fatal(err)
	}
}

const (
	commA = "aaaaaaaa-0000-0000-0000-000000000001"
	commB = "bbbbbbbb-0000-0000-0000-000000000002"
)

func TestDeliversSignedEvents(t *testing.T) {
	bus := newBus(t, memory.Options{})
	rcv := webhooktest.Start(t, secret, nil)
	reg := prometheus.NewRegistry()
	start(t, webhook.Options{URL: rcv.URL, Outbox: bus, Registerer: reg})

	touch(t, bus, commA, "u1")
	touch(t, bus, commA, "u2") // no event: 1 -> 2
	leave(t, bus, commA, "u1")
	leave(t, bus, commA, "u2")
	got := rcv.WaitDelivered(t, 2, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := len(rcv.All()); n != 2 {
		t.Fatalf("receiver got %d requests; want 2: %+v", n, rcv.All())
	}
	byType := map[string]webhooktest.Delivery{}
	for _, d := range got {
		byType[d.Type] = d
	}
	occ, vac := byType[streams.WebhookOccupied], byType[streams.WebhookVacated]
	if occ.ID == "" || vac.ID == "" || occ.ID == vac.ID {
		t.Fatalf("deliveries %+v; want one occupied and one vacated with distinct ids", got)
	}
	for _, d := range got {
		if d.CommunityID != commA {
			t.Errorf("community_id = %q; want %q", d.CommunityID, commA)
		}
		if ts, err := time.Parse(time.RFC3339, d.Timestamp); err != nil || ts.Location() != time.UTC || time.Since(ts) > time.Minute {
			t.Errorf("timestamp = %q; want RFC 3339 UTC, now", d.Timestamp)
		}
	}
	if string(occ.Data) != `{"count":1}` || string(vac.Data) != `{"count":0}` {
		t.Errorf("data = %s, %s; want {\"count\":1}, {\"count\":0}", occ.Data, vac.Data)
	}
	eventually(t, "queue metrics at 0 and 2 delivered", func() bool {
		return deliveries(t, reg, "delivered") == 2
	})
	if s, _ := bus.OutboxStats(context.Background()); s.Pending != 0 {
		t.Errorf("outbox holds %d events after delivery; want 0", s.Pending)
	}
}

func deliveries(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "footfall_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no footfall_webhook_deliveries_total{outcome=%q}", outcome)
	return 0
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRetriesThroughErrorsAndTimeouts(t *testing.T) {
	bus := newBus(t, memory.Options{})
	rcv := webhooktest.Start(t, secret, func(d webhooktest.Delivery) (int, time.Duration) {
		switch d.Try {
		case 1:
			return http.StatusInternalServerError, 0
		case 2:
			return http.StatusOK, time.Second // past the timeout: not an answer
		case 3:
			return http.StatusTooManyRequests, 0
		}
		return http.StatusNoContent, 0
	})
	reg := prometheus.NewRegistry()
	start(t, webhook.Options{
		URL: rcv.URL, Outbox: bus, Registerer: reg,
		Timeout: 200 * time.Millisecond, FirstRetry: 20 * time.Millisecond,
	})
	touch(t, bus, commA, "u1")
	got := rcv.WaitDelivered(t, 1, 5*time.Second)
	if got[0].Type != streams.WebhookOccupied {
		t.Fatalf("delivered %+v; want community_occupied", got[0])
	}
	time.Sleep(100 * time.Millisecond)
	all := rcv.All()
	for _, d := range all {
		if d.ID != got[0].ID {
			t.Errorf("retry carried id %q; want the same id %q", d.ID, got[0].ID)
		}
	}
	if len(rcv.Delivered()) != 1 {
		t.Errorf("delivered %d times after a 2xx; want once", len(rcv.Delivered()))
	}
	for outcome, want := range map[string]float64{"rejected": 2, "timeout": 1, "delivered": 1, "gave_up": 0} {
		if n := deliveries(t, reg, outcome); n != want {
			t.Errorf("deliveries{outcome=%q} = %v; want %v", outcome, n, want)
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	e, err := webhook.New(webhook.Options{URL: "http://127.0.0.1:1/", Secret: []byte(secret), Outbox: newBus(t, memory.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	var total time.Duration
	for i, w := range want {
		if got := e.Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %v; want %v", i+1, got, w)
		}
		total += w
	}
	// With the largest jitter (+20%) the first retry is still within 10 s.
	if want[0]*12/10 > 10*time.Second {
		t.Errorf("first retry may wait more than 10s")
	}
	// The default gives up once the nominal waits add up to an hour: at
	// least 48 minutes of retries with the smallest jitter (-20%).
	var sum time.Duration
	n := 0
	for sum < webhook.DefaultGiveUp {
		n++
		sum += e.Backoff(n)
	}
	if n != 17 { // 5+10+20+40+80+160 s, then 11 times 5 min
		t.Errorf("the default schedule has %d retries; want 17", n)
	}
	if sum*8/10 < 10*time.Minute {
		t.Errorf("retries last %v at least; want at least 10 minutes", sum*8/10)
	}
}

func TestGivesUp(t *testing.T) {
	bus := newBus(t, memory.Options{})
	rcv := webhooktest.Start(t, secret, func(webhooktest.Delivery) (int, time.Duration) { return http.StatusBadGateway, 0 })
	reg := prometheus.NewRegistry()
	start(t, webhook.Options{
		URL: rcv.URL, Outbox: bus, Registerer: reg,
		FirstRetry: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, GiveUp: 50 * time.Millisecond,
	})
	touch(t, bus, commA, "u1")
	eventually(t, "give-up", func() bool { return deliveries(t, reg, "gave_up") == 1 })
	// Waits 10, 20, 20: the nominal schedule reaches 50 ms at the 3rd
	// failure, after which the event is dropped.
	if n := len(rcv.All()); n != 3 {
		t.Errorf("receiver got %d attempts; want 3", n)
	}
	if s, _ := bus.OutboxStats(context.Background()); s.Pending != 0 {
		t.Errorf("outbox holds %d events after giving up; want 0", s.Pending)
	}
}

// A receiver that hangs on one community's events delays none of the
// others' and nothing of the bus.
func TestSlowReceiverDelaysNoOtherEvent(t *testing.T) {
	bus := newBus(t, memory.Options{})
	rcv := webhooktest.Start(t, secret, func(d webhooktest.Delivery) (int, time.Duration) {
		if d.CommunityID == commA && d.Try == 1 {
			return http.StatusOK, 10 * time.Second
		}
		return http.StatusOK, 0
	})
	start(t, webhook.Options{URL: rcv.URL, Outbox: bus, Timeout: 2 * time.Second, FirstRetry: 10 * time.Millisecond})
	touch(t, bus, commA, "u1")
	time.Sleep(50 * time.Millisecond) // commA's delivery is hanging
	begin := time.Now()
	touch(t, bus, commB, "u1")
	leave(t, bus, commB, "u1")
	if d := time.Since(begin); d > 100*time.Millisecond {
		t.Errorf("bus operations took %v while the receiver hangs", d)
	}
	got := rcv.WaitDelivered(t, 2, time.Second)
	for _, d := range got {
		if d.CommunityID != commB {
			t.Errorf("delivered %+v first; want commB's events while commA's hangs", d)
		}
	}
	if el := time.Since(begin); el > time.Second {
		t.Errorf("commB's events took %v; want well under the timeout", el)
	}
	// commA's event is retried after the timeout and delivered.
	got = rcv.WaitDelivered(t, 3, 5*time.Second)
	if got[2].CommunityID != commA {
		t.Errorf("third delivery %+v; want commA's", got[2])
	}
}

// After midnight in the engine's time zone each community that had
// visitors the day before gets one daily_summary, whatever the walks.
func TestDailySummary(t *testing.T) {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	clock := streamstest.NewFakeClock(time.Date(2026, 3, 10, 22, 0, 0, 0, loc))
	bus := newBus(t, memory.Options{Clock: clock, Location: loc})
	rcv := webhooktest.Start(t, secret, nil)
	rcv.SetClock(clock)
	touch(t, bus, commA, "u1")
	touch(t, bus, commA, "u2")
	clock.Advance(time.Minute)
	if _, err := bus.Touch(context.Background(), streams.Source{Community: commA, Visitor: streams.Visitor{ID: "a1"}, ID: "s"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	leave(t, bus, commA, "u1")
	leave(t, bus, commA, "u2")
	if _, err := bus.Leave(context.Background(), commA, streams.Visitor{ID: "a1"}, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.VisitorHistory(context.Background(), commA, streams.StepDay, clock.Now(), clock.Now()); err != nil {
		t.Skip("visitor history not available yet:", err)
	}
	start(t, webhook.Options{URL: rcv.URL, Outbox: bus, Clock: clock, Location: loc})
	// Occupied and vacated: delivered at once.
	rcv.WaitDelivered(t, 2, 5*time.Second)

	clock.Set(time.Date(2026, 3, 11, 0, 0, 1, 0, loc)) // after local midnight
	got := rcv.WaitDelivered(t, 3, 5*time.Second)
	s := got[2]
	if s.Type != streams.WebhookDailySummary || s.CommunityID != commA {
		t.Fatalf("third delivery %+v; want commA's daily_summary", s)
	}
	if want := time.Date(2026, 3, 11, 0, 0, 0, 0, loc).UTC().Format(time.RFC3339); s.Timestamp != want {
		t.Errorf("timestamp = %s; want the midnight that ended the day, %s", s.Timestamp, want)
	}
	var data map[string]any
	if err := json.Unmarshal(s.Data, &data); err != nil {
		t.Fatal(err)
	}
	peakAt := time.Date(2026, 3, 10, 22, 1, 0, 0, loc).UTC().Format(time.RFC3339)
	want := map[string]any{"authenticated_visitors": 2.0, "anonymous_visitors": 1.0, "total_unique_visitors": 3.0, "peak": 3.0, "peak_at": peakAt}
	for k, v := range want {
		if data[k] != v {
			t.Errorf("data[%s] = %v; want %v (data %s)", k, data[k], v, s.Data)
		}
	}
	// Later ticks and days without visitors send nothing more.
	clock.Advance(2 * time.Hour)
	time.Sleep(200 * time.Millisecond)
	clock.Set(time.Date(2026, 3, 12, 0, 5, 0, 0, loc))
	time.Sleep(200 * time.Millisecond)
	if n := len(rcv.All()); n != 3 {
		t.Errorf("receiver got %d requests; want 3: %+v", n, rcv.All())
	}
}
