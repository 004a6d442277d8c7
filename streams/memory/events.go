package memory

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Events: Publish and History

// publishLocked stores e as c's next event and queues it for delivery.
// Callers hold c.mu, so events enter the delivery queue in Seq order.
func (b *Bus) publishLocked(c *community, e streams.Event, now time.Time) streams.Event {
	c.seq++
	e.Seq = c.seq
	e.ID = b.epoch + "-" + strconv.FormatUint(c.seq, 10)
	e.Community = c.id
	if e.Time.IsZero() {
		e.Time = stamp(now)
	}
	c.history = append(c.history, stored{e: e, at: now})
	b.trimHistory(c, now)
	delivered := e
	b.queue.Push(item{c: c, e: &delivered})
	return e
}

// lastID is the ID of c's last event, "" if none. Callers hold c.mu.
func (b *Bus) lastID(c *community) string {
	if c.seq == 0 {
		return ""
	}
	return b.epoch + "-" + strconv.FormatUint(c.seq, 10)
}

// Publish stores e in its community's history and delivers it to the
// community's subscribers. Value and Message are copied.
func (b *Bus) Publish(ctx context.Context, e streams.Event) (streams.Event, error) {
	if err := b.check(ctx); err != nil {
		return streams.Event{}, err
	}
	if e.Community == "" {
		return streams.Event{}, errors.New("memory: publish: empty community")
	}
	e.Value = bytes.Clone(e.Value)
	e.Message = bytes.Clone(e.Message)
	c := b.lookupOrCreate(e.Community)
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.publishLocked(c, e, b.now()), nil
}

// History returns the events of community after afterID, oldest first.
// afterID must be an id of this Bus no older than the event just before
// the oldest one kept (all events after it are still there to replay).
func (b *Bus) History(ctx context.Context, community, afterID string, limit int) ([]streams.Event, bool, error) {
	if err := b.check(ctx); err != nil {
		return nil, false, err
	}
	rest, ok := strings.CutPrefix(afterID, b.epoch+"-")
	if !ok {
		return nil, false, nil
	}
	after, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || after == 0 {
		return nil, false, nil
	}
	c := b.lookup(community)
	if c == nil {
		return nil, false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b.trimHistory(c, b.now())
	if after > c.seq {
		return nil, false, nil
	}
	if after == c.seq {
		return []streams.Event{}, true, nil
	}
	if limit > 0 && c.seq-after > uint64(limit) {
		return nil, false, nil
	}
	first := c.history[0].e.Seq
	if after+1 < first {
		return nil, false, nil
	}
	kept := c.history[after+1-first:]
	events := make([]streams.Event, len(kept))
	for i, s := range kept {
		events[i] = s.e
	}
	return events, true, nil
}
