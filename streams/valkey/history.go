package valkey

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/footfall/footfall/streams"
)

// Visitor history (docs/protocol.md, history)
//
// Every change of a community's present count runs in one script on the
// community's slot, whichever node asked for it (a join, a leave, an
// expiry, a reap of a dead node's sources, a re-registration), and that
// script records it (lua/record.lua, from publish_presence): so a change is
// recorded once, cluster-wide, whichever node sees it, and a dead node's
// visitors are recorded leaving when a reaper ends their sources. Per step,
// a bucket in which the count changed has one record (the model is
// streams.HistoryRecord), as little-endian float64s (exact integers):
//
//	ff:{c}:r:c             STRING the records of the latest minute, hour and
//	                              day: start, first, peak, peak at, area,
//	                              last, count (ms and counts), the day's
//	                              adding its authenticated and anonymous
//	                              visitors after the last change and at its
//	                              start; start 0: none yet
//	ff:{c}:r:m:<start ms>  STRING the record of an earlier minute, without
//	                              its start
//	ff:{c}:r:h:<start ms>  STRING the same, of an hour
//	ff:{c}:r:d:<start ms>  STRING the same, of a day
//
// A change reads and writes ff:{c}:r:c (GET and SET, whatever the number of
// visitors), and the first change in a later bucket also writes the
// record of the bucket it leaves to that bucket's key (SET, at most once
// per bucket); a day roll-over starts the new day's record. A bucket's key
// expires by itself its step's retention and two buckets after it is
// written, ff:{c}:r:c a day record's time after the last change, so
// nothing prunes, and the records do not depend on the community's meta
// key (which expires when the community is idle). A query settles the
// community (as Snapshot does: the day rolls over, due sources end) and
// then reads, in one read-only script, the count, ff:{c}:r:c and the keys
// of the buckets from the first one asked for (or the oldest one kept) to
// the current one: at most 2,881 keys, with one MGET.
//
// Times are the nodes' clocks, like every time on this bus: clock skew
// between nodes shifts a change by the skew (a change that seems earlier
// than the latest one recorded counts in the latest bucket, and adds no
// time to its area).
//
// When Valkey restarts empty (or a cluster shard does), the history kept
// there is lost: every record written before the restart, so the points
// before it read as nobody present. The nodes re-register their visitors
// (held sources; TTL sources come back with their next touch): that
// re-registration is recorded as a change from 0 at its time, so the
// current count, and the points from then on, are right again, while the
// current minute, hour and day show nobody present from their start until
// the restart, and the day's distinct visitors and peak count only those
// seen since.

// historyKind is the record key letter of step.
func historyKind(step streams.Step) string {
	switch step {
	case streams.StepMinute:
		return "m"
	case streams.StepHour:
		return "h"
	}
	return "d"
}

// historyKeep is how long a record of step outlives the change that
// created it (ms): the step's retention and two of its longest buckets.
func historyKeep(step streams.Step) int64 {
	return (step.Retention() + 2*step.MaxBucket()).Milliseconds()
}

// VisitorHistory implements streams.HistoryReader.
func (b *Bus) VisitorHistory(ctx context.Context, community string, step streams.Step, from, to time.Time) ([]streams.Point, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if _, err := streams.PlanHistory(step, from, to, b.now(), b.opts.Location); err != nil {
		return nil, err
	}
	// Settle first, so that the current day is rolled over (its record
	// started) and due sources have left.
	snap, err := b.Snapshot(ctx, community)
	if err != nil {
		return nil, fmt.Errorf("valkey: history: %w", err)
	}
	p, err := streams.PlanHistory(step, from, to, b.now(), b.opts.Location)
	if err != nil {
		return nil, err
	}
	args := make([]string, 1, 1+len(p.Read))
	args[0] = historyKind(step)
	for _, s := range p.Read {
		args = append(args, strconv.FormatInt(s.UnixMilli(), 10))
	}
	vals, err := b.s.histRead.exec(ctx, b.client, []string{metaKey(community)}, args).ToArray()
	if err != nil {
		return nil, fmt.Errorf("valkey: history: %w", err)
	}
	if len(vals) != 2+len(p.Read) {
		return nil, fmt.Errorf("valkey: history: %d values for %d buckets", len(vals), len(p.Read))
	}
	count, err := vals[0].AsInt64()
	if err != nil {
		return nil, fmt.Errorf("valkey: history: %w", err)
	}
	raw := make([]string, len(vals))
	for i, v := range vals[1:] {
		if raw[i+1], err = v.ToString(); err != nil {
			return nil, fmt.Errorf("valkey: history: %w", err)
		}
	}
	recs := make([]*streams.HistoryRecord, len(p.Read))
	for i, s := range raw[2:] {
		if s == "" {
			continue
		}
		r, err := parseHistoryRecord(step, p.Read[i].UnixMilli(), []byte(s))
		if err != nil {
			return nil, fmt.Errorf("valkey: history: %s record %d: %w", step, p.Read[i].UnixMilli(), err)
		}
		recs[i] = &r
	}
	// The latest record of step is in ff:{c}:r:c, not in its bucket's key.
	if cur := raw[1]; cur != "" {
		r, ok, err := latestHistoryRecord(step, []byte(cur))
		if err != nil {
			return nil, fmt.Errorf("valkey: history: latest records: %w", err)
		}
		if ok {
			if i, found := slices.BinarySearchFunc(p.Read, r.Start, func(t time.Time, ms int64) int {
				return cmp.Compare(t.UnixMilli(), ms)
			}); found {
				recs[i] = &r
			}
		}
	}
	return p.Points(recs, int(count), snap.Today), nil
}

// historyFields is the number of float64s of a record of step in its
// bucket's key (ff:{c}:r:c adds the start to each).
func historyFields(step streams.Step) int {
	if step == streams.StepDay {
		return 10
	}
	return 6
}

// parseHistoryRecord parses the record of step's bucket starting at start
// from its key.
func parseHistoryRecord(step streams.Step, start int64, b []byte) (streams.HistoryRecord, error) {
	n := historyFields(step)
	if len(b) != 8*n {
		return streams.HistoryRecord{}, fmt.Errorf("%d bytes; want %d", len(b), 8*n)
	}
	var f [10]int64
	for i := range n {
		v := math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return streams.HistoryRecord{}, fmt.Errorf("field %d is %v", i, v)
		}
		f[i] = int64(v)
	}
	return streams.HistoryRecord{
		Start: start, First: int(f[0]), Peak: int(f[1]), PeakAt: f[2], Area: f[3], Last: f[4], Count: int(f[5]),
		Today:      streams.Today{Authenticated: int(f[6]), Anonymous: int(f[7])},
		TodayFirst: streams.Today{Authenticated: int(f[8]), Anonymous: int(f[9])},
	}, nil
}

// latestHistoryRecord returns the latest record of step from ff:{c}:r:c,
// and false when it has none.
func latestHistoryRecord(step streams.Step, b []byte) (streams.HistoryRecord, bool, error) {
	const all = 8 * (7 + 7 + 11)
	if len(b) != all {
		return streams.HistoryRecord{}, false, fmt.Errorf("%d bytes; want %d", len(b), all)
	}
	switch step {
	case streams.StepHour:
		b = b[8*7:]
	case streams.StepDay:
		b = b[8*14:]
	}
	start := math.Float64frombits(binary.LittleEndian.Uint64(b))
	if start == 0 {
		return streams.HistoryRecord{}, false, nil
	}
	r, err := parseHistoryRecord(step, int64(start), b[8:8*(1+historyFields(step))])
	return r, err == nil, err
}
