package memory

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Subscriptions and delivery

// subscription is one Subscribe call.
type subscription struct {
	h streams.Handler
	// after is the community's last seq when the subscription started: it
	// receives exactly the events published after Subscribe returned.
	after uint64

	// mu is held while h runs, so that cancel can wait for a running call.
	mu   sync.Mutex
	done bool
}

func (s *subscription) deliver(e *streams.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done && e.Seq > s.after {
		s.h(e)
	}
}

// end marks s done, waiting for a running call of its handler to return.
func (s *subscription) end() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
}

// Subscribe delivers the events of community published after it returns
// to h, until cancel is called. ctx bounds only the call itself.
//
// Cancel is idempotent; once it returns h is not called again. Because it
// waits for a running call of h, h itself must not call cancel.
func (b *Bus) Subscribe(ctx context.Context, community string, h streams.Handler) (func(), error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if community == "" {
		return nil, errors.New("memory: subscribe: empty community")
	}
	if h == nil {
		return nil, errors.New("memory: subscribe: nil handler")
	}
	c := b.lookupOrCreate(community)
	c.mu.Lock()
	s := &subscription{h: h, after: c.seq}
	// Copy on write: the delivery goroutine may be ranging over the old slice.
	subs := append(slices.Clone(c.loadSubs()), s)
	c.subs.Store(&subs)
	c.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			subs := slices.DeleteFunc(slices.Clone(c.loadSubs()), func(x *subscription) bool { return x == s })
			c.subs.Store(&subs)
			c.mu.Unlock()
			s.end()
		})
	}, nil
}

func (c *community) loadSubs() []*subscription {
	if p := c.subs.Load(); p != nil {
		return *p
	}
	return nil
}

// item is one unit of work of the delivery goroutine: an event of a
// community, or (c == nil) the revocation of a session.
type item struct {
	c       *community
	e       *streams.Event
	revoked string
}

// deliver is the delivery goroutine. It exits when Close closes b.stop.
func (b *Bus) deliver() {
	b.queue.Run(b.stop, func(it item) {
		if it.c != nil {
			for _, s := range it.c.loadSubs() {
				s.deliver(it.e)
			}
			return
		}
		for _, r := range b.loadRevokers() {
			r.deliver(it.revoked)
		}
	})
}
