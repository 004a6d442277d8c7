package valkey

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/streamstest"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

func TestHistoryConformance(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	streamstest.RunHistory(t, func(t testing.TB, o streamstest.HistoryOptions) streams.Bus {
		return newBus(t, Options{URL: srv.URL(), Location: o.Location, Clock: o.Clock, ReapInterval: o.ReapInterval})
	})
}

// Two nodes on one server, and on a cluster of 3 masters: one community,
// visitors coming and going through both, a visitor on both at once, and
// a node dying with visitors.
func TestHistoryMultiNode(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	testHistoryMultiNode(t, srv.URL())
}

func TestHistoryMultiNodeCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := valkeytest.StartCluster(t, 3)
	testHistoryMultiNode(t, cl.Seeds())
}

// hpt is an expected point (day fields checked for days only).
type hpt struct {
	peak   int
	avg    float64
	peakAt time.Time
	today  streams.Today
}

func historyOf(t testing.TB, b *Bus, c string, step streams.Step, from, to time.Time) []streams.Point {
	t.Helper()
	ps, err := b.VisitorHistory(t.Context(), c, step, from, to)
	if err != nil {
		t.Fatalf("VisitorHistory(%s) error = %v; want nil", step, err)
	}
	return ps
}

func describeHistory(ps []streams.Point) string {
	s := ""
	for _, p := range ps {
		s += fmt.Sprintf("\n\t%s peak %d avg %.4f at %s today %+v", p.Time.UTC().Format(time.RFC3339), p.Peak, p.Average,
			p.PeakAt.UTC().Format(time.RFC3339), p.Today)
	}
	return s
}

func checkHistory(t testing.TB, what string, got []streams.Point, from time.Time, step time.Duration, day bool, want ...hpt) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		g, w := got[i], want[i]
		ok = g.Time.Equal(from.Add(time.Duration(i)*step)) && g.Peak == w.peak && math.Abs(g.Average-w.avg) < 1e-9
		if day {
			ok = ok && g.PeakAt.Equal(w.peakAt) && g.Today == w.today
		}
	}
	if !ok {
		t.Errorf("%s:%s\nwant (from %s): %+v", what, describeHistory(got), from.UTC().Format(time.RFC3339), want)
	}
}

