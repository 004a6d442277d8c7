package valkey

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

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
	t.subs.Add(s)
	vals, err := b.client.Do(ctx, b.client.B().Hmget().Key(metaKey(community)).Field("e", "s").Build()).ToArray()
	if err == nil && len(vals) != 2 {
		err = errors.New("unexpected reply")
	}
	if err != nil {
		t.subs.Remove(s)
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
			t.subs.Remove(s)
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
			for _, s := range it.t.subs.Load() {
				s.deliver(it.f)
			}
		case it.start != nil:
			it.start.start()
		case it.reconnect:
			b.reconnects.Call(struct{}{})
		default:
			b.revokers.Call(it.revoked)
		}
	})
}
