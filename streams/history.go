package streams

import (
	"context"
	"errors"
	"time"
)

// Step is the resolution of visitor history (docs/protocol.md, history).
type Step string

// The three resolutions, and how long each keeps its points.
const (
	StepMinute Step = "minute"
	StepHour   Step = "hour"
	StepDay    Step = "day"

	retainMinutes = 48 * time.Hour
	retainHours   = 90 * 24 * time.Hour
	retainDays    = 400 * 24 * time.Hour
)

// The most points one query may ask for: the buckets that hold a whole
// retention window, the partial ones at both ends included (a day more for
// the days, whose length changes with the clocks).
const (
	maxMinutePoints = 2880 + 1
	maxHourPoints   = 2160 + 1
	maxDayPoints    = 400 + 2
)

// ParseStep returns the Step named s.
func ParseStep(s string) (Step, bool) {
	switch Step(s) {
	case StepMinute, StepHour, StepDay:
		return Step(s), true
	}
	return "", false
}

// Retention is how long step keeps its points: a bucket is kept while its
// end is less than Retention before now.
func (s Step) Retention() time.Duration {
	switch s {
	case StepMinute:
		return retainMinutes
	case StepHour:
		return retainHours
	}
	return retainDays
}

// maxPoints is the most points one query of step may return.
func (s Step) maxPoints() int {
	switch s {
	case StepMinute:
		return maxMinutePoints
	case StepHour:
		return maxHourPoints
	}
	return maxDayPoints
}

// MaxBucket is the longest bucket of step: a minute, an hour, or a day of
// 25 hours (the day a clock goes back).
func (s Step) MaxBucket() time.Duration {
	switch s {
	case StepMinute:
		return time.Minute
	case StepHour:
		return time.Hour
	}
	return 25 * time.Hour
}

// Point is one bucket of a community's visitor history: the peak and the
// time-weighted average of its present count over the bucket (so far, for
// the current bucket).
type Point struct {
	// Time is the bucket's start, in the bus's Location.
	Time    time.Time
	Peak    int
	Average float64
	// Day points only: the day's distinct visitors and when its peak was
	// first reached (the day's start when the count at midnight is its
	// peak; zero for a day with nobody).
	Today  Today
	PeakAt time.Time
}

// ErrHistoryRange: from is after to, or the range asks for more points
// than a step keeps.
var ErrHistoryRange = errors.New("history range out of bounds")

// HistoryReader reads a community's visitor history. Both buses record it
// at every change of the present count, cluster-wide and exactly once.
type HistoryReader interface {
	// VisitorHistory returns the buckets of step from the one holding from
	// to the one holding to (or now, if earlier), oldest first. A from
	// after to, or a range of more than step.maxPoints() buckets, is
	// ErrHistoryRange; a from after now returns no points. Buckets that
	// ended more than step.Retention() ago are zero.
	VisitorHistory(ctx context.Context, community string, step Step, from, to time.Time) ([]Point, error)
}

// ---------------------------------------------------------------------------
// Buckets
//
// A minute bucket starts at a whole minute of Unix time; an hour bucket at
// local midnight plus a whole number of hours (so a day has 23 or 25 of
// them when the clocks change); a day bucket at local midnight (Midnight).
// Each bucket ends where the next begins.

// BucketStart returns the start of step's bucket holding t, in loc.
func BucketStart(step Step, t time.Time, loc *time.Location) time.Time {
	switch step {
	case StepMinute:
		ms := t.UnixMilli()
		return time.UnixMilli(ms - floorMod(ms, time.Minute.Milliseconds())).In(loc)
	case StepHour:
		mid := Midnight(t, loc)
		return mid.Add(t.Sub(mid).Truncate(time.Hour))
	}
	return Midnight(t, loc)
}

// nextBucket returns the start of the bucket after the one starting at
// start.
func nextBucket(step Step, start time.Time, loc *time.Location) time.Time {
	switch step {
	case StepMinute:
		return start.Add(time.Minute)
	case StepHour:
		next, end := start.Add(time.Hour), nextMidnight(start, loc)
		if next.Before(end) {
			return next
		}
		return end
	}
	return nextMidnight(start, loc)
}

// HourStart is the start (unix ms) of the hour bucket holding ms, in the
// day that starts at mid (unix ms): what the buses compute at each change.
func HourStart(ms, mid int64) int64 {
	h := time.Hour.Milliseconds()
	return mid + (ms-mid)/h*h
}

// MinuteStart is the start (unix ms) of the minute bucket holding ms.
func MinuteStart(ms int64) int64 {
	return ms - floorMod(ms, time.Minute.Milliseconds())
}

