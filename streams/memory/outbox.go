package memory

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/footfall/footfall/streams"
)

// Outbox is the memory bus's webhook outbox (Options.Webhooks): the events
// the delivery engine claims, in this process's memory. Its zero value is
// ready to use. The Bus implements streams.WebhookOutbox on top of it.
type Outbox struct {
	mu      sync.Mutex
	events  map[string]*queued // by id
	perComm map[string]int     // pending events per community
	// seen are the ids EnqueueWebhook queued, with when, so that the same
	// id is not queued twice within streams.WebhookRetention.
	seen     map[string]time.Time
	seenTrim time.Time
	// visited: day -> communities with visitors on that day.
	visited map[string]map[string]struct{}
	walks   map[string]walk // by day
	wake    chan struct{}
}

type queued struct {
	e    streams.WebhookEvent
	due  time.Time
	born time.Time
}

type walk struct {
	done  bool
	until time.Time
}

// maxWebhooks bounds the events the memory outbox holds in all.
const maxWebhooks = 100_000

func (o *Outbox) init() {
	if o.events == nil {
		o.events = make(map[string]*queued)
		o.perComm = make(map[string]int)
		o.seen = make(map[string]time.Time)
		o.visited = make(map[string]map[string]struct{})
		o.walks = make(map[string]walk)
		o.wake = make(chan struct{}, 1)
	}
}

