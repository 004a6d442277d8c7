package streams

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Local event types a Hub sends to its subscribers; they never travel on
// the bus.
const (
	// TypeRefresh tells subscribers that the community's state was re-read
	// from the bus (the periodic dashboard push, or a bus reconnect): send
	// the client a fresh snapshot.
	TypeRefresh = "refresh"
)

// Subscriber is a local client of a community: a WebSocket or SSE
// connection. Deliver is called from the Hub's fanout and must not block:
// it records the event (a count is state and replaces a pending one) and
// wakes the client's writer.
type Subscriber interface {
	Deliver(e *Event)
}

// Hub is a node's local fanout. It holds one bus subscription per community
// that has local subscribers (taken with the first, dropped after the
// last), keeps the community's latest state from the events it sees, and
// hands every event to each local subscriber.
type Hub struct {
	bus Bus
	log *slog.Logger

	mu     sync.Mutex
	topics map[string]*topic

	// fanoutObserver, if set, is told how long each fanout took.
	fanoutObserver func(time.Duration)
}

// ObserveFanout sets a function told the duration of every fanout (for
// metrics). Call it before the first Join.
func (h *Hub) ObserveFanout(f func(time.Duration)) { h.fanoutObserver = f }

// PresentTotal sums the present counts of the communities the node holds.
func (h *Hub) PresentTotal() int {
	h.mu.Lock()
	ts := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		ts = append(ts, t)
	}
	h.mu.Unlock()
	total := 0
	for _, t := range ts {
		t.mu.RLock()
		total += t.state.Count
		t.mu.RUnlock()
	}
	return total
}

// NewHub returns a Hub over bus.
func NewHub(bus Bus, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{bus: bus, log: log, topics: make(map[string]*topic)}
}

// topic is one community's local state. Fanout takes only the topic's read
// lock, so communities never contend with each other and a slow community
// cannot hold back another.
type topic struct {
	community string
	hub       *Hub
	ready     chan struct{} // closed once subscribed and loaded
	err       error         // set before ready is closed if loading failed
	refs      int           // guarded by Hub.mu
	cancel    func()        // bus subscription; set before ready closes

	mu     sync.RWMutex
	subs   map[Subscriber]struct{}
	state  Snapshot
	settle *time.Timer // pending fold of resync events; guarded by mu
	closed bool        // released: arm no timer; guarded by mu
}

// ResyncSettle is how long a Hub folds resync events (Event.Resync: nodes
// re-registering their visitors after Valkey lost its data) before it
// tells its subscribers the community's state: long enough for every node
// to re-register (a node retries within a second), so that clients see
// one change to the true count rather than each node's partial view.
var ResyncSettle = 1500 * time.Millisecond

// Join adds sub to community's local subscribers, subscribing the node to
// the community on the bus if it is the first. It returns the community's
// state as the node knows it and a leave function, which the caller must
// call exactly once when the subscriber goes away.
func (h *Hub) Join(ctx context.Context, community string, sub Subscriber) (leave func(), state Snapshot, err error) {
	t, err := h.acquire(ctx, community)
	if err != nil {
		return nil, Snapshot{}, err
	}
	t.mu.Lock()
	t.subs[sub] = struct{}{}
	state = t.state
	t.mu.Unlock()
	var once sync.Once
	leave = func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.subs, sub)
			t.mu.Unlock()
			h.release(t)
		})
	}
	return leave, state, nil
}

// State returns the node's view of community if it holds one.
func (h *Hub) State(community string) (Snapshot, bool) {
	h.mu.Lock()
	t := h.topics[community]
	h.mu.Unlock()
	if t == nil {
		return Snapshot{}, false
	}
	select {
	case <-t.ready:
	default:
		return Snapshot{}, false
	}
	if t.err != nil {
		return Snapshot{}, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.state, true
}

// Observe folds a presence result the caller obtained from the bus into the
// node's state, so that a subscriber that joined sees its own change even if
// the bus delivers the event a moment later.
func (h *Hub) Observe(community string, r PresenceResult, at time.Time) {
	h.mu.Lock()
	t := h.topics[community]
	h.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	if r.Seq > t.state.Seq {
		t.state.Seq = r.Seq
		t.state.LastID = r.ID
		if t.state.Count != r.Count || t.state.Today != r.Today {
			t.state.Changed = at.UTC().Truncate(time.Second)
		}
		t.state.Count = r.Count
		t.state.Today = r.Today
		t.state.Peak = r.Peak
	}
	t.mu.Unlock()
}

// refreshConcurrency bounds the snapshots Refresh has in flight: a bus
// with a server (Valkey) pipelines them, so a node with thousands of
// communities refreshes in a fraction of the round trips one after another
// would take.
const refreshConcurrency = 32

// Refresh re-reads the state of every community with local subscribers
// from the bus and sends each subscriber a TypeRefresh event. The periodic
// dashboard push calls it, and the server after a bus outage. It returns
// when every community is done or ctx ends.
func (h *Hub) Refresh(ctx context.Context) {
	h.mu.Lock()
	ts := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		ts = append(ts, t)
	}
	h.mu.Unlock()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failed   int
		firstErr error
	)
	sem := make(chan struct{}, refreshConcurrency)
