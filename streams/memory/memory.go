// Package memory is footfall's embedded, single-node implementation of
// streams.Bus: events, history, presence, today's visitors and sessions all
// live in this process's memory and die with it.
//
// Concurrency, in short:
//
//   - Each community has its own mutex (community.mu) that guards its
//     sequence number, history, present visitors and today's figures. Every
//     change of presence and the event that announces it happen under that
//     one lock, so events and figures can never disagree.
//   - Handlers are never called under any of the bus's state locks. Events
//     are appended, in Seq order and still under community.mu, to one
//     FIFO queue; one delivery goroutine owned by the Bus drains it and
//     calls the handlers. See deliveryQueue for why.
//   - Sessions have their own mutex; revocations travel through the same
//     delivery goroutine.
//   - A reaper goroutine ends expired sources, rolls days over, trims
//     history and forgets old session records.
//
// Close stops both goroutines and waits for them.
package memory

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/internal/delivery"
)

// Defaults and limits of Options.
const (
	defaultReapInterval = 250 * time.Millisecond
	defaultHistorySize  = 100
	defaultHistoryAge   = 5 * time.Minute
	// MaxHistory bounds the history of one community whatever the other
	// rules say, so that a burst cannot grow memory without limit.
	MaxHistory = 10_000
	// sessionRetention is how long a session is remembered after its
	// expiry, revoked or not, so that Session can tell "revoked" and
	// "expired" from "never existed".
	sessionRetention = 24 * time.Hour
)

// Options configures a Bus. The zero value is usable.
type Options struct {
	// Clock tells the time (default streams.SystemClock).
	Clock streams.Clock
	// Location defines "today" (default UTC).
	Location *time.Location
	// ReapInterval is how often expired sources are ended (default 250ms).
	ReapInterval time.Duration
	// HistorySize is the number of events each community keeps at least
	// (default 100, at most MaxHistory).
	HistorySize int
	// HistoryAge is how long each event is kept at least (default 5m),
	// as long as the community holds no more than MaxHistory events.
	HistoryAge time.Duration
	// Webhooks, when set, is where the bus queues webhook events (its
	// zero value is ready; docs/protocol.md, webhooks). Nil: none are
	// queued and the outbox costs nothing.
	Webhooks *Outbox
}

