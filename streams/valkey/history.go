package valkey

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
// streams.HistoryRecord):
//
//	ff:{c}:r:m:<start ms>  STRING "first,peak,peak at,area,last,count"
//	ff:{c}:r:h:<start ms>  STRING the same, for an hour
//	ff:{c}:r:d:<start ms>  STRING the same, then the day's authenticated and
//	                              anonymous visitors after the last change
//	                              and at the day's start
//
// A change reads and writes one record per step (GET and SET, 6 commands,
// whatever the number of visitors); a day roll-over writes the new day's
// record. Each record expires by itself its step's retention and two
// buckets after the change that created it, so nothing prunes, and the
// records do not depend on the community's meta key (which expires when
// the community is idle). A query settles the community (as Snapshot does:
// the day rolls over, due sources end) and then reads, in one read-only
// script, the count and the records of the buckets from the first one
// asked for (or the oldest one kept) to the current one: at most 2,881
// records, with one MGET.
//
// Times are the nodes' clocks, like every time on this bus: clock skew
// between nodes shifts a change by the skew (a change that seems earlier
// than the last one recorded adds no time to the area).
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
	if len(vals) != 1+len(p.Read) {
		return nil, fmt.Errorf("valkey: history: %d values for %d buckets", len(vals), len(p.Read))
	}
	count, err := vals[0].AsInt64()
	if err != nil {
		return nil, fmt.Errorf("valkey: history: %w", err)
	}
	recs := make([]*streams.HistoryRecord, len(p.Read))
	for i, v := range vals[1:] {
		s, err := v.ToString()
		if err != nil {
			return nil, fmt.Errorf("valkey: history: %w", err)
		}
		if s == "" {
			continue
		}
		r, err := parseHistoryRecord(p.Read[i].UnixMilli(), s)
		if err != nil {
			return nil, fmt.Errorf("valkey: history: %s record %d: %w", step, p.Read[i].UnixMilli(), err)
		}
		recs[i] = &r
	}
	return p.Points(recs, int(count), snap.Today), nil
}

// parseHistoryRecord parses the record of the bucket starting at start.
func parseHistoryRecord(start int64, s string) (streams.HistoryRecord, error) {
	var n [10]int64
	fields := strings.Split(s, ",")
	if len(fields) != 6 && len(fields) != 10 {
		return streams.HistoryRecord{}, fmt.Errorf("%d fields", len(fields))
	}
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return streams.HistoryRecord{}, err
		}
		n[i] = v
	}
	return streams.HistoryRecord{
		Start: start, First: int(n[0]), Peak: int(n[1]), PeakAt: n[2], Area: n[3], Last: n[4], Count: int(n[5]),
		Today:      streams.Today{Authenticated: int(n[6]), Anonymous: int(n[7])},
		TodayFirst: streams.Today{Authenticated: int(n[8]), Anonymous: int(n[9])},
	}, nil
}
