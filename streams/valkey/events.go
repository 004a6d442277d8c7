package valkey

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Payloads

// framed is an event as it travels, with the epoch of its id.
type framed struct {
	e     *streams.Event
	epoch string
}

// parsePayload decodes "<seq>:<epoch>:<unix seconds or empty>:<json>".
func parsePayload(community, p string) (framed, error) {
	var parts [3]string
	rest := p
	for i := range parts {
		j := strings.IndexByte(rest, ':')
		if j < 0 {
			return framed{}, fmt.Errorf("valkey: malformed payload %.40q", p)
		}
		parts[i], rest = rest[:j], rest[j+1:]
	}
	seq, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil || seq == 0 || parts[1] == "" {
		return framed{}, fmt.Errorf("valkey: malformed payload %.40q", p)
	}
	e := new(streams.Event)
	if err := json.Unmarshal([]byte(rest), e); err != nil {
		return framed{}, fmt.Errorf("valkey: payload JSON: %w", err)
	}
	e.Seq = seq
	e.ID = parts[1] + "-" + parts[0]
	e.Community = community
	if parts[2] != "" {
		sec, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			return framed{}, fmt.Errorf("valkey: malformed payload time %q", parts[2])
		}
		e.Time = time.Unix(sec, 0).UTC()
	}
	return framed{e: e, epoch: parts[1]}, nil
}

// ---------------------------------------------------------------------------
// Publish and History

// Publish stores e in its community's history and publishes it to every
// node, in one script. Value and Message are copied.
func (b *Bus) Publish(ctx context.Context, e streams.Event) (streams.Event, error) {
	if err := b.check(ctx); err != nil {
		return streams.Event{}, err
	}
	if e.Community == "" {
		return streams.Event{}, errors.New("valkey: publish: empty community")
	}
	now := b.now()
	if e.Time.IsZero() {
		e.Time = stamp(now)
	}
	e.Value = bytes.Clone(e.Value)
	e.Message = bytes.Clone(e.Message)
	e.ID, e.Seq = "", 0
	js, err := json.Marshal(e)
	if err != nil {
		return streams.Event{}, fmt.Errorf("valkey: publish: %w", err)
	}
	vals, err := b.s.publish.exec(ctx, b.client, []string{metaKey(e.Community)}, append(b.common(now), string(js))).ToArray()
	if err != nil {
		return streams.Event{}, fmt.Errorf("valkey: publish: %w", err)
	}
	if len(vals) != 2 {
		return streams.Event{}, errors.New("valkey: publish: unexpected reply")
	}
	seq, err1 := vals[0].AsUint64()
	epoch, err2 := vals[1].ToString()
	if err := errors.Join(err1, err2); err != nil {
		return streams.Event{}, fmt.Errorf("valkey: publish: %w", err)
	}
	e.Seq = seq
	e.ID = epoch + "-" + strconv.FormatUint(seq, 10)
	return e, nil
}

// History returns the events of community after afterID, oldest first, or
// ok = false when afterID is not an id of the community's current epoch or
// the events after it are no longer all kept.
func (b *Bus) History(ctx context.Context, community, afterID string, limit int) ([]streams.Event, bool, error) {
	if err := b.check(ctx); err != nil {
		return nil, false, err
	}
	i := strings.LastIndexByte(afterID, '-')
	if i <= 0 {
		return nil, false, nil
	}
	after, err := strconv.ParseUint(afterID[i+1:], 10, 64)
	if err != nil || after == 0 {
		return nil, false, nil
	}
	fs, ok, err := b.history(ctx, community, afterID[:i], after, limit)
	if err != nil || !ok {
		return nil, false, err
	}
	events := make([]streams.Event, len(fs))
	for i, f := range fs {
		events[i] = *f.e
	}
	return events, true, nil
}

// history reads the events after seq after of epoch; with limit > 0, ok is
// false (and nothing is read) when more than limit came after it.
func (b *Bus) history(ctx context.Context, community, epoch string, after uint64, limit int) ([]framed, bool, error) {
	vals, err := b.s.history.exec(ctx, b.client, []string{metaKey(community)},
		[]string{epoch, strconv.FormatUint(after, 10), strconv.Itoa(max(limit, 0))}).ToArray()
	if err != nil {
		return nil, false, fmt.Errorf("valkey: history: %w", err)
	}
	if len(vals) == 0 {
		return nil, false, errors.New("valkey: history: empty reply")
	}
	if ok, err := vals[0].AsInt64(); err != nil || ok != 1 {
		return nil, false, err
	}
	fs := make([]framed, 0, len(vals)-1)
	for _, v := range vals[1:] {
		p, err := v.ToString()
		if err != nil {
			return nil, false, fmt.Errorf("valkey: history: %w", err)
		}
		f, err := parsePayload(community, p)
		if err != nil {
			return nil, false, err
		}
		fs = append(fs, f)
	}
	return fs, true, nil
}

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

	subsMu sync.Mutex
	subs   atomic.Pointer[[]*subscription] // copy on write under subsMu

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

func (t *topic) loadSubs() []*subscription {
	if p := t.subs.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *topic) addSub(s *subscription) {
	t.subsMu.Lock()
	defer t.subsMu.Unlock()
	subs := append(slices.Clone(t.loadSubs()), s)
	t.subs.Store(&subs)
}

