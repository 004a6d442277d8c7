package memory

import (
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/streamstest"
)

func TestHistoryConformance(t *testing.T) {
	streamstest.RunHistory(t, func(t testing.TB, o streamstest.HistoryOptions) streams.Bus {
		b := New(Options{Clock: o.Clock, Location: o.Location, ReapInterval: o.ReapInterval})
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// TestHistoryPrunes: a community busy for days keeps the records of its
// retention and no more, and the points stay right.
func TestHistoryPrunes(t *testing.T) {
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := streamstest.NewFakeClock(start)
	b := New(Options{Clock: clock, ReapInterval: time.Hour})
	t.Cleanup(func() { b.Close() })
	const c = "123e4567-e89b-12d3-a456-426614174000"
	v := streams.Visitor{ID: "v", Authenticated: true}
	ctx := t.Context()
	for range 4 * 24 * 60 / 5 { // 4 days: present 2 minutes of every 5
		if _, err := b.Touch(ctx, streams.Source{Community: c, Visitor: v, ID: "s"}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Minute)
		if _, err := b.Leave(ctx, c, v, "s"); err != nil {
			t.Fatal(err)
		}
		clock.Advance(3 * time.Minute)
	}
	now := clock.Now()
	com := b.lookup(c)
	com.mu.Lock()
	h := com.hist
	com.mu.Unlock()
	if n, max := len(h.minutes), 48*60/5*2+2; n > max {
		t.Errorf("%d minute records; want at most %d", n, max)
	}
	if old := now.Add(-streams.StepMinute.Retention() - 5*time.Minute).UnixMilli(); h.minutes[0].Start < old {
		t.Errorf("oldest minute record %s; want none before %s", time.UnixMilli(h.minutes[0].Start).UTC(), time.UnixMilli(old).UTC())
	}
	if len(h.hours) != 4*24 || len(h.days) != 4 {
		t.Errorf("%d hour and %d day records; want 96 and 4", len(h.hours), len(h.days))
	}
	ps, err := b.VisitorHistory(ctx, c, streams.StepHour, start, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[:len(ps)-1] {
		if p.Peak != 1 || p.Average < 0.3999 || p.Average > 0.4001 {
			t.Fatalf("hour %s: peak %d average %f; want 1 and 0.4", p.Time, p.Peak, p.Average)
		}
	}
}
