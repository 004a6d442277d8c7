package valkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/internal/delivery"
)

// Defaults and limits.
const (
	defaultPresenceTTL  = 30 * time.Second
	defaultReapInterval = time.Second

	// historySize, historyAge and maxHistory are the history rules of the
	// memory bus: an event is kept while it is among the last historySize
	// or younger than historyAge, and never beyond maxHistory (approximately:
	// XADD MAXLEN ~).
	historySize = 100
	historyAge  = 5 * time.Minute
	maxHistory  = 10_000
	// historyIdle is how long a community's history outlives its last
	// event; a resume after that gets a snapshot.
	historyIdle = time.Hour
	// metaIdle is how long an idle community's epoch and seq are kept
	// (every operation on the community renews it).
	metaIdle = 30 * 24 * time.Hour

	// exactToday is the number of today's visitors (of each kind) counted
	// exactly, in a set. The visitors beyond it are counted by todayHLLs
	// HyperLogLogs over differently salted names, averaged: a standard
	// error of 0.81%/2 on that part, so the total stays well within 2%.
	exactToday = 1000
	todayHLLs  = 4
	// dayGrace is how long a day's keys outlive the day.
	dayGrace = time.Hour

	// sessionRetention is how long a session is remembered after its
	// expiry, so that Session can tell revoked and expired from unknown.
	sessionRetention = 24 * time.Hour

	// pingTimeout bounds Ping and the keeper's probes.
	pingTimeout = 2 * time.Second
	// dialTimeout bounds each connection attempt.
	dialTimeout = 2 * time.Second
	// opTimeout bounds the bus's own background calls.
	opTimeout = 5 * time.Second
	// maxBackoff caps the wait between reconnection attempts.
	maxBackoff = time.Second
	// maxPerRun bounds the sources one script run ends (a reap, an
	// expiry), so that no run blocks Valkey for long.
	maxPerRun = 500
)

// Options configures a Bus.
type Options struct {
	// URL is a redis://, rediss://, valkey:// or valkeys:// URL, or a
	// comma-separated list of host:port seeds of a cluster.
	URL string
	// NodeID names this node (default: random). Two running nodes must not
	// share one.
	NodeID string
	// PresenceTTL is the lease of the node's held sources and so how long
	// a dead node's visitors linger (default 30s).
	PresenceTTL time.Duration
	// Location defines "today" (default UTC).
	Location *time.Location
	// Clock tells the time of events, deadlines and days (default
	// streams.SystemClock). Leases use the real time.
	Clock streams.Clock
	// ReapInterval is how often the node looks for expired TTL sources
	// (default 1s); lapsed leases are looked for every PresenceTTL/10.
	ReapInterval time.Duration
	// Log receives the bus's warnings (default: discarded).
	Log *slog.Logger
	// Webhooks turns the webhook outbox on (docs/protocol.md, webhooks;
	// outbox.go). Off, nothing is queued and it costs nothing.
	Webhooks bool
}

