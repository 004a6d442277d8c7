package memory

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/footfall/footfall/streams"
)

// Visitor history (docs/protocol.md, history). Each community keeps, per
// step, the records of the buckets in which its count changed, oldest
// first (streams.HistoryRecord has the model). A change updates the last
// record of each step, or appends one: O(1), whatever the number of
// visitors. Records past retention are dropped from the front when a
// record is appended, so pruning costs what it drops.

// history is a community's visitor history.
type history struct {
	minutes, hours, days []streams.HistoryRecord
}

// bucketRecord returns the record of the bucket starting at start in recs,
// appending it (with count until now) when the bucket has none yet, and
// dropping the records that ended more than keep before now (in ms). A
// start earlier than the last record's (a clock that stepped back) uses
// the last record.
func bucketRecord(recs *[]streams.HistoryRecord, start int64, count int, today streams.Today, now int64, step streams.Step) *streams.HistoryRecord {
	rs := *recs
	if n := len(rs); n > 0 && rs[n-1].Start >= start {
		return &rs[n-1]
	}
	drop := 0
	old := now - (step.Retention() + step.MaxBucket()).Milliseconds()
	for drop < len(rs) && rs[drop].Start < old {
		drop++
	}
	rs = append(rs[drop:], streams.NewHistoryRecord(start, count, today))
	*recs = rs
	return &rs[len(rs)-1]
}

// recordHistory records c's present count after a change at now in c's
// history buckets. Callers hold c.mu, and have settled c at now (so
// c.dayStart is now's day).
func (b *Bus) recordHistory(c *community, old, n int, now time.Time) {
	ms := now.UnixMilli()
	if old != n {
		bucketRecord(&c.hist.minutes, streams.MinuteStart(ms), old, streams.Today{}, ms, streams.StepMinute).Change(ms, n, streams.Today{})
		bucketRecord(&c.hist.hours, streams.HourStart(ms, c.dayStart.UnixMilli()), old, streams.Today{}, ms, streams.StepHour).Change(ms, n, streams.Today{})
	}
	// rollDay started the day's record if anyone was present at midnight;
	// otherwise nobody was, and the day's first change starts it.
	bucketRecord(&c.hist.days, c.dayStart.UnixMilli(), old, streams.Today{}, ms, streams.StepDay).Change(ms, n, c.todayFig)
}

// startDay starts the day record of the day beginning at mid with the
// visitors present then (rollDay calls it). An empty community needs
// none: its day's first change starts it.
func (c *community) startDay(mid time.Time) {
	if n := len(c.visitors); n > 0 {
		ms := mid.UnixMilli()
		bucketRecord(&c.hist.days, ms, n, c.todayFig, ms, streams.StepDay)
	}
}

// VisitorHistory implements streams.HistoryReader.
func (b *Bus) VisitorHistory(ctx context.Context, community string, step streams.Step, from, to time.Time) ([]streams.Point, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	c := b.lookup(community)
	if c == nil {
		p, err := streams.PlanHistory(step, from, to, b.now(), b.opts.Location)
		if err != nil {
			return nil, err
		}
		return p.Points(make([]*streams.HistoryRecord, len(p.Read)), 0, streams.Today{}), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := b.now()
	p, err := streams.PlanHistory(step, from, to, now, b.opts.Location)
	if err != nil {
		return nil, err
	}
	b.settle(c, now)
	var recs []streams.HistoryRecord
	switch step {
	case streams.StepMinute:
		recs = c.hist.minutes
	case streams.StepHour:
		recs = c.hist.hours
	default:
		recs = c.hist.days
	}
	found := make([]*streams.HistoryRecord, len(p.Read))
	if len(p.Read) > 0 {
		i, _ := slices.BinarySearchFunc(recs, p.Read[0].UnixMilli(), func(r streams.HistoryRecord, ms int64) int {
			return cmp.Compare(r.Start, ms)
		})
		for k, start := range p.Read {
			ms := start.UnixMilli()
			for i < len(recs) && recs[i].Start < ms {
				i++
			}
			if i < len(recs) && recs[i].Start == ms {
				r := recs[i]
				found[k] = &r
			}
		}
	}
	return p.Points(found, len(c.visitors), c.todayFig), nil
}