func nextMidnight(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// ---------------------------------------------------------------------------
// Records
//
// The buses record history per community and step in one HistoryRecord per
// bucket in which the count changed, written at each change: O(1) per
// change, nothing per connection. A bucket without a record had no change,
// so its count all along is the one at the start of the next later bucket
// that has a record (or the current count when none has): a query walks the
// buckets from now back to from, and never needs anything older.

// HistoryRecord is the record of one bucket. Times are unix milliseconds.
type HistoryRecord struct {
	Start int64 // the bucket's start
	// First is the count just before the bucket started (the count at its
	// start, unless a change came at that very millisecond).
	First int
	// Peak is the highest count in the bucket so far, first reached at
	// PeakAt.
	Peak   int
	PeakAt int64
	// Area is the integral of the count (count × ms) from Start to Last,
	// the time of the last change; Count is the count since.
	Area  int64
	Last  int64
	Count int
	// Day records only: the day's distinct visitors after the last change,
	// and those present at the day's start.
	Today      Today
	TodayFirst Today
}

// NewHistoryRecord returns the record of the bucket starting at start in
// which the count was count until now (no change yet), with the day's
// distinct visitors today (day records).
func NewHistoryRecord(start int64, count int, today Today) HistoryRecord {
	return HistoryRecord{
		Start: start, First: count, Peak: count, PeakAt: start,
		Last: start, Count: count, Today: today, TodayFirst: today,
	}
}

// Change records the change of the count to n at ms (today: the day's
// distinct visitors after it). A change at the bucket's very start (or
// before it: a clock that stepped back) replaces the peak, since the count
// before it was never the count in this bucket.
func (r *HistoryRecord) Change(ms int64, n int, today Today) {
	if ms > r.Last {
		r.Area += int64(r.Count) * (ms - r.Last)
		r.Last = ms
	}
	r.Count = n
	r.Today = today
	switch {
	case ms <= r.Start:
		r.Peak, r.PeakAt = n, r.Start
	case n > r.Peak:
		r.Peak, r.PeakAt = n, ms
	}
}

// ---------------------------------------------------------------------------
// Queries

// HistoryPlan is one query of visitor history: the buckets it answers and
// the buckets whose records it reads to do so.
type HistoryPlan struct {
	Step Step
	Now  time.Time
	// out are the starts of the buckets answered, oldest first.
	out []time.Time
	// Read are the starts of the buckets whose records the query needs,
	// oldest first: the kept ones from the first answered to the current
	// one (empty when every answered bucket is past retention).
	Read []time.Time
	loc  *time.Location
}

// PlanHistory checks a query of step from from to to at now and returns
// its plan, or ErrHistoryRange.
func PlanHistory(step Step, from, to, now time.Time, loc *time.Location) (*HistoryPlan, error) {
	if _, ok := ParseStep(string(step)); !ok {
		return nil, ErrHistoryRange
	}
	if from.After(to) {
		return nil, ErrHistoryRange
	}
	if to.After(now) {
		to = now
	}
	p := &HistoryPlan{Step: step, Now: now, loc: loc, out: []time.Time{}}
	if from.After(to) {
		return p, nil // from is in the future: nothing yet
	}
	last := BucketStart(step, to, loc)
	limit := step.maxPoints()
	if step == StepMinute {
		// Plain arithmetic, so that a far-off from costs nothing.
		first := BucketStart(step, from, loc)
		if n := last.Sub(first)/time.Minute + 1; n > time.Duration(limit) {
			return nil, ErrHistoryRange
		}
	}
	for b := BucketStart(step, from, loc); !b.After(last); b = nextBucket(step, b, loc) {
		if len(p.out) == limit {
			return nil, ErrHistoryRange
		}
		p.out = append(p.out, b)
	}
	kept := BucketStart(step, now.Add(-step.Retention()), loc)
	if last.Before(kept) {
		return p, nil
	}
	b := p.out[0]
	if b.Before(kept) {
		b = kept
	}
	cur := BucketStart(step, now, loc)
	for ; !b.After(cur); b = nextBucket(step, b, loc) {
		p.Read = append(p.Read, b)
	}
	return p, nil
}

// Points derives the answer of p from the records of p.Read (recs[i] is the
// record of the bucket starting at p.Read[i], nil when it has none), the
// current count and today's distinct visitors.
func (p *HistoryPlan) Points(recs []*HistoryRecord, count int, today Today) []Point {
	day := p.Step == StepDay
	out := make([]Point, len(p.out))
	for i, b := range p.out {
		out[i].Time = b
	}
	now := p.Now.UnixMilli()
	carry, carryToday := count, today
	j := len(p.out) - 1
	for i := len(p.Read) - 1; i >= 0; i-- {
		b := p.Read[i]
		var pt Point
		if r := recs[i]; r != nil {
			end := now
			if i+1 < len(p.Read) {
				end = min(end, p.Read[i+1].UnixMilli())
			}
			start := b.UnixMilli()
			area := r.Area + int64(r.Count)*max(0, end-r.Last)
			pt = Point{Peak: r.Peak, Average: float64(r.Count)}
			if end > start {
				pt.Average = float64(area) / float64(end-start)
			}
			if day {
				pt.Today, pt.PeakAt = r.Today, time.UnixMilli(r.PeakAt).In(p.loc)
			}
			carry, carryToday = r.First, r.TodayFirst
		} else {
			pt = Point{Peak: carry, Average: float64(carry)}
			if day {
				pt.Today, pt.PeakAt = carryToday, b
			}
		}
		if pt.Peak == 0 {
			pt.PeakAt = time.Time{}
		}
		for j >= 0 && p.out[j].After(b) {
			j--
		}
		if j >= 0 && p.out[j].Equal(b) {
			pt.Time = b
			out[j] = pt
		}
	}
	return out
}
