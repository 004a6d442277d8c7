// Package valkey is footfall's distributed streams.Bus: every node of a
// deployment shares events, presence, today's visitors, event history and
// sessions through Valkey (or Redis 7), a single server or a Valkey
// Cluster, using github.com/valkey-io/valkey-go. It needs Valkey, or Redis
// 7.0 or later (sharded pub/sub, EVALSHA_RO).
//
// # Key layout
//
// The keys of one community c share the hash tag {c}, so every script that
// changes a community touches one hash slot and works on a cluster:
//
//	ff:{c}:m              HASH   e epoch, s seq, c time of the last presence
//	                             change (unix s), D/dn/dx start (ms), name and
//	                             key expiry (ms) of the current day
//	ff:{c}:v              HASH   visitor key ("u:id"/"a:id") -> live sources
//	ff:{c}:t              ZSET   "<visitor key>\0<source id>" -> deadline (ms)
//	                             of the sources with a TTL
//	ff:{c}:h:<lease>      SET    "<visitor key>\0<source id>" held by one
//	                             node lease (a connection on that node)
//	ff:{c}:l              STREAM history: id "<seq>-<ms>", field p = payload
//	ff:{c}:e              shard channel of the community's events
//	ff:{c}:d:<day>:u|a    SET    today's first 1000 visitors (of a kind)
//	ff:{c}:x:<day>:u|a:1..4 HLL  today's visitors beyond those, salted 1..4
//
// A few keys are global; only plain commands and single-key scripts touch
// them:
//
//	ff:ttl                ZSET   community -> earliest TTL deadline (ms), a
//	                             hint so reapers visit only communities
//	                             with something to expire
//	ff:leases             ZSET   lease -> expected expiry (ms)
//	ff:lease:<lease>      STRING node id, PX = lease TTL
//	ff:lease:<lease>:c    SET    communities where the lease holds sources
//	ff:sess:<id>          STRING "L" (live) or "R" (revoked), expiry in
//	                             ms, ":", the session's JSON; PXAT expiry+24h
//	ff:revoked            channel (classic pub/sub) of revoked session ids
//
// Payloads, on the channel and in the history alike, are
// "<seq>:<epoch>:<unix seconds or empty>:<event JSON>"; an event's ID is
// "<epoch>-<seq>", where epoch is a random string stored with the
// community, so ids are the same on every node and ids from before a data
// loss never match.
//
// # Presence
//
// A held source (TTL 0: a WebSocket or SSE connection) belongs to its node.
// The node refreshes one lease key every PresenceTTL/3, whatever its number
// of connections; the sources it holds sit in per-community sets named after
// the lease. When a lease lapses (its node died, or was cut off for longer
// than the TTL), the first reaper to notice runs one script per community
// that ends the lease's sources and publishes visitor_left once per visitor
// that leaves. A node never revives a lapsed lease: it notices the lapse at
// its next refresh, takes a new lease and re-registers the sources it holds
// (it keeps them in memory), so a reaper can never remove sources a live
// node holds under its current lease.
//
// Sources with a TTL (polls, the service API) have a deadline in ff:{c}:t;
// any node's reaper, or any operation on the community, ends them once
// their deadline passed.
//
// # Delivery
//
// A node subscribes to a community's channel while it has local
// subscribers for it (SSUBSCRIBE, one Receive per community). valkey-go's
// receive callback only parses and queues; one delivery goroutine calls the
// handlers, in Seq order per community, dropping duplicates. A gap in the
// sequence (messages lost while a connection was down) is filled from the
// history.
//
// # Outages
//
// When a connection drops, or a server restarts (its run id changes: the
// keeper compares them every PresenceTTL/3, so a cluster shard that lost its
// data is noticed even by nodes with nothing subscribed there), the keeper
// goroutine waits until Valkey answers, renews or replaces the node's
// lease, re-registers the node's held sources (set, not incremented: one
// summary presence event per community whose figures changed, no storm of
// joins; the event is marked Resync, and gateways fold the resyncs of all
// nodes for streams.ResyncSettle before they tell clients), raises each
// subscribed community's seq to at least the highest
// the node saw (so sequence numbers never go back after a data loss; ids
// change with the new epoch), waits for the subscriptions to be back, and
// calls the OnReconnect hooks so the gateway sends fresh snapshots.
//
// # Differences from the memory bus
//
//   - A held source belongs to the node that touched it: Leave it on that
//     node (elsewhere it ends when that node's lease lapses).
//   - Deadlines, days and event times use each node's Clock: clock skew
//     between nodes shifts TTL expiry by the skew.
//   - Today's visitors beyond 1000 of a kind are estimated (measured error
//     under 0.5% up to 20,000).
//   - History may keep more than the memory bus (each publish trims at most
//     32 old events), and is dropped an hour (historyIdle) after a
//     community's last event. Resuming after that, or after a data loss,
//     gets a snapshot.
//   - Revocations published while a node is cut off are not delivered to
//     it; OnReconnect tells the gateway to re-check open sessions.
//   - A day rollover counts a community's present visitors in one script:
//     fine for thousands, a noticeable pause for a community with 100,000
//     present at midnight.
package valkey

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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

