package streamstest

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// Visitor history (docs/protocol.md, history). Run checks what real time
// allows (ranges, the current bucket); RunHistory checks the bucket maths
// on buses driven by a FakeClock.

// historyTests are Run's visitor history tests, on real time.
func (s *suite) historyTests() []subtest {
	return []subtest{
		{"Range", s.testHistoryRange},
		{"SoFar", s.testHistorySoFar},
	}
}

// HistoryOptions is what RunHistory asks of each bus it creates.
type HistoryOptions struct {
	// Location is the zone that defines days (and so hour and day
	// buckets).
	Location *time.Location
	// Clock is the bus's clock; the tests move it.
	Clock *FakeClock
	// ReapInterval is how often the bus should end expired sources.
	ReapInterval time.Duration
}

// RunHistory runs the visitor history conformance tests, whose bucket
// maths needs a controlled clock. newBus returns a fresh, running bus
// configured as opts says (its clock is opts.Clock), and closes it in
// t.Cleanup. The tests use held sources only, so a bus whose leases run on
// real time is fine.
func RunHistory(t *testing.T, newBus func(t testing.TB, opts HistoryOptions) streams.Bus) {
	h := &historySuite{newBus: newBus}
	tests := []subtest{
		{"AverageInMinute", h.testAverageInMinute},
		{"AcrossEdges", h.testAcrossEdges},
		{"EmptyBuckets", h.testEmptyBuckets},
		{"SoFar", h.testSoFar},
		{"Days", h.testDays},
		{"DaylightSaving", h.testDaylightSaving},
		{"Retention", h.testRetention},
		{"Range", h.testRange},
	}
	for _, st := range tests {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			st.f(t)
		})
	}
}

type historySuite struct {
	newBus func(t testing.TB, opts HistoryOptions) streams.Bus
}

// bus returns a bus in loc whose clock shows start.
func (h *historySuite) bus(t testing.TB, loc *time.Location, start time.Time) (streams.Bus, *FakeClock) {
	t.Helper()
	clock := NewFakeClock(start)
	b := h.newBus(t, HistoryOptions{Location: loc, Clock: clock, ReapInterval: reapInterval})
	if b == nil {
		t.Fatal("newBus returned nil")
	}
	return b, clock
}

func newYork(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	return loc
}

// at parses an RFC 3339 time.
func at(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func history(t testing.TB, bus streams.Bus, c string, step streams.Step, from, to time.Time) []streams.Point {
	t.Helper()
	ps, err := bus.VisitorHistory(t.Context(), c, step, from, to)
	if err != nil {
		t.Fatalf("VisitorHistory(%s, %s, %s) error = %v; want nil", step, from.Format(time.RFC3339), to.Format(time.RFC3339), err)
	}
	return ps
}

// pt is an expected point; PeakAt and Today are checked for day points
// only.
type pt struct {
	Time    time.Time
	Peak    int
	Average float64
	PeakAt  time.Time
	Today   streams.Today
}

func describePoints(ps []streams.Point, day bool) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n\t%s peak %d avg %.4f", p.Time.UTC().Format(time.RFC3339), p.Peak, p.Average)
		if day {
			fmt.Fprintf(&b, " at %s today %+v", p.PeakAt.UTC().Format(time.RFC3339), p.Today)
		}
	}
	return b.String()
}

func checkPoints(t testing.TB, what string, got []streams.Point, day bool, want ...pt) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		g, w := got[i], want[i]
		ok = g.Time.Equal(w.Time) && g.Peak == w.Peak && math.Abs(g.Average-w.Average) < 1e-9
		if day {
			ok = ok && g.PeakAt.Equal(w.PeakAt) && g.Today == w.Today
		}
	}
	if !ok {
		ps := make([]streams.Point, len(want))
		for i, w := range want {
			ps[i] = streams.Point{Time: w.Time, Peak: w.Peak, Average: w.Average, PeakAt: w.PeakAt, Today: w.Today}
		}
		t.Errorf("%s:%s\nwant:%s", what, describePoints(got, day), describePoints(ps, day))
	}
}

// join and quit add and end held sources.
func join(t testing.TB, bus streams.Bus, c string, vs ...streams.Visitor) {
	t.Helper()
	for _, v := range vs {
		touch(t, bus, streams.Source{Community: c, Visitor: v, ID: "conn"})
	}
}