// add queues e, due at now. Callers hold o.mu.
func (o *Outbox) add(e streams.WebhookEvent, now time.Time) bool {
	o.init()
	if _, ok := o.events[e.ID]; ok || len(o.events) >= maxWebhooks || o.perComm[e.Community] >= streams.MaxWebhooksPerCommunity {
		return false
	}
	o.events[e.ID] = &queued{e: e, due: now, born: now}
	o.perComm[e.Community]++
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

func (o *Outbox) remove(id string) {
	if q, ok := o.events[id]; ok {
		delete(o.events, id)
		if o.perComm[q.e.Community]--; o.perComm[q.e.Community] <= 0 {
			delete(o.perComm, q.e.Community)
		}
	}
}

// note records that community had visitors on day. Callers hold o.mu.
func (o *Outbox) note(community, day string) {
	o.init()
	set := o.visited[day]
	if set == nil {
		// A new day: forget the days the walks are done with.
		for d := range o.visited {
			if d < day && o.walks[d].done {
				delete(o.visited, d)
			}
		}
		set = make(map[string]struct{})
		o.visited[day] = set
	}
	set[community] = struct{}{}
}

// outboxPresence queues the webhook events of a change of c's present
// count from old to n at now (docs/protocol.md, webhooks): occupied on 0 to
// more, vacated on more to 0. The presence layer lowers the count only
// when the leave grace ran out, so vacated waits it out. Callers hold c.mu.
func (b *Bus) outboxPresence(c *community, old, n int, now time.Time) {
	o := b.opts.Webhooks
	if o == nil {
		return
	}
	typ := ""
	switch {
	case old == 0 && n > 0:
		typ = streams.WebhookOccupied
	case old > 0 && n == 0:
		typ = streams.WebhookVacated
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n > 0 {
		o.note(c.id, streams.Day(now, b.opts.Location))
	}
	if typ == "" {
		return
	}
	// The id of the presence event that announces the change (the next
	// seq), prefixed with the community: unique in the process.
	o.add(streams.WebhookEvent{
		ID:        streams.WebhookID(c.id, b.epoch+"-"+strconv.FormatUint(c.seq+1, 10)),
		Type:      typ,
		Community: c.id,
		Time:      stamp(now),
		Data:      json.RawMessage(`{"count":` + strconv.Itoa(n) + `}`),
	}, now)
}

var _ streams.WebhookOutbox = (*Bus)(nil)

func (b *Bus) outbox(ctx context.Context) (*Outbox, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if b.opts.Webhooks == nil {
		return nil, streams.ErrWebhooksOff
	}
	return b.opts.Webhooks, nil
}

// ClaimWebhooks implements streams.WebhookOutbox: the earliest due first.
func (b *Bus) ClaimWebhooks(ctx context.Context, now time.Time, n int, lease time.Duration) ([]streams.WebhookEvent, error) {
	o, err := b.outbox(ctx)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var due []*queued
	for _, q := range o.events {
		if !q.due.After(now) {
			due = append(due, q)
		}
	}
	slices.SortFunc(due, func(x, y *queued) int { return x.due.Compare(y.due) })
	var out []streams.WebhookEvent
	for _, q := range due[:min(n, len(due))] {
		q.due = now.Add(lease)
		out = append(out, q.e)
	}
	return out, nil
}

// DoneWebhook implements streams.WebhookOutbox.
func (b *Bus) DoneWebhook(ctx context.Context, e streams.WebhookEvent) error {
	o, err := b.outbox(ctx)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	o.remove(e.ID)
	return nil
}

// RetryWebhook implements streams.WebhookOutbox.
func (b *Bus) RetryWebhook(ctx context.Context, e streams.WebhookEvent, at time.Time, attempts int) error {
	o, err := b.outbox(ctx)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	if q, ok := o.events[e.ID]; ok {
		q.due, q.e.Attempts = at, attempts
	}
	return nil
}

// EnqueueWebhook implements streams.WebhookOutbox.
func (b *Bus) EnqueueWebhook(ctx context.Context, e streams.WebhookEvent) error {
	o, err := b.outbox(ctx)
	if err != nil {
		return err
	}
	now := b.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	if now.Sub(o.seenTrim) > time.Hour {
		o.seenTrim = now
		for id, t := range o.seen {
			if now.Sub(t) > streams.WebhookRetention {
				delete(o.seen, id)
			}
		}
	}
	if _, ok := o.seen[e.ID]; ok {
		return nil
	}
	if o.add(e, now) {
		o.seen[e.ID] = now
	}
	return nil
}

// VisitedCommunities implements streams.WebhookOutbox: the communities
// that had a change with visitors present on day, and those with visitors
// now (present since before the day, maybe: the engine skips a community
// whose day shows nobody).
func (b *Bus) VisitedCommunities(ctx context.Context, day string) ([]string, error) {
	o, err := b.outbox(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	o.mu.Lock()
	for c := range o.visited[day] {
		set[c] = struct{}{}
	}
	o.mu.Unlock()
	b.mu.RLock()
	comms := make([]*community, 0, len(b.comms))
	for _, c := range b.comms {
		comms = append(comms, c)
	}
	b.mu.RUnlock()
	for _, c := range comms {
		c.mu.Lock()
		if len(c.visitors) > 0 {
			set[c.id] = struct{}{}
		}
		c.mu.Unlock()
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out, nil
}

// SummaryWalk implements streams.WebhookOutbox.
func (b *Bus) SummaryWalk(ctx context.Context, day string, lease time.Duration) (streams.SummaryWalk, error) {
	o, err := b.outbox(ctx)
	if err != nil {
		return 0, err
	}
	now := b.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	w := o.walks[day]
	switch {
	case w.done:
		return streams.WalkDone, nil
	case now.Before(w.until):
		return streams.WalkBusy, nil
	}
	o.walks[day] = walk{until: now.Add(lease)}
	return streams.WalkMine, nil
}

// FinishSummaryWalk implements streams.WebhookOutbox.
func (b *Bus) FinishSummaryWalk(ctx context.Context, day string) error {
	o, err := b.outbox(ctx)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	o.walks[day] = walk{done: true}
	for d, w := range o.walks {
		if d < day && w.done {
			delete(o.walks, d)
			delete(o.visited, d)
		}
	}
	return nil
}

// OutboxStats implements streams.WebhookOutbox.
func (b *Bus) OutboxStats(ctx context.Context) (streams.OutboxStats, error) {
	o, err := b.outbox(ctx)
	if err != nil {
		return streams.OutboxStats{}, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var s streams.OutboxStats
	for _, q := range o.events {
		s.Pending++
		if s.Oldest.IsZero() || q.born.Before(s.Oldest) {
			s.Oldest = q.born
		}
	}
	return s, nil
}

// WebhookWake implements streams.WebhookWaker.
func (b *Bus) WebhookWake() <-chan struct{} {
	o := b.opts.Webhooks
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	return o.wake
}
