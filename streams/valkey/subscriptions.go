package valkey

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/internal/delivery"
)

// ---------------------------------------------------------------------------
// Subscription loops

// loop keeps one pub/sub subscription alive: its goroutine calls
// valkey-go's Receive, and calls it again (with backoff) when a connection
// drops, until the loop is stopped.
type loop struct {
	channel string
	sharded bool

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine exits

	ready     chan struct{} // closed at the first confirmation, or on failure
	readyOnce sync.Once
	failure   error // why the first attempt failed; written before ready closes

	confirms  atomic.Int64
	connected atomic.Bool
	stopping  atomic.Bool
	// resubscribes counts confirmations after the first (the bus's
	// BusStats.Resubscribes); set by startLoop.
	resubscribes *atomic.Uint64

	// onMessage runs on the loop's goroutine inside Receive; it must not
	// block (valkey-go's reader waits for it once 16 messages are queued).
	onMessage func(valkey.PubSubMessage)
	// onResubscribed runs on valkey-go's reader goroutine after every
	// confirmation but the first; it must not block.
	onResubscribed func()
	// onExit runs on the loop's goroutine as it exits.
	onExit func()
}

// err returns why the loop failed to subscribe the first time, once ready.
func (l *loop) err() error {
	select {
	case <-l.ready:
		return l.failure
	default:
		return nil
	}
}

func (l *loop) subscribe(c valkey.Client) valkey.Completed {
	if l.sharded {
		return c.B().Ssubscribe().Channel(l.channel).Build()
	}
	return c.B().Subscribe().Channel(l.channel).Build()
}

func (l *loop) unsubscribe(c valkey.Client) valkey.Completed {
	if l.sharded {
		return c.B().Sunsubscribe().Channel(l.channel).Build()
	}
	return c.B().Unsubscribe().Channel(l.channel).Build()
}

// onSubscription is valkey-go's confirmation hook (reader goroutine).
func (l *loop) onSubscription(s valkey.PubSubSubscription) {
	if s.Kind != "subscribe" && s.Kind != "ssubscribe" {
		return
	}
	l.connected.Store(true)
	if l.confirms.Add(1) == 1 {
		l.readyOnce.Do(func() { close(l.ready) })
		return
	}
	if l.resubscribes != nil {
		l.resubscribes.Add(1)
	}
	if l.onResubscribed != nil {
		l.onResubscribed()
	}
}

// onReturn is valkey-go's hook as Receive returns (on the loop's
// goroutine, with a client bound to the subscription's connection): a loop
// stopped by cancellation rather than by its unsubscription (see stopLoop)
// unsubscribes there, so that no subscription outlives it on the server.
func (l *loop) onReturn(err error, c valkey.CommandClient) error {
	if err != nil && l.stopping.Load() && l.ctx.Err() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		cmd := c.B().Sunsubscribe().Channel(l.channel).Build()
		if !l.sharded {
			cmd = c.B().Unsubscribe().Channel(l.channel).Build()
		}
		_ = c.Do(ctx, cmd).Error()
	}
	return err
}

// startLoop starts a loop. Callers make sure the bus is not closed (the
// wait group must not grow once Close waits on it).
func (b *Bus) startLoop(l *loop) *loop {
	l.ctx, l.cancel = context.WithCancel(b.life)
	l.done, l.ready = make(chan struct{}), make(chan struct{})
	l.resubscribes = &b.counters.resubscribes
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.runLoop(l)
	}()
	return l
}