func quit(t testing.TB, bus streams.Bus, c string, vs ...streams.Visitor) {
	t.Helper()
	for _, v := range vs {
		leave(t, bus, c, v, "conn")
	}
}

// testAverageInMinute: 2 for 30 s then 4 for 30 s is an average of 3.
func (h *historySuite) testAverageInMinute(t *testing.T) {
	t0 := at(t, "2026-06-01T12:00:00Z")
	bus, clock := h.bus(t, time.UTC, t0)
	c := newCommunity()
	join(t, bus, c, user(newID("a-")), anon(newID("b-")))
	clock.Advance(30 * time.Second)
	join(t, bus, c, user(newID("c-")), anon(newID("d-")))
	clock.Advance(30 * time.Second)
	checkPoints(t, "minutes", history(t, bus, c, streams.StepMinute, t0, t0.Add(time.Hour)), false,
		pt{Time: t0, Peak: 4, Average: 3},
		pt{Time: t0.Add(time.Minute), Peak: 4, Average: 4}, // now: the bucket's first instant
	)
}

// testAcrossEdges: a change whose count spans minute edges, and buckets
// with no change of their own.
func (h *historySuite) testAcrossEdges(t *testing.T) {
	t0 := at(t, "2026-06-01T12:00:00Z")
	bus, clock := h.bus(t, time.UTC, t0)
	c := newCommunity()
	a, b := user(newID("a-")), user(newID("b-"))
	join(t, bus, c, a) // 1 from 12:00:00
	clock.Set(t0.Add(45 * time.Second))
	join(t, bus, c, b) // 2 from 12:00:45
	clock.Set(t0.Add(75 * time.Second))
	quit(t, bus, c, b) // 1 from 12:01:15
	clock.Set(t0.Add(3*time.Minute + 30*time.Second))
	m := time.Minute
	checkPoints(t, "minutes", history(t, bus, c, streams.StepMinute, t0.Add(-m), t0.Add(time.Hour)), false,
		pt{Time: t0.Add(-m), Peak: 0, Average: 0},
		pt{Time: t0, Peak: 2, Average: (45*1 + 15*2) / 60.0},
		pt{Time: t0.Add(m), Peak: 2, Average: (15*2 + 45*1) / 60.0},
		pt{Time: t0.Add(2 * m), Peak: 1, Average: 1},
		pt{Time: t0.Add(3 * m), Peak: 1, Average: 1},
	)
	checkPoints(t, "hours", history(t, bus, c, streams.StepHour, t0, t0), false,
		pt{Time: t0, Peak: 2, Average: (45*1 + 30*2 + 135*1) / 210.0},
	)
	// A range ending in the past reads the same.
	checkPoints(t, "minutes to 12:01:59", history(t, bus, c, streams.StepMinute, t0.Add(m), t0.Add(2*m-time.Second)), false,
		pt{Time: t0.Add(m), Peak: 2, Average: (15*2 + 45*1) / 60.0},
	)
	checkPoints(t, "minute 12:02 alone", history(t, bus, c, streams.StepMinute, t0.Add(2*m), t0.Add(2*m)), false,
		pt{Time: t0.Add(2 * m), Peak: 1, Average: 1},
	)
}

// testEmptyBuckets: minutes between changes with nobody present are zero;
// a change at a bucket's very start does not lend the bucket the count
// before it.
func (h *historySuite) testEmptyBuckets(t *testing.T) {
	t0 := at(t, "2026-06-01T12:00:00Z")
	bus, clock := h.bus(t, time.UTC, t0)
	c := newCommunity()
	a, b := user(newID("a-")), anon(newID("b-"))
	clock.Set(t0.Add(10 * time.Second))
	join(t, bus, c, a, b)
	clock.Set(t0.Add(20 * time.Second))
	quit(t, bus, c, a, b)
	clock.Set(t0.Add(5*time.Minute + 30*time.Second))
	join(t, bus, c, a)
	clock.Set(t0.Add(7 * time.Minute))
	quit(t, bus, c, a) // at the very start of 12:07
	clock.Set(t0.Add(8 * time.Minute))
	m := time.Minute
	checkPoints(t, "minutes", history(t, bus, c, streams.StepMinute, t0, t0.Add(8*m)), false,
		pt{Time: t0, Peak: 2, Average: 20 / 60.0},
		pt{Time: t0.Add(m), Peak: 0, Average: 0},
		pt{Time: t0.Add(2 * m), Peak: 0, Average: 0},
		pt{Time: t0.Add(3 * m), Peak: 0, Average: 0},
		pt{Time: t0.Add(4 * m), Peak: 0, Average: 0},
		pt{Time: t0.Add(5 * m), Peak: 1, Average: 0.5},
		pt{Time: t0.Add(6 * m), Peak: 1, Average: 1},
		pt{Time: t0.Add(7 * m), Peak: 0, Average: 0},
		pt{Time: t0.Add(8 * m), Peak: 0, Average: 0},
	)
}