func (o Options) withDefaults() Options {
	if o.Clock == nil {
		o.Clock = streams.SystemClock{}
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.ReapInterval <= 0 {
		o.ReapInterval = defaultReapInterval
	}
	if o.HistorySize <= 0 {
		o.HistorySize = defaultHistorySize
	}
	o.HistorySize = min(o.HistorySize, MaxHistory)
	if o.HistoryAge <= 0 {
		o.HistoryAge = defaultHistoryAge
	}
	return o
}

// Bus is the in-memory streams.Bus. Create it with New; Close it when done.
type Bus struct {
	opts  Options
	epoch string // prefix of every event id, random per Bus

	closed atomic.Bool
	stop   chan struct{} // closed by Close: the goroutines' stop signal
	wg     sync.WaitGroup
	once   sync.Once

	queue *delivery.Queue[item]

	mu    sync.RWMutex // guards comms (the map, not the communities)
	comms map[string]*community

	sessMu   sync.Mutex
	sessions map[string]*sessionRecord
	// sessPruneAt is the earliest time a session record may be forgotten
	// (zero: none to forget), so the reaper does not scan them every tick.
	sessPruneAt time.Time

	revokers delivery.Hooks[string] // OnRevoke
}

var _ streams.Bus = (*Bus)(nil)

// New returns a running Bus. Its goroutines run until Close.
func New(opts Options) *Bus {
	b := &Bus{
		opts:     opts.withDefaults(),
		epoch:    newEpoch(),
		stop:     make(chan struct{}),
		comms:    make(map[string]*community),
		sessions: make(map[string]*sessionRecord),
	}
	b.queue = delivery.New[item]()
	b.wg.Add(2)
	go func() { defer b.wg.Done(); b.deliver() }()
	go func() { defer b.wg.Done(); b.reap() }()
	return b
}

// newEpoch returns 8 random base32 characters: ids of a previous Bus (an
// earlier process) never match this one's, so a client resuming with an
// old id gets a snapshot instead of a wrong replay.
func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// check returns ErrClosed after Close, else the context's error.
func (b *Bus) check(ctx context.Context) error {
	if b.closed.Load() {
		return streams.ErrClosed
	}
	return ctx.Err()
}

func (b *Bus) now() time.Time { return b.opts.Clock.Now() }

// stamp is the time of an event published at now: whole seconds, UTC
// (docs/protocol.md, fine print, "Timestamps").
func stamp(now time.Time) time.Time { return now.UTC().Truncate(time.Second) }

// Ping returns nil unless the bus is closed: memory is always reachable.
func (b *Bus) Ping(ctx context.Context) error { return b.check(ctx) }

// Close stops the delivery and reaper goroutines and waits for them. Events
// still queued are dropped: once Close returns, no handler runs or will
// run (so a handler must not call Close: it would wait for itself). Close
// is idempotent and always returns nil; every other method returns
// streams.ErrClosed afterwards.
func (b *Bus) Close() error {
	b.once.Do(func() {
		b.closed.Store(true)
		close(b.stop)
		b.wg.Wait()
	})
	return nil
}

// Pending is the number of events and revocations waiting for the delivery
// goroutine. Handlers do not block, so it stays near zero; a growing value
// means a handler broke that rule (export it as a metric).
func (b *Bus) Pending() int { return b.queue.Len() }

// ---------------------------------------------------------------------------
// Communities

// community is the state of one community. Communities are never forgotten
// once created: their sequence numbers must not restart while the process
// lives (ids would repeat). An idle community costs its history (at most
// HistorySize events once older than HistoryAge) and a few small maps.
type community struct {
	id string

	// subs are the community's Subscribe handlers, read lock-free by the
	// delivery goroutine.
	subs delivery.Hooks[*streams.Event]

	mu       sync.Mutex
	seq      uint64
	history  []stored // oldest first; seqs are consecutive
	visitors map[string]*visitor
	// nextDeadline is the earliest deadline of a TTL source (zero: none).
	// It may be earlier than the true earliest one (a renewed or left
	// source); the next expire pass then recomputes it.
	nextDeadline time.Time
	// deadlines holds every deadline given to a TTL source, earliest
	// first, so that expire touches only what is due instead of every
	// visitor (with the leave grace, a busy community always has sources
	// about to end). An entry whose source has since been renewed, held or
	// ended no longer matches the source and is dropped when it comes up.
	deadlines deadlineHeap
	dayStart  time.Time           // midnight starting the day of today
	today     map[string]struct{} // keys of today's distinct visitors
	todayFig  streams.Today
	peak      streams.Peak // today's peak count, first reached at
	changed   time.Time
	hist      history // visitor history (history.go)
}

type stored struct {
	e  streams.Event
	at time.Time // when it was stored, by the bus's clock
}

// visitor is a present visitor: one with at least one source.
type visitor struct {
	v streams.Visitor
	// sources maps a source id to its deadline; zero means held.
	sources map[string]time.Time
}

// presentAt reports whether v had a live source at t, assuming all its
// current sources existed then.
func (v *visitor) presentAt(t time.Time) bool {
	for _, d := range v.sources {
		if d.IsZero() || d.After(t) {
			return true
		}
	}
	return false
}

func (b *Bus) lookup(id string) *community {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.comms[id]
}

func (b *Bus) lookupOrCreate(id string) *community {
	if c := b.lookup(id); c != nil {
		return c
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.comms[id]
	if c == nil {
		c = &community{
			id:       id,
			visitors: make(map[string]*visitor),
			today:    make(map[string]struct{}),
		}
		b.comms[id] = c
	}
	return c
}

// settle brings c up to now before any operation on it: it rolls the day
// over if midnight passed since the last operation, ends sources whose
// deadline passed (publishing visitor_left for visitors that leave with
// them) and trims the history. Callers hold c.mu.
//
// The day rolls over before sources expire: every source that exists now
// existed at midnight (an operation since midnight would have settled the
// community then), so whether a visitor was present at midnight follows
// from its sources' deadlines, however late this runs.
//
// Callers read now while holding c.mu, so that the operations on one
// community see the clock move forward; days only ever roll forward, so a
// wall clock stepping back keeps the current day until it catches up.
func (b *Bus) settle(c *community, now time.Time) {
	if mid := streams.Midnight(now, b.opts.Location); mid.After(c.dayStart) {
		c.rollDay(mid)
	}
	if !c.nextDeadline.IsZero() && !now.Before(c.nextDeadline) {
		b.expire(c, now)
	}
	b.trimHistory(c, now)
}

// rollDay starts the day that begins at mid with every visitor present at
// mid (docs/protocol.md, fine print: a visitor present at midnight counts for the new
// day too). The previous day is dropped.
func (c *community) rollDay(mid time.Time) {
	first := c.dayStart.IsZero()
	before := c.todayFig
	clear(c.today)
	c.todayFig = streams.Today{}
	for key, v := range c.visitors {
		if v.presentAt(mid) {
			c.countToday(key, v.v)
		}
	}
	c.dayStart = mid
	// The new day's peak so far: the visitors present at midnight.
	c.peak = streams.Peak{Count: c.todayFig.Total(), At: mid.Unix()}
	c.startDay(mid)
	if !first && c.todayFig != before {
		c.changed = stamp(mid)
	}
}

func (c *community) countToday(key string, v streams.Visitor) {
	if _, ok := c.today[key]; ok {
		return
	}
	c.today[key] = struct{}{}
	if v.Authenticated {
		c.todayFig.Authenticated++
	} else {
		c.todayFig.Anonymous++
	}
}

// expire ends the sources of c whose deadline is not after now and
// publishes visitor_left for each visitor left without a source, in the
// order their last source expired (visitor keys breaking ties). It pops
// the due deadlines only: its cost is what expires, not the community's
// size.
func (b *Bus) expire(c *community, now time.Time) {
	for len(c.deadlines) > 0 && !now.Before(c.deadlines[0].at) {
		d := heap.Pop(&c.deadlines).(deadline)
		v := c.visitors[d.key]
		if v == nil {
			continue
		}
		if at, ok := v.sources[d.id]; !ok || !at.Equal(d.at) {
			continue // renewed, held or ended since
		}
		delete(v.sources, d.id)
		if len(v.sources) == 0 {
			delete(c.visitors, d.key)
			b.publishPresence(c, streams.TypeVisitorLeft, now)
		}
	}
	c.nextDeadline = time.Time{}
	if len(c.deadlines) > 0 {
		c.nextDeadline = c.deadlines[0].at
	}
}

// deadline is a TTL source's deadline in the community's deadlines.
type deadline struct {
	at      time.Time
	key, id string // the visitor's key and the source's id
}

// deadlineHeap orders deadlines earliest first (container/heap), then by
// visitor key and source id, so that visitors leaving together leave in
// a stable order.
type deadlineHeap []deadline

func (h deadlineHeap) Len() int { return len(h) }
func (h deadlineHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return cmp.Or(strings.Compare(h[i].key, h[j].key), strings.Compare(h[i].id, h[j].id)) < 0
}
func (h deadlineHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)   { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = deadline{}
	*h = old[:len(old)-1]
	return d
}

// trimHistory drops the oldest events of c while it holds more than
// MaxHistory, or more than HistorySize and the oldest is older than
// HistoryAge: an event stays while either rule keeps it.
func (b *Bus) trimHistory(c *community, now time.Time) {
	oldest := now.Add(-b.opts.HistoryAge)
	n := 0
	for len(c.history)-n > MaxHistory ||
		(len(c.history)-n > b.opts.HistorySize && c.history[n].at.Before(oldest)) {
		n++
	}
	if n > 0 {
		clear(c.history[:n]) // let the dropped events' payloads be collected
		c.history = c.history[n:]
	}
}

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

// lastID is the ID of c's last event, "" if none. Callers hold c.mu.
func (b *Bus) lastID(c *community) string {
	if c.seq == 0 {
		return ""
	}
	return b.epoch + "-" + strconv.FormatUint(c.seq, 10)
}

func (b *Bus) result(c *community, changed bool) streams.PresenceResult {
	return streams.PresenceResult{Count: len(c.visitors), Changed: changed, Seq: c.seq, ID: b.lastID(c), Today: c.todayFig, Peak: c.peak}
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

// ---------------------------------------------------------------------------
// Reaper

// reap is the reaper goroutine. It exits when Close closes b.stop.
func (b *Bus) reap() {
	t := time.NewTicker(b.opts.ReapInterval)
	defer t.Stop()
	var comms []*community
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		comms = comms[:0]
		b.mu.RLock()
		for _, c := range b.comms {
			comms = append(comms, c)
		}
		b.mu.RUnlock()
		for _, c := range comms {
			c.mu.Lock()
			b.settle(c, b.now())
			c.mu.Unlock()
		}
		clear(comms)
		b.pruneSessions(b.now())
	}
}
