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
//     calls the handlers. See streams/internal/delivery for why.
//   - Sessions have their own mutex; revocations travel through the same
//     delivery goroutine.
//   - A reaper goroutine ends expired sources, rolls days over, trims
//     history and forgets old session records.
//
// Files: memory.go (options, the Bus, Close), community.go (a
// community's state, days, expiry), events.go (Publish, History),
// presence.go (Touch, Leave, Snapshot), subscriptions.go, sessions.go,
// history.go (visitor history), outbox.go (webhooks), reap.go.
//
// Close stops both goroutines and waits for them.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/base32"
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