func (o Options) withDefaults() Options {
	if o.NodeID == "" {
		o.NodeID = randomID(10)
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = defaultPresenceTTL
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Clock == nil {
		o.Clock = streams.SystemClock{}
	}
	if o.ReapInterval <= 0 {
		o.ReapInterval = defaultReapInterval
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Bus is the Valkey streams.Bus. Create it with New; Close it when done.
type Bus struct {
	opts    Options
	client  valkey.Client
	cluster bool
	s       *scripts
	log     *slog.Logger

	closed    atomic.Bool
	abandoned atomic.Bool
	// recovering is true from the moment the bus notices a dropped
	// connection until it has re-registered its state: Ping fails
	// meanwhile, so that a node is not ready with a partial view.
	recovering atomic.Bool
	stop       chan struct{} // closed by Close: every goroutine's stop signal
	life       context.Context
	endLife    context.CancelFunc // cancels life, with stop
	wg         sync.WaitGroup
	once       sync.Once

	queue *delivery.Queue[item]

	topicsMu sync.Mutex
	topics   map[string]*topic

	// revLoop is the subscription to ff:revoked.
	revLoop *loop

	// leaseMu guards lease and gone. Operations on held sources hold it for
	// reading while they run, so that switching to a new lease (write lock)
	// waits for them and none writes under a lease after it was replaced.
	leaseMu sync.RWMutex
	lease   string
	retired []string // earlier leases whose keys await cleanup
	gone    bool     // said goodbye: register nothing any more

	heldMu sync.Mutex
	held   map[string]*heldCommunity

	lost   chan struct{}     // capacity 1: "a connection dropped"
	runIDs map[string]string // server address -> run id; the keeper's own

	repairMu   sync.Mutex
	repairs    map[*topic]struct{}
	repairWake chan struct{}

	revokers   delivery.Hooks[string]   // OnRevoke
	reconnects delivery.Hooks[struct{}] // OnReconnect

	counters counters // BusStats
}

var _ streams.Bus = (*Bus)(nil)

// New connects to Valkey and returns a running Bus. It fails fast (within
// a few seconds, sooner if ctx says so) when the server is unreachable.
func New(ctx context.Context, opts Options) (*Bus, error) {
	opts = opts.withDefaults()
	copt, err := clientOption(opts.URL)
	if err != nil {
		return nil, err
	}
	copt.ClientName = "footfall-" + opts.NodeID
	client, err := valkey.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("valkey: connect to %s: %w", redactURL(opts.URL), err)
	}
	b := &Bus{
		opts:       opts,
		client:     client,
		cluster:    client.Mode() == valkey.ClientModeCluster,
		s:          newScripts(historyIdle.Milliseconds(), metaIdle.Milliseconds(), opts.Webhooks),
		log:        opts.Log,
		stop:       make(chan struct{}),
		topics:     make(map[string]*topic),
		held:       make(map[string]*heldCommunity),
		lost:       make(chan struct{}, 1),
		runIDs:     make(map[string]string),
		repairs:    make(map[*topic]struct{}),
		repairWake: make(chan struct{}, 1),
		lease:      newLeaseID(opts.NodeID),
	}
	b.client = countingClient{Client: client, errs: &b.counters.errors}
	b.queue = delivery.New[item]()
	b.life, b.endLife = context.WithCancel(context.Background())

	pctx, cancel := context.WithTimeout(ctx, 2*dialTimeout)
	defer cancel()
	if err := b.client.Do(pctx, b.client.B().Ping().Build()).Error(); err != nil {
		b.endLife()
		client.Close()
		return nil, fmt.Errorf("valkey: ping %s: %w", redactURL(opts.URL), err)
	}
	if err := b.registerLease(pctx, b.lease); err != nil {
		b.endLife()
		client.Close()
		return nil, fmt.Errorf("valkey: register node lease: %w", err)
	}
	if _, err := b.checkServers(pctx); err != nil {
		b.endLife()
		client.Close()
		return nil, fmt.Errorf("valkey: %w", err)
	}

	b.wg.Add(4)
	go func() { defer b.wg.Done(); b.deliver() }()
	go func() { defer b.wg.Done(); b.keep() }()
	go func() { defer b.wg.Done(); b.reap() }()
	go func() { defer b.wg.Done(); b.repair() }()

	// Revocations: every node listens; classic pub/sub reaches every node
	// of a cluster.
	b.revLoop = b.startLoop(&loop{channel: chanRevoked, onMessage: b.onRevokedMessage})
	select {
	case <-b.revLoop.ready:
	case <-pctx.Done():
	}
	if err := b.revLoop.err(); err != nil || pctx.Err() != nil {
		b.Abandon()
		if err == nil {
			err = pctx.Err()
		}
		return nil, fmt.Errorf("valkey: subscribe to revocations: %w", err)
	}
	return b, nil
}

// check returns ErrClosed after Close, else the context's error.
func (b *Bus) check(ctx context.Context) error {
	if b.closed.Load() {
		return streams.ErrClosed
	}
	return ctx.Err()
}

func (b *Bus) now() time.Time { return b.opts.Clock.Now() }

// stamp is the time of an event published at now: whole seconds, UTC.
func stamp(now time.Time) time.Time { return now.UTC().Truncate(time.Second) }

// Pending is the number of events and notices waiting for the delivery
// goroutine (export it as a metric; it stays near zero).
func (b *Bus) Pending() int { return b.queue.Len() }

// Ping reports whether Valkey answers, within about 2 seconds. On a
// cluster every known server must answer: with one master down, the
// communities in its slots have no presence, so the bus is not whole.
func (b *Bus) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if b.recovering.Load() {
		return errRecovering
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if !b.cluster {
		if err := b.client.Do(ctx, b.client.B().Ping().Build()).Error(); err != nil {
			return fmt.Errorf("valkey: ping: %w", err)
		}
		return nil
	}
	nodes := b.client.Nodes()
	errs := make(chan error, len(nodes))
	for addr, c := range nodes {
		go func() {
			if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
				errs <- fmt.Errorf("valkey: ping %s: %w", addr, err)
				return
			}
			errs <- nil
		}()
	}
	var failed []error
	for range nodes {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	return errors.Join(failed...)
}

// Close ends the node's held sources (publishing visitor_left for visitors
// that leave with them; bounded by a few seconds, after which the lease's
// lapse does it), stops the bus's goroutines and waits for them, and closes
// the connections. Once it returns no handler runs. Close is idempotent
// and returns nil; other methods return streams.ErrClosed afterwards.
func (b *Bus) Close() error {
	b.once.Do(func() {
		b.closed.Store(true)
		// Cut the bus's own calls short (a recovery in progress would hold
		// goodbye up), then say goodbye on a context of its own.
		b.endLife()
		if !b.abandoned.Load() {
			b.goodbye()
		}
		close(b.stop)
		b.topicsMu.Lock()
		for _, t := range b.topics {
			t.loop.cancel()
		}
		b.topicsMu.Unlock()
		if b.revLoop != nil {
			b.revLoop.cancel()
		}
		b.wg.Wait()
		b.client.Close()
	})
	return nil
}

// Abandon closes the bus as a crash would: without ending its held
// sources, which stay until its lease lapses and another node reaps them.
// It exists for tests that simulate a node dying without goodbye.
func (b *Bus) Abandon() {
	b.abandoned.Store(true)
	_ = b.Close()
}

// OnReconnect calls h, from the delivery goroutine, each time the bus
// re-established its connection after an outage (or found its lease lapsed)
// and re-registered its sources and subscriptions: the caller should then
// re-read the state it shows (send every open stream a fresh snapshot) and
// re-check what it may have missed (revocations sent during the outage are
// lost). Cancel is idempotent and waits for a running call of h.
func (b *Bus) OnReconnect(h func()) (cancel func()) {
	if b.closed.Load() || h == nil {
		return func() {}
	}
	return b.reconnects.Add(func(struct{}) { h() })
}

// errRecovering is Ping's answer while the bus re-registers its state.
var errRecovering = errors.New("valkey: re-registering this node's state after an outage")

// markLost tells the keeper that a connection dropped.
func (b *Bus) markLost() {
	b.recovering.Store(true)
	select {
	case b.lost <- struct{}{}:
	default:
	}
}

// sleep waits d or until the bus stops; it reports whether the bus runs.
func (b *Bus) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.stop:
		return false
	case <-t.C:
		return true
	}
}

// bgContext is the context of the bus's own calls: bounded, and cancelled
// when the bus stops.
func (b *Bus) bgContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.life, opTimeout)
}
