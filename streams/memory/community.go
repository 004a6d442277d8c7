package memory

import (
	"cmp"
	"container/heap"
	"strings"
	"sync"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/internal/delivery"
)

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