// testSoFar: the current buckets show their figures so far.
func (h *historySuite) testSoFar(t *testing.T) {
	t0 := at(t, "2026-06-01T12:00:00Z")
	day := at(t, "2026-06-01T00:00:00Z")
	bus, clock := h.bus(t, time.UTC, t0)
	c := newCommunity()
	clock.Set(t0.Add(20 * time.Second))
	join(t, bus, c, user(newID("a-")))
	clock.Set(t0.Add(50 * time.Second))
	checkPoints(t, "minute", history(t, bus, c, streams.StepMinute, t0, t0.Add(time.Hour)), false,
		pt{Time: t0, Peak: 1, Average: 30 / 50.0},
	)
	checkPoints(t, "hour", history(t, bus, c, streams.StepHour, t0, t0.Add(time.Hour)), false,
		pt{Time: t0, Peak: 1, Average: 30 / 50.0},
	)
	checkPoints(t, "day", history(t, bus, c, streams.StepDay, t0, t0.Add(time.Hour)), true,
		pt{Time: day, Peak: 1, Average: 30 / (12*3600 + 50.0), PeakAt: t0.Add(20 * time.Second), Today: streams.Today{Authenticated: 1}},
	)
}

// testDays: days in a zone that is not UTC, their distinct visitors and
// when their peak was first reached; a day nobody came or went keeps the
// visitors present all along.
func (h *historySuite) testDays(t *testing.T) {
	ny := newYork(t)
	d := func(day, clock string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", day+" "+clock, ny)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	bus, clock := h.bus(t, ny, d("2026-06-10", "23:00"))
	c := newCommunity()
	u1, u2, a1 := user(newID("u1-")), user(newID("u2-")), anon(newID("a1-"))
	join(t, bus, c, u1) // 1 from 23:00 (04:00 UTC, the next UTC day)
	clock.Set(d("2026-06-10", "23:30"))
	join(t, bus, c, a1) // 2 from 23:30
	clock.Set(d("2026-06-11", "06:00"))
	quit(t, bus, c, a1) // 1 from 06:00
	clock.Set(d("2026-06-11", "12:00"))
	join(t, bus, c, u2, a1) // 3 from 12:00: a1 again, counted once
	clock.Set(d("2026-06-11", "18:00"))
	quit(t, bus, c, u2, a1) // 1 from 18:00, then nobody comes or goes on the 12th
	clock.Set(d("2026-06-13", "06:00"))
	join(t, bus, c, a1) // 2 from 06:00 on the 13th
	clock.Set(d("2026-06-13", "08:00"))
	h24 := 24 * 3600.0
	checkPoints(t, "days", history(t, bus, c, streams.StepDay, d("2026-06-09", "12:00"), d("2026-06-14", "00:00")), true,
		pt{Time: d("2026-06-09", "00:00")}, // nobody: no peak time
		pt{Time: d("2026-06-10", "00:00"), Peak: 2, Average: (1800 + 2*1800) / h24, PeakAt: d("2026-06-10", "23:30"),
			Today: streams.Today{Authenticated: 1, Anonymous: 1}},
		pt{Time: d("2026-06-11", "00:00"), Peak: 3, Average: (2*6*3600 + 6*3600 + 3*6*3600 + 6*3600) / h24, PeakAt: d("2026-06-11", "12:00"),
			Today: streams.Today{Authenticated: 2, Anonymous: 1}},
		pt{Time: d("2026-06-12", "00:00"), Peak: 1, Average: 1, PeakAt: d("2026-06-12", "00:00"),
			Today: streams.Today{Authenticated: 1}},
		pt{Time: d("2026-06-13", "00:00"), Peak: 2, Average: (6 + 2*2) / 8.0, PeakAt: d("2026-06-13", "06:00"),
			Today: streams.Today{Authenticated: 1, Anonymous: 1}},
	)
	// The hours around the first midnight, in local time.
	checkPoints(t, "hours", history(t, bus, c, streams.StepHour, d("2026-06-10", "22:59"), d("2026-06-11", "01:00")), false,
		pt{Time: d("2026-06-10", "22:00"), Peak: 0, Average: 0},
		pt{Time: d("2026-06-10", "23:00"), Peak: 2, Average: 1.5},
		pt{Time: d("2026-06-11", "00:00"), Peak: 2, Average: 2},
		pt{Time: d("2026-06-11", "01:00"), Peak: 2, Average: 2},
	)
}

// testDaylightSaving: the day the clocks go forward in New York has 23
// hours; its average is over those.
func (h *historySuite) testDaylightSaving(t *testing.T) {
	ny := newYork(t)
	d := func(day, clock string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", day+" "+clock, ny)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	bus, clock := h.bus(t, ny, d("2026-03-07", "22:00"))
	c := newCommunity()
	a, b := user(newID("a-")), anon(newID("b-"))
	join(t, bus, c, a, b) // 2 from 22:00 on the 7th
	clock.Set(d("2026-03-08", "10:00"))
	quit(t, bus, c, b) // 1 from 10:00 EDT: 9 real hours after midnight
	clock.Set(d("2026-03-09", "00:00"))
	mid := d("2026-03-08", "00:00")
	checkPoints(t, "day", history(t, bus, c, streams.StepDay, mid, mid), true,
		pt{Time: mid, Peak: 2, Average: (2*9 + 1*14) / 23.0, PeakAt: mid, Today: streams.Today{Authenticated: 1, Anonymous: 1}},
	)
	hours := history(t, bus, c, streams.StepHour, mid, d("2026-03-08", "23:59"))
	if len(hours) != 23 {
		t.Fatalf("hour points of 2026-03-08 in New York: %d; want 23:%s", len(hours), describePoints(hours, false))
	}
	checkPoints(t, "hours 01:00 to 03:00", hours[1:3], false,
		pt{Time: d("2026-03-08", "01:00"), Peak: 2, Average: 2},
		pt{Time: d("2026-03-08", "03:00"), Peak: 2, Average: 2},
	)
	checkPoints(t, "hours 09:00 and 10:00", hours[8:10], false,
		pt{Time: d("2026-03-08", "09:00"), Peak: 2, Average: 2},
		pt{Time: d("2026-03-08", "10:00"), Peak: 1, Average: 1},
	)
}

// testRetention: minute points are kept 48 hours, hour points 90 days,
// day points 400 days; older ones are zero.
func (h *historySuite) testRetention(t *testing.T) {
	t0 := at(t, "2026-01-05T12:00:00Z")
	day := at(t, "2026-01-05T00:00:00Z")
	bus, clock := h.bus(t, time.UTC, t0)
	c := newCommunity()
	a := user(newID("a-"))
	join(t, bus, c, a)
	clock.Set(t0.Add(30 * time.Minute))
	quit(t, bus, c, a)
	hourPt := pt{Time: t0, Peak: 1, Average: 0.5}
	dayPt := pt{Time: day, Peak: 1, Average: 0.5 / 24, PeakAt: t0, Today: streams.Today{Authenticated: 1}}

	clock.Set(t0.Add(47 * time.Hour))
	checkPoints(t, "minute after 47 h", history(t, bus, c, streams.StepMinute, t0, t0), false,
		pt{Time: t0, Peak: 1, Average: 1})
	clock.Set(t0.Add(49 * time.Hour))
	join(t, bus, c, a) // a change now, so a bus may prune
	quit(t, bus, c, a)
	checkPoints(t, "minute after 49 h", history(t, bus, c, streams.StepMinute, t0, t0), false,
		pt{Time: t0})
	checkPoints(t, "hour after 49 h", history(t, bus, c, streams.StepHour, t0, t0), false, hourPt)

	clock.Set(t0.Add(89 * 24 * time.Hour))
	checkPoints(t, "hour after 89 days", history(t, bus, c, streams.StepHour, t0, t0), false, hourPt)
	clock.Set(t0.Add(91 * 24 * time.Hour))
	join(t, bus, c, a)
	quit(t, bus, c, a)
	checkPoints(t, "hour after 91 days", history(t, bus, c, streams.StepHour, t0, t0), false, pt{Time: t0})
	checkPoints(t, "day after 91 days", history(t, bus, c, streams.StepDay, t0, t0), true, dayPt)

	clock.Set(t0.Add(399 * 24 * time.Hour))
	checkPoints(t, "day after 399 days", history(t, bus, c, streams.StepDay, t0, t0), true, dayPt)
	clock.Set(t0.Add(401 * 24 * time.Hour))
	join(t, bus, c, a)
	quit(t, bus, c, a)
	checkPoints(t, "day after 401 days", history(t, bus, c, streams.StepDay, t0, t0), true, pt{Time: day})
}

// testRange: the limits of a query.
func (h *historySuite) testRange(t *testing.T) {
	t0 := at(t, "2026-06-01T12:00:00Z")
	bus, _ := h.bus(t, time.UTC, t0)
	c := newCommunity()
	checkRange(t, bus, c, t0)
}

func checkRange(t testing.TB, bus streams.Bus, c string, now time.Time) {
	t.Helper()
	m := streams.BucketStart(streams.StepMinute, now, time.UTC)
	bad := []struct {
		step     streams.Step
		from, to time.Time
	}{
		{streams.StepMinute, now, now.Add(-time.Second)},
		{streams.StepMinute, m.Add(-2881 * time.Minute), now},
		{streams.StepHour, now.Add(-2161 * time.Hour), now},
		{streams.StepDay, now.AddDate(0, 0, -402), now},
		{streams.StepDay, time.Time{}, now},
		{"week", now.Add(-time.Hour), now},
	}
	for _, q := range bad {
		if _, err := bus.VisitorHistory(t.Context(), c, q.step, q.from, q.to); !errors.Is(err, streams.ErrHistoryRange) {
			t.Errorf("VisitorHistory(%s, %s, %s) error = %v; want ErrHistoryRange", q.step, q.from.Format(time.RFC3339), q.to.Format(time.RFC3339), err)
		}
	}
	// A whole retention window: its partial buckets at both ends too.
	if n := len(history(t, bus, c, streams.StepMinute, now.Add(-48*time.Hour), now.Add(time.Hour))); n != 2881 {
		t.Errorf("VisitorHistory(minute, the last 48 hours) = %d points; want 2881", n)
	}
	if ps := history(t, bus, c, streams.StepMinute, now.Add(time.Hour), now.Add(2*time.Hour)); len(ps) != 0 {
		t.Errorf("VisitorHistory(minute, the future) = %d points; want 0", len(ps))
	}
	for _, p := range history(t, bus, newCommunity(), streams.StepHour, now.Add(-24*time.Hour), now) {
		if p.Peak != 0 || p.Average != 0 {
			t.Errorf("VisitorHistory of an unknown community: %+v; want zeros", p)
		}
	}
}

// testHistoryRange is testRange on real time.
func (s *suite) testHistoryRange(t *testing.T) {
	bus := s.bus(t)
	checkRange(t, bus, newCommunity(), time.Now())
}

// testHistorySoFar: on real time, the current minute and day show two
// visitors who just came, and the day counts them.
func (s *suite) testHistorySoFar(t *testing.T) {
	bus := s.bus(t)
	c := newCommunity()
	for {
		start := time.Now()
		join(t, bus, c, user(newID("a-")), anon(newID("b-")))
		now := time.Now()
		ms := history(t, bus, c, streams.StepMinute, now, now)
		if !streams.BucketStart(streams.StepMinute, start, time.UTC).Equal(streams.BucketStart(streams.StepMinute, time.Now(), time.UTC)) {
			quit(t, bus, c)
			c = newCommunity() // crossed a minute edge: again
			continue
		}
		if len(ms) != 1 || ms[0].Peak != 2 || ms[0].Average < 0 || ms[0].Average > 2 {
			t.Errorf("minute so far: %s; want one point, peak 2, average in [0, 2]", describePoints(ms, false))
		}
		ds := history(t, bus, c, streams.StepDay, now, now)
		if len(ds) != 1 || ds[0].Peak != 2 || ds[0].Today != (streams.Today{Authenticated: 1, Anonymous: 1}) ||
			ds[0].PeakAt.Before(start.Truncate(time.Millisecond)) || ds[0].PeakAt.After(time.Now()) {
			t.Errorf("day so far: %s; want one point, peak 2 reached just now, 1 + 1 visitors", describePoints(ds, true))
		}
		return
	}
}
