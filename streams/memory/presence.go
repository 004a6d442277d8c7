package memory

import (
	"container/heap"
	"context"
	"errors"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Presence operations

// publishPresence publishes a presence event carrying c's figures right
// after the change, and records the change time. Callers hold c.mu.
func (b *Bus) publishPresence(c *community, typ string, now time.Time) streams.Event {
	n := len(c.visitors)
	if n > c.peak.Count {
		c.peak = streams.Peak{Count: n, At: stamp(now).Unix()}
	}
	old := n + 1
	if typ == streams.TypeVisitorJoined {
		old = n - 1
	}
	b.recordHistory(c, old, n, now)
	b.outboxPresence(c, old, n, now)
	e := b.publishLocked(c, streams.Event{
		Type:  typ,
		Count: len(c.visitors),
		Today: c.todayFig,
		Peak:  c.peak,
	}, now)
	c.changed = e.Time
	return e
}

func (b *Bus) result(c *community, changed bool) streams.PresenceResult {
	return streams.PresenceResult{Count: len(c.visitors), Changed: changed, Seq: c.seq, ID: b.lastID(c), Today: c.todayFig, Peak: c.peak}
}

// Touch adds or renews the source s. When the visitor becomes present it
// publishes visitor_joined.
func (b *Bus) Touch(ctx context.Context, s streams.Source) (streams.PresenceResult, error) {
	if err := b.check(ctx); err != nil {
		return streams.PresenceResult{}, err
	}
	switch {
	case s.Community == "":
		return streams.PresenceResult{}, errors.New("memory: touch: empty community")
	case s.Visitor.ID == "":
		return streams.PresenceResult{}, errors.New("memory: touch: empty visitor id")
	case s.TTL < 0:
		return streams.PresenceResult{}, errors.New("memory: touch: negative ttl")
	}
	c := b.lookupOrCreate(s.Community)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := b.now()
	b.settle(c, now)

	var until time.Time
	key := s.Visitor.Key()
	if s.TTL > 0 {
		until = now.Add(s.TTL)
		heap.Push(&c.deadlines, deadline{at: until, key: key, id: s.ID})
		if c.nextDeadline.IsZero() || until.Before(c.nextDeadline) {
			c.nextDeadline = until
		}
	}
	if v := c.visitors[key]; v != nil {
		v.sources[s.ID] = until
		return b.result(c, false), nil
	}
	c.visitors[key] = &visitor{v: s.Visitor, sources: map[string]time.Time{s.ID: until}}
	c.countToday(key, s.Visitor)
	b.publishPresence(c, streams.TypeVisitorJoined, now)
	return b.result(c, true), nil
}

// Leave ends one source of v. When it was the visitor's last, it publishes
// visitor_left. An unknown visitor or source changes nothing.
func (b *Bus) Leave(ctx context.Context, community string, v streams.Visitor, sourceID string) (streams.PresenceResult, error) {
	if err := b.check(ctx); err != nil {
		return streams.PresenceResult{}, err
	}
	c := b.lookup(community)
	if c == nil {
		return streams.PresenceResult{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := b.now()
	b.settle(c, now)
	key := v.Key()
	vis := c.visitors[key]
	if vis == nil {
		return b.result(c, false), nil
	}
	if _, ok := vis.sources[sourceID]; !ok {
		return b.result(c, false), nil
	}
	delete(vis.sources, sourceID)
	if len(vis.sources) > 0 {
		return b.result(c, false), nil
	}
	delete(c.visitors, key)
	b.publishPresence(c, streams.TypeVisitorLeft, now)
	return b.result(c, true), nil
}

// Snapshot returns community's present count and today's figures.
func (b *Bus) Snapshot(ctx context.Context, community string) (streams.Snapshot, error) {
	if err := b.check(ctx); err != nil {
		return streams.Snapshot{}, err
	}
	c := b.lookup(community)
	if c == nil {
		return streams.Snapshot{Community: community}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b.settle(c, b.now())
	return streams.Snapshot{
		Community: c.id,
		Count:     len(c.visitors),
		Today:     c.todayFig,
		Peak:      c.peak,
		Seq:       c.seq,
		LastID:    b.lastID(c),
		Changed:   c.changed,
	}, nil
}