// runLoop is a loop's goroutine. It exits when the loop's context ends,
// when it was stopped, or when its very first attempt failed (the caller
// is waiting to hear it).
func (b *Bus) runLoop(l *loop) {
	defer close(l.done)
	defer l.cancel()
	if l.onExit != nil {
		defer l.onExit()
	}
	defer l.readyOnce.Do(func() { // ended before it ever subscribed
		l.failure = streams.ErrClosed
		close(l.ready)
	})
	var bo backoff
	for !l.stopping.Load() && l.ctx.Err() == nil {
		before := l.confirms.Load()
		ctx := valkey.WithOnSubscriptionHook(l.ctx, l.onSubscription)
		ctx = valkey.WithOnReceiveReturnHook(ctx, l.onReturn)
		err := b.client.Receive(ctx, l.subscribe(b.client), l.onMessage)
		l.connected.Store(false)
		if l.stopping.Load() || l.ctx.Err() != nil {
			return
		}
		if l.confirms.Load() == 0 {
			if err == nil {
				err = errors.New("subscription ended before it was confirmed")
			}
			l.failure = err
			l.readyOnce.Do(func() { close(l.ready) })
			return
		}
		if l.confirms.Load() > before {
			bo.reset()
		}
		if err != nil {
			b.log.Warn("valkey: subscription dropped", "channel", l.channel, "err", err)
			b.markLost()
		}
		// (nil: the server ended the subscription, a slot moved.) Either
		// way subscribe again; what was missed meanwhile is read from the
		// history once the subscription is confirmed.
		t := time.NewTimer(bo.next())
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stopLoop ends a loop: it unsubscribes on the loop's connection (so that
// Receive returns after draining what it got) and then cancels it. It does
// so on its own goroutine: cancel functions must not wait for Valkey.
// Callers hold b.topicsMu, which Close takes before it waits for the
// goroutines.
func (b *Bus) stopLoop(l *loop) {
	l.stopping.Store(true)
	if b.closed.Load() {
		l.cancel()
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer l.cancel()
		ctx, cancel := context.WithTimeout(l.ctx, time.Second)
		defer cancel()
		_ = b.client.Do(ctx, l.unsubscribe(b.client)).Error()
	}()
}

// ---------------------------------------------------------------------------
// Topics: a node's subscription to one community

// topic is the node's subscription to one community's channel, shared by
// the community's local Subscribe calls.
type topic struct {
	community string
	loop      *loop
	refs      int // guarded by Bus.topicsMu

	subs delivery.List[*subscription] // the community's Subscribe calls

	// The stream state: the epoch and seq of the last event queued for
	// delivery, so that duplicates are dropped and gaps noticed.
	mu        sync.Mutex
	baselined bool // the first Subscribe set epoch/last from Valkey
	epoch     string
	last      uint64
	maxSeen   uint64   // the highest seq ever queued (the floor after a data loss)
	repairing bool     // a history read fills a gap; pending waits for it
	pending   []framed // events received while repairing
}

// acquireTopic returns the running topic of community, starting it if
// needed, once its subscription is confirmed.
func (b *Bus) acquireTopic(ctx context.Context, community string) (*topic, error) {
	for {
		b.topicsMu.Lock()
		if b.closed.Load() {
			b.topicsMu.Unlock()
			return nil, streams.ErrClosed
		}
		t := b.topics[community]
		if t != nil && t.loop.stopping.Load() {
			// The last subscriber just left; wait for that subscription
			// to end (its loop then removes it) before taking a new one:
			// two on one channel would unsubscribe each other.
			b.topicsMu.Unlock()
			select {
			case <-t.loop.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		if t == nil {
			t = b.newTopic(community)
			b.topics[community] = t
		}
		t.refs++
		b.topicsMu.Unlock()

		select {
		case <-t.loop.ready:
		case <-ctx.Done():
			b.releaseTopic(t)
			return nil, ctx.Err()
		}
		if err := t.loop.err(); err != nil {
			b.releaseTopic(t)
			return nil, fmt.Errorf("valkey: subscribe: %w", err)
		}
		return t, nil
	}
}

// newTopic starts the subscription of a topic. Callers hold b.topicsMu
// and checked that the bus is not closed.
func (b *Bus) newTopic(community string) *topic {
	t := &topic{community: community}
	t.loop = b.startLoop(&loop{
		channel:        eventChannel(community),
		sharded:        true,
		onMessage:      func(m valkey.PubSubMessage) { b.onTopicMessage(t, m) },
		onResubscribed: func() { b.onTopicResubscribed(t) },
		// The entry stays in b.topics until the loop is done (stopped, or
		// failed at first); acquireTopic waits for a stopping one.
		onExit: func() {
			b.topicsMu.Lock()
			if b.topics[community] == t {
				delete(b.topics, community)
			}
			b.topicsMu.Unlock()
		},
	})
	return t
}

// releaseTopic drops one reference to t; the last one unsubscribes.
func (b *Bus) releaseTopic(t *topic) {
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	t.refs--
	if t.refs == 0 && t.loop.err() == nil {
		b.stopLoop(t.loop)
	}
}

// onTopicMessage is the receive callback of a topic (the loop's goroutine,
// inside valkey-go's Receive): it parses and queues, never blocks.
func (b *Bus) onTopicMessage(t *topic, m valkey.PubSubMessage) {
	f, err := parsePayload(t.community, m.Message)
	if err != nil {
		b.log.Warn("valkey: drop malformed event", "community", t.community, "err", err)
		return
	}
	t.mu.Lock()
	b.acceptLocked(t, f)
	t.mu.Unlock()
}

// acceptLocked queues f for delivery unless it is a duplicate; a gap starts
// a repair. Callers hold t.mu, so a community's events are queued in order.
func (b *Bus) acceptLocked(t *topic, f framed) {
	switch {
	case t.repairing:
		t.pending = append(t.pending, f)
		return
	case f.epoch != t.epoch || t.last == 0:
		// The first event, or the first of a new epoch (Valkey lost its
		// data): a new baseline.
	case f.e.Seq <= t.last:
		return // duplicate
	case f.e.Seq > t.last+1:
		t.repairing = true
		t.pending = append(t.pending, f)
		b.requestRepair(t)
		return
	}
	t.epoch, t.last = f.epoch, f.e.Seq
	t.maxSeen = max(t.maxSeen, f.e.Seq)
	b.queue.Push(item{t: t, f: f})
}

// onTopicResubscribed runs when a topic's subscription is back after a
// drop: events published meanwhile are read from the history.
func (b *Bus) onTopicResubscribed(t *topic) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.repairing && t.last > 0 {
		t.repairing = true
		b.requestRepair(t)
	}
}

func (b *Bus) requestRepair(t *topic) {
	b.repairMu.Lock()
	b.repairs[t] = struct{}{}
	b.repairMu.Unlock()
	select {
	case b.repairWake <- struct{}{}:
	default:
	}
}

// repair is the goroutine that fills gaps from the history. It exits when
// Close closes b.stop.
func (b *Bus) repair() {
	for {
		select {
		case <-b.stop:
			return
		case <-b.repairWake:
		}
		b.repairMu.Lock()
		ts := make([]*topic, 0, len(b.repairs))
		for t := range b.repairs {
			ts = append(ts, t)
		}
		clear(b.repairs)
		b.repairMu.Unlock()
		for _, t := range ts {
			b.repairTopic(t)
		}
	}
}

func (b *Bus) repairTopic(t *topic) {
	t.mu.Lock()
	epoch, after := t.epoch, t.last
	t.mu.Unlock()
	var fs []framed
	ok := false
	if after > 0 {
		ctx, cancel := b.bgContext()
		var err error
		fs, ok, err = b.history(ctx, t.community, epoch, after, 0)
		cancel()
		if err != nil {
			b.log.Warn("valkey: read missed events", "community", t.community, "err", err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	pending := t.pending
	t.pending, t.repairing = nil, false
	if ok {
		for _, f := range fs {
			b.acceptLocked(t, f)
		}
	} else {
		// The missed events are gone (or unreadable): carry on from what
		// arrived. The OnReconnect hooks make the gateway re-read state.
		t.last = 0
	}
	for _, f := range pending {
		b.acceptLocked(t, f)
	}
}
