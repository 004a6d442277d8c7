package streamstest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

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