func testHistoryMultiNode(t *testing.T, url string) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := streamstest.NewFakeClock(t0)
	const ttl = time.Second
	opts := func(node string) Options {
		return Options{URL: url, NodeID: node, PresenceTTL: ttl, ReapInterval: 50 * time.Millisecond, Clock: clock}
	}
	a, b := newBus(t, opts("a")), newBus(t, opts("b"))
	c := newCommunity()
	u1, u2, u3, a1 := user("u1"), user("u2"), user("u3"), anon("a1")
	src := func(v streams.Visitor, id string) streams.Source {
		return streams.Source{Community: c, Visitor: v, ID: id}
	}
	mustTouch(t, a, src(u1, "ws-a")) // 1
	mustTouch(t, b, src(u2, "ws-b")) // 2 at 12:00:00
	clock.Set(t0.Add(30 * time.Second))
	mustTouch(t, b, src(u1, "ws-b")) // u1 on both nodes: still 2
	mustTouch(t, a, src(a1, "ws-a")) // 3 at 12:00:30
	clock.Set(t0.Add(70 * time.Second))
	mustLeave(t, a, c, u1, "ws-a") // u1 still on b: 3
	mustLeave(t, b, c, u2, "ws-b") // 2 at 12:01:10
	clock.Set(t0.Add(2 * time.Minute))
	mustLeave(t, b, c, u1, "ws-b") // 1 at 12:02:00 (a1)
	clock.Set(t0.Add(3 * time.Minute))

	wantMinutes := []hpt{
		{peak: 3, avg: 2.5},
		{peak: 3, avg: (3*10 + 2*50) / 60.0},
		{peak: 1, avg: 1},
		{peak: 1, avg: 1},
	}
	dayAvg := float64(2*30+3*40+2*50+1*60) / (12*3600 + 180)
	wantDay := hpt{peak: 3, avg: dayAvg, peakAt: t0.Add(30 * time.Second), today: streams.Today{Authenticated: 2, Anonymous: 1}}
	for name, n := range map[string]*Bus{"a": a, "b": b} {
		checkHistory(t, "minutes from node "+name, historyOf(t, n, c, streams.StepMinute, t0, t0.Add(time.Hour)), t0, time.Minute, false, wantMinutes...)
		checkHistory(t, "hour from node "+name, historyOf(t, n, c, streams.StepHour, t0, t0), t0, time.Hour, false,
			hpt{peak: 3, avg: float64(2*30+3*40+2*50+1*60) / 180})
		checkHistory(t, "day from node "+name, historyOf(t, n, c, streams.StepDay, t0, t0), day, 24*time.Hour, true, wantDay)
	}

	// a dies with u3 (and a1) present: a reaper ends their sources when its
	// lease lapses, and the history records them leaving once.
	mustTouch(t, a, src(u3, "ws-a")) // 2 at 12:03:00
	clock.Set(t0.Add(4*time.Minute + 30*time.Second))
	a.Abandon()
	eventually(t, "a's visitors reaped", func() bool { return mustSnapshot(t, b, c).Count == 0 })
	clock.Set(t0.Add(5 * time.Minute))
	checkHistory(t, "minutes after a died", historyOf(t, b, c, streams.StepMinute, t0.Add(3*time.Minute), t0.Add(time.Hour)), t0.Add(3*time.Minute), time.Minute, false,
		hpt{peak: 2, avg: 2},
		hpt{peak: 2, avg: 1},
		hpt{peak: 0, avg: 0},
	)
	dayArea := float64(2*30 + 3*40 + 2*50 + 1*60 + 2*90)
	checkHistory(t, "day after a died", historyOf(t, b, c, streams.StepDay, t0, t0), day, 24*time.Hour, true,
		hpt{peak: 3, avg: dayArea / (12*3600 + 300), peakAt: t0.Add(30 * time.Second), today: streams.Today{Authenticated: 3, Anonymous: 1}})
}

// After Valkey restarts empty, the history before is lost; the nodes'
// re-registration is recorded as a change from 0, and the points are
// right from then on.
func TestHistoryRestart(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := streamstest.NewFakeClock(t0)
	a := newBus(t, Options{URL: srv.URL(), NodeID: "a", PresenceTTL: 3 * time.Second, ReapInterval: 50 * time.Millisecond, Clock: clock})
	c := newCommunity()
	mustTouch(t, a, streams.Source{Community: c, Visitor: user("u1"), ID: "ws"})
	mustTouch(t, a, streams.Source{Community: c, Visitor: anon("a1"), ID: "ws"})
	clock.Set(t0.Add(10*time.Minute + 30*time.Second))
	srv.Stop()
	time.Sleep(200 * time.Millisecond)
	srv.Restart()
	eventually(t, "re-registered", func() bool { return a.Ping(t.Context()) == nil && mustSnapshot(t, a, c).Count == 2 })
	clock.Set(t0.Add(11 * time.Minute))
	checkHistory(t, "minutes", historyOf(t, a, c, streams.StepMinute, t0, t0.Add(time.Hour)), t0, time.Minute, false,
		hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, hpt{}, // lost
		hpt{peak: 2, avg: 1},
		hpt{peak: 2, avg: 2},
	)
	checkHistory(t, "day", historyOf(t, a, c, streams.StepDay, t0, t0), t0.Add(-12*time.Hour), 24*time.Hour, true,
		hpt{peak: 2, avg: 2 * 30 / (12*3600 + 660.0), peakAt: t0.Add(10*time.Minute + 30*time.Second), today: streams.Today{Authenticated: 1, Anonymous: 1}})
}