// Key names of the global keys.
const (
	keyTTLIndex = "ff:ttl"
	keyLeases   = "ff:leases"
	chanRevoked = "ff:revoked"
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

// clientOption turns the configured URL into valkey-go options.
func clientOption(raw string) (valkey.ClientOption, error) {
	raw = strings.TrimSpace(raw)
	var opt valkey.ClientOption
	if raw == "" {
		return opt, errors.New("valkey: empty URL")
	}
	if strings.Contains(raw, "://") {
		var err error
		if opt, err = valkey.ParseURL(raw); err != nil {
			return opt, fmt.Errorf("valkey: parse URL: %w", err)
		}
	} else {
		for _, a := range strings.Split(raw, ",") {
			if a = strings.TrimSpace(a); a != "" {
				opt.InitAddress = append(opt.InitAddress, a)
			}
		}
	}
	opt.DisableCache = true
	// The bus retries on its own terms (subscriptions, the keeper); a
	// script must never be sent twice.
	opt.DisableRetry = true
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = dialTimeout
	}
	// A hung server is noticed within a few seconds (valkey-go pings idle
	// connections and fails them after this).
	opt.ConnWriteTimeout = 3 * time.Second
	return opt, nil
}

// redactURL drops the credentials from a URL for error messages.
func redactURL(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		if j := strings.LastIndex(raw, "@"); j > i {
			return raw[:i+3] + "***@" + raw[j+1:]
		}
	}
	return raw
}

// randomID returns n random base32 characters (lower case).
func randomID(n int) string {
	b := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return s[:n]
}

// newEpoch returns a fresh epoch candidate: 8 random characters.
func newEpoch() string { return randomID(8) }

func newLeaseID(node string) string { return node + "." + randomID(6) }

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

// backoff doubles a wait up to maxBackoff.
type backoff struct{ d time.Duration }

func (bo *backoff) next() time.Duration {
	if bo.d == 0 {
		bo.d = 50 * time.Millisecond
	} else {
		bo.d = min(2*bo.d, maxBackoff)
	}
	return bo.d
}

func (bo *backoff) reset() { bo.d = 0 }

// common returns the leading arguments of every community script (see
// scripts.go) for the time now.
func (b *Bus) common(now time.Time) []string {
	mid := streams.Midnight(now, b.opts.Location)
	next := streams.Midnight(mid.Add(36*time.Hour), b.opts.Location)
	return []string{
		strconv.FormatInt(now.UnixMilli(), 10),
		strconv.FormatInt(mid.UnixMilli(), 10),
		streams.Day(now, b.opts.Location),
		strconv.FormatInt(next.Add(dayGrace).UnixMilli(), 10),
		strconv.FormatInt(now.Unix(), 10),
		newEpoch(),
	}
}

func metaKey(community string) string      { return "ff:{" + community + "}:m" }
func eventChannel(community string) string { return "ff:{" + community + "}:e" }
func ttlKey(community string) string       { return "ff:{" + community + "}:t" }
func leaseKey(lease string) string         { return "ff:lease:" + lease }
func leaseCommsKey(lease string) string    { return "ff:lease:" + lease + ":c" }
func sessionKey(id string) string          { return "ff:sess:" + id }
