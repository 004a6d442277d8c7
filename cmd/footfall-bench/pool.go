package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// clientPool runs benchClients, each on its own goroutine, and stops them
// all at the end: the client pools of every subcommand.
type clientPool struct {
	ctx context.Context
	mu  sync.Mutex
	all []*benchClient
	wg  sync.WaitGroup
}

func newPool(ctx context.Context) *clientPool { return &clientPool{ctx: ctx} }

// start runs c against tg over transport ("ws" or "sse"). With sem, it
// first takes a place in it, which the client gives back once it is ready
// or has failed: that bounds the handshakes in flight. It fails only when
// the pool's context ends first.
func (p *clientPool) start(tg *target, c *benchClient, transport string, ctr *counters, sem chan struct{}) error {
	if sem != nil {
		select {
		case sem <- struct{}{}:
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	}
	p.mu.Lock()
	p.all = append(p.all, c)
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		c.run(p.ctx, tg, transport, ctr, sem)
	}()
	return nil
}

// stop stops every client started so far, waits until they have ended
// and returns them.
func (p *clientPool) stop() []*benchClient {
	p.mu.Lock()
	all := slices.Clone(p.all)
	p.mu.Unlock()
	for _, c := range all {
		c.stop()
	}
	p.wg.Wait()
	return all
}

// latencies are the probe latencies every client recorded (read them
// after stop).
func latencies(cs []*benchClient) []int64 {
	var lat []int64
	for _, c := range cs {
		lat = append(lat, c.lat...)
	}
	return lat
}

// newClient is a client of a community's stream with a token of its own
// (subject sub, the least role the stream needs) from local.
func (t *target) newClient(sub, community, stream string, local net.IP, ttl time.Duration) (*benchClient, error) {
	tok, err := t.token(sub, community, roleFor(stream), ttl)
	if err != nil {
		return nil, err
	}
	c := newBenchClient(community, stream, tok)
	c.local = local
	return c, nil
}

// waitReady waits until n clients counted by ctr are ready or failed; an
// error if any failed or the timeout passed first.
func waitReady(ctx context.Context, ctr *counters, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ctr.ready.Load()+ctr.failed.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d connected within %s", ctr.ready.Load(), n, timeout)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	if f := ctr.failed.Load(); f > 0 {
		ctr.mu.Lock()
		defer ctr.mu.Unlock()
		return fmt.Errorf("%d of %d failed to connect: %v", f, n, ctr.errs)
	}
	return nil
}

// countEvent is one count message a watcher received.
type countEvent struct {
	at    int64 // Unix ns
	count int
}

// watcher is a visitors-stream WebSocket client that follows the
// community's count. It records either the count messages (visitor_*)
// with their arrival (churn), or the arrival of every message (churn
// --mode reconnect, where any message is one too many).
type watcher struct {
	c        *benchClient
	everyMsg bool
	last     atomic.Int64
	mu       sync.Mutex
	events   []countEvent // !everyMsg
	at       []int64      // everyMsg
}

var (
	visitorTypePrefix = []byte(`"type":"visitor_`)
	countKey          = []byte(`"count":`)
)

func (w *watcher) onMsg(msg []byte, now int64) {
	if w.everyMsg {
		w.mu.Lock()
		w.at = append(w.at, now)
		w.mu.Unlock()
		if n, ok := extractInt(msg, countKey); ok {
			w.last.Store(n)
		}
		return
	}
	if !bytes.Contains(msg, visitorTypePrefix) {
		return
	}
	n, ok := extractInt(msg, countKey)
	if !ok {
		return
	}
	w.mu.Lock()
	w.events = append(w.events, countEvent{now, int(n)})
	w.mu.Unlock()
	w.last.Store(n)
}

// since returns the arrival times (everyMsg) at or after t.
func (w *watcher) since(t int64) []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearch(w.at, t)
	return append([]int64(nil), w.at[i:]...)
}

// startWatchers opens n watchers of community (subjects sub-tag-i, source
// addresses from the first, perIP each) and waits until they are ready.
func startWatchers(ctx context.Context, pool *clientPool, tg *target, community, sub string, tag uint32, n, perIP int, everyMsg bool) ([]*watcher, *counters, error) {
	ws := make([]*watcher, n)
	ctr := newCounters()
	for i := range ws {
		c, err := tg.newClient(fmt.Sprintf("%s-%d-%d", sub, tag, i), community, "visitors", tg.sourceIP(i, perIP), 6*time.Hour)
		if err != nil {
			return nil, ctr, err
		}
		w := &watcher{c: c, everyMsg: everyMsg}
		c.onMsg = w.onMsg
		ws[i] = w
		if err := pool.start(tg, c, "ws", ctr, nil); err != nil {
			return nil, ctr, err
		}
	}
	if err := waitReady(ctx, ctr, n, 30*time.Second); err != nil {
		return nil, ctr, fmt.Errorf("watchers: %w", err)
	}
	return ws, ctr, nil
}

// allHold reports whether every watcher's last count is count.
func allHold(ws []*watcher, count int) bool {
	for _, w := range ws {
		if w.last.Load() != int64(count) {
			return false
		}
	}
	return true
}

// waitAgree waits until every watcher holds the same count for half a
// second and returns it.
func waitAgree(ctx context.Context, ws []*watcher, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	stable := 0
	prev := int64(-1)
	for {
		v := ws[0].last.Load()
		if allHold(ws, int(v)) && v == prev {
			stable++
		} else {
			stable = 0
		}
		prev = v
		if stable >= 20 { // 20 x 25 ms
			return int(v), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("watchers did not agree on a count within %s", timeout)
		}
		if err := sleepCtx(ctx, 25*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// tickEvery calls f(0), f(1), ... once per period, from one period after
// the start, until ctx ends or f returns false.
func tickEvery(ctx context.Context, period time.Duration, f func(n int) bool) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !f(n) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