loop:
	for _, t := range ts {
		select {
		case <-t.ready:
		default:
			continue
		}
		if t.err != nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := h.refresh(ctx, t); err != nil {
				mu.Lock()
				if failed++; firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		h.log.Warn("refresh community state", "failed", failed, "communities", len(ts), "err", firstErr)
	}
}

// refresh re-reads one community's state and tells its subscribers.
func (h *Hub) refresh(ctx context.Context, t *topic) error {
	snap, err := h.bus.Snapshot(ctx, t.community)
	if err != nil {
		return err
	}
	t.mu.Lock()
	if snap.Changed.IsZero() {
		snap.Changed = t.state.Changed
	}
	if snap.Seq >= t.state.Seq {
		t.state = snap
	}
	if t.settle != nil {
		// Resync events are being folded: their timer tells.
		t.mu.Unlock()
		return nil
	}
	ev := &Event{Type: TypeRefresh, Community: t.community, Seq: t.state.Seq, Count: t.state.Count, Today: t.state.Today, Peak: t.state.Peak, Time: time.Now()}
	t.mu.Unlock()
	t.dispatch(ev)
	return nil
}

// loadTimeout bounds the subscription and snapshot of a community that
// its first joiner starts.
const loadTimeout = 10 * time.Second

func (h *Hub) acquire(ctx context.Context, community string) (*topic, error) {
	h.mu.Lock()
	t := h.topics[community]
	if t == nil {
		t = &topic{hub: h, community: community, ready: make(chan struct{}), subs: make(map[Subscriber]struct{})}
		h.topics[community] = t
		t.refs++
		h.mu.Unlock()
		// The community is loaded on the hub's behalf, not the first
		// caller's: every joiner waits for it, and the first one's request
		// ending must not fail the others. The goroutine ends when the load
		// does, within loadTimeout.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		go func() {
			defer cancel()
			h.load(lctx, t)
		}()
	} else {
		t.refs++
		h.mu.Unlock()
	}
	select {
	case <-t.ready:
	case <-ctx.Done():
		h.release(t)
		return nil, ctx.Err()
	}
	if t.err != nil {
		h.release(t)
		return nil, t.err
	}
	return t, nil
}

// load subscribes t to the bus, then reads its snapshot; events that arrive
// in between are applied by sequence number, so none is lost or applied
// twice.
func (h *Hub) load(ctx context.Context, t *topic) {
	defer close(t.ready)
	cancel, err := h.bus.Subscribe(ctx, t.community, t.onEvent)
	if err != nil {
		t.err = err
		return
	}
	snap, err := h.bus.Snapshot(ctx, t.community)
	if err != nil {
		cancel()
		t.err = err
		return
	}
	t.cancel = cancel
	if snap.Changed.IsZero() {
		// Nothing ever changed: the figures are as old as this view of
		// them, which keeps REST ETags stable.
		snap.Changed = time.Now().UTC().Truncate(time.Second)
	}
	t.mu.Lock()
	if snap.Seq >= t.state.Seq {
		t.state = snap
	}
	t.mu.Unlock()
}

func (h *Hub) release(t *topic) {
	h.mu.Lock()
	t.refs--
	last := t.refs == 0
	if last && h.topics[t.community] == t {
		delete(h.topics, t.community)
	}
	h.mu.Unlock()
	if last {
		// The bus subscription is dropped outside Hub.mu: cancel waits for
		// the handler, which may be delivering to this very topic.
		select {
		case <-t.ready:
			if t.cancel != nil {
				t.cancel()
			}
			t.mu.Lock()
			t.closed = true
			if t.settle != nil {
				t.settle.Stop()
				t.settle = nil
			}
			t.mu.Unlock()
		default:
			// Still loading: acquire's caller releases after ready.
		}
	}
}

// onEvent is the bus handler: update the state, then fan out. Resync
// events are folded: the subscribers hear of the state ResyncSettle after
// the last of them.
func (t *topic) onEvent(e *Event) {
	t.mu.Lock()
	if e.Seq > t.state.Seq {
		t.state.Seq = e.Seq
		t.state.LastID = e.ID
		if e.IsPresence() {
			t.state.Count = e.Count
			t.state.Today = e.Today
			t.state.Peak = e.Peak
			t.state.Changed = e.Time
		}
	}
	if e.Resync {
		if !t.closed {
			if t.settle == nil {
				t.settle = time.AfterFunc(ResyncSettle, t.settled)
			} else {
				t.settle.Reset(ResyncSettle)
			}
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.dispatch(e)
}

// settled tells the subscribers the state once resync events stopped.
func (t *topic) settled() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.settle = nil
	ev := &Event{Type: TypeRefresh, Community: t.community, Seq: t.state.Seq, Count: t.state.Count, Today: t.state.Today, Peak: t.state.Peak, Time: time.Now()}
	t.mu.Unlock()
	t.dispatch(ev)
}

func (t *topic) dispatch(e *Event) {
	var start time.Time
	if t.hub.fanoutObserver != nil {
		start = time.Now()
	}
	t.mu.RLock()
	for s := range t.subs {
		s.Deliver(e)
	}
	t.mu.RUnlock()
	if t.hub.fanoutObserver != nil {
		t.hub.fanoutObserver(time.Since(start))
	}
}