func (t *topic) removeSub(s *subscription) {
	t.subsMu.Lock()
	defer t.subsMu.Unlock()
	subs := slices.DeleteFunc(slices.Clone(t.loadSubs()), func(x *subscription) bool { return x == s })
	t.subs.Store(&subs)
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

// ---------------------------------------------------------------------------
// Subscribe

// subscription is one Subscribe call.
type subscription struct {
	h streams.Handler

	// mu is held while h runs, so that cancel can wait for a running call.
	mu   sync.Mutex
	done bool
	// live is set by the delivery goroutine once epoch and after are
	// known; events delivered before are kept in buf.
	live  bool
	buf   []framed
	epoch string // the community's epoch at Subscribe ("" if none yet)
	after uint64 // its last seq then: only later events are delivered
}

func (s *subscription) wants(f framed) bool {
	return s.epoch == "" || f.epoch != s.epoch || f.e.Seq > s.after
}

func (s *subscription) deliver(f framed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
	case !s.live:
		s.buf = append(s.buf, f)
	case s.wants(f):
		s.h(f.e)
	}
}

// start delivers what arrived before the baseline was known.
func (s *subscription) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.buf {
		if !s.done && s.wants(f) {
			s.h(f.e)
		}
	}
	s.buf, s.live = nil, true
}

func (s *subscription) end() {
	s.mu.Lock()
	s.done, s.buf = true, nil
	s.mu.Unlock()
}

// Subscribe delivers the events of community published after it returns
// to h, until cancel is called. ctx bounds only the call itself, which
// waits for the node's subscription to the community to be confirmed.
//
// Cancel is idempotent and returns once h will not be called again (it
// waits for a running call of h, so h must not call it).
func (b *Bus) Subscribe(ctx context.Context, community string, h streams.Handler) (func(), error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if community == "" {
		return nil, errors.New("valkey: subscribe: empty community")
	}
	if h == nil {
		return nil, errors.New("valkey: subscribe: nil handler")
	}
	t, err := b.acquireTopic(ctx, community)
	if err != nil {
		return nil, err
	}
	// Join first, read the baseline second: an event published after the
	// read reaches s (buffered until start), and one published before it
	// is filtered out by it.
	s := &subscription{h: h}
	t.addSub(s)
	vals, err := b.client.Do(ctx, b.client.B().Hmget().Key(metaKey(community)).Field("e", "s").Build()).ToArray()
	if err == nil && len(vals) != 2 {
		err = errors.New("unexpected reply")
	}
	if err != nil {
		t.removeSub(s)
		b.releaseTopic(t)
		return nil, fmt.Errorf("valkey: subscribe: %w", err)
	}
	epoch, _ := vals[0].ToString()
	after, _ := vals[1].AsUint64()
	s.mu.Lock()
	s.epoch, s.after = epoch, after
	s.mu.Unlock()
	t.mu.Lock()
	if !t.baselined {
		t.baselined = true
		if t.last == 0 && epoch != "" {
			t.epoch, t.last = epoch, after
			t.maxSeen = max(t.maxSeen, after)
		}
	}
	t.mu.Unlock()
	b.queue.Push(item{start: s})

	var once sync.Once
	return func() {
		once.Do(func() {
			t.removeSub(s)
			s.end()
			b.releaseTopic(t)
		})
	}, nil
}

// ---------------------------------------------------------------------------
// Delivery

// item is one unit of work of the delivery goroutine.
type item struct {
	// An event f of topic t,
	t *topic
	f framed
	// or a subscription whose baseline is now known,
	start *subscription
	// or the id of a revoked session, or a reconnection.
	revoked   string
	reconnect bool
}

// deliver is the delivery goroutine (see streams/internal/delivery for
// why there is one). It exits when Close closes b.stop.
func (b *Bus) deliver() {
	b.queue.Run(b.stop, func(it item) {
		switch {
		case it.t != nil:
			for _, s := range it.t.loadSubs() {
				s.deliver(it.f)
			}
		case it.start != nil:
			it.start.start()
		case it.reconnect:
			for _, h := range loadHooks(&b.reconnects) {
				h.call(struct{}{})
			}
		default:
			for _, h := range loadHooks(&b.revokers) {
				h.call(it.revoked)
			}
		}
	})
}

// hook is one OnRevoke or OnReconnect registration.
type hook[T any] struct {
	h    func(T)
	mu   sync.Mutex // held while h runs
	done bool
}

func (k *hook[T]) call(v T) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.done {
		k.h(v)
	}
}

func loadHooks[T any](list *atomic.Pointer[[]*hook[T]]) []*hook[T] {
	if p := list.Load(); p != nil {
		return *p
	}
	return nil
}

// addHook registers h in list (copy on write under mu) and returns its
// idempotent cancel, which waits for a running call of h.
func addHook[T any](mu *sync.Mutex, list *atomic.Pointer[[]*hook[T]], h func(T)) func() {
	k := &hook[T]{h: h}
	mu.Lock()
	hs := append(slices.Clone(loadHooks(list)), k)
	list.Store(&hs)
	mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			hs := slices.DeleteFunc(slices.Clone(loadHooks(list)), func(x *hook[T]) bool { return x == k })
			list.Store(&hs)
			mu.Unlock()
			k.mu.Lock()
			k.done = true
			k.mu.Unlock()
		})
	}
}
