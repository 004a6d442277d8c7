// Package api is footfall's HTTP surface and nothing else: the echo routes,
// the WebSocket streams, the service API, credential extraction and the one
// mapping of errors to HTTP statuses and close codes. It is the only package
// that imports echo; the sockets (gorilla/websocket, r3labs/sse) are
// api/internal/transport's, and the domain lives in streams.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Options are a Server's dependencies and settings.
type Options struct {
	Bus      streams.Bus
	Verifier *auth.Verifier
	Log      *slog.Logger

	// APIKey enables the service API (docs/protocol.md, service API); empty disables it.
	APIKey string
	// AllowedOrigins replaces the same-host default; "*" allows all.
	AllowedOrigins []string
	// PresenceTTL is the lifetime of a service-API or poll source.
	PresenceTTL time.Duration
	// LeaveGrace is how long a visitor whose last stream connection on
	// this node closed stays present (docs/protocol.md, leave grace); 0
	// ends its presence at once.
	LeaveGrace time.Duration
	// PublicCommunities lists the communities whose visitors stream and
	// count admit guests; "*" admits them everywhere.
	PublicCommunities []string
	// GuestKey signs guests' footfall_vid cookies. Every node of a cluster
	// must have the same; empty: a random key of this node's own.
	GuestKey []byte
	// AuthHookURL is the platform's endpoint that decides requests carrying
	// its own cookies and no footfall credential (api/authhook.go); empty:
	// none. AuthHookClient calls it (default: a 2 s timeout client).
	AuthHookURL    string
	AuthHookClient *http.Client
	// DashboardInterval is the period of the dashboard push.
	DashboardInterval time.Duration
	// SSEHeartbeat is the period of SSE heartbeat comments (15s).
	SSEHeartbeat time.Duration
	// Limits protect the node; zero fields take DefaultLimits.
	Limits Limits

	// Dev enables POST /dev/token, which mints tokens with DevSecret.
	Dev       bool
	DevSecret []byte
	// DevAudience and DevIssuer go into dev tokens so that they pass the
	// verifier's checks.
	DevAudience, DevIssuer string

	// Metrics, when set, are shown by GET /metrics after the node's own
	// (the webhook engine's registry).
	Metrics prometheus.Gatherer

	// Web, when set, is served at / (the demo page).
	Web fs.FS
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Server is the HTTP surface of one footfall node.
type Server struct {
	opts     Options
	log      *slog.Logger
	bus      streams.Bus
	hub      *streams.Hub
	verifier *auth.Verifier
	echo     *echo.Echo
	sse      *transport.SSENode
	polls    *pollLeases
	metrics  *metrics
	limits   Limits
	ipLimits *ipLimits
	guests   *guestPolicy
	hook     *authHook // nil without Options.AuthHookURL
	nodeID   string
	now      func() time.Time
	origins  originPolicy

	clientEnv *clientEnv // what its clients need of it

	connSeq  atomic.Uint64
	draining atomic.Bool

	mu       sync.Mutex
	clients  map[*client]struct{}
	sessions map[string]map[*client]struct{} // session id -> its open clients
	// revokedRecent: sessions revoked in the last revokedMemory, for
	// connections that were in set-up then (see revoked).
	revokedRecent map[string]time.Time
	// hooked are the open streams the auth hook admitted, asked about
	// again when their verdict runs out (recheckHooked).
	hooked map[*client]struct{}
	// perCommunity counts the open streams of each community with any, by
	// transport and stream, for /stats (which would otherwise walk every
	// client under s.mu).
	perCommunity map[string]*streamCounts
	// shared holds the shared encodings of each community with clients.
	shared map[string]*shared
	// alarms serves every client's alarm with one timer.
	alarms alarm.Wheel

	stopRevoke    func()
	stopReconnect func()
	reconnected   chan struct{} // capacity 1: "the bus is back", for Run
}

// New returns a Server. Call Run to start its background work and Close
// when done.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PresenceTTL <= 0 {
		opts.PresenceTTL = 30 * time.Second
	}
	if opts.DashboardInterval <= 0 {
		opts.DashboardInterval = 30 * time.Second
	}
	if opts.SSEHeartbeat <= 0 {
		opts.SSEHeartbeat = 15 * time.Second
	}
	var node [6]byte
	_, _ = rand.Read(node[:])
	s := &Server{
		opts:     opts,
		log:      opts.Log,
		bus:      opts.Bus,
		hub:      streams.NewHub(opts.Bus, opts.Log),
		verifier: opts.Verifier,
		nodeID:   hex.EncodeToString(node[:]),
		now:      opts.Now,
		origins:  newOriginPolicy(opts.AllowedOrigins),
		clients:  make(map[*client]struct{}),
		sessions: make(map[string]map[*client]struct{}),

		revokedRecent: make(map[string]time.Time),
		hooked:        make(map[*client]struct{}),

		perCommunity: make(map[string]*streamCounts),
		shared:       make(map[string]*shared),
	}
	var err error
	if s.sse, err = transport.NewSSENode(&s.alarms); err != nil {
		s.log.Warn("no hangup watcher: each SSE connection gets a reader goroutine", "err", err)
	}
	s.limits = opts.Limits.withDefaults()
	s.ipLimits = newIPLimits(s.limits)
	s.guests = newGuestPolicy(opts.PublicCommunities, opts.GuestKey, s.limits.TrustedProxies)
	s.polls = newPollLeases(s)
	s.metrics = newMetrics(s)
	s.clientEnv = newClientEnv(s)
	if opts.AuthHookURL != "" {
		s.hook = newAuthHook(opts.AuthHookURL, opts.APIKey, opts.AuthHookClient, s.now, func(outcome string, d time.Duration) {
			s.metrics.hookCalls.WithLabelValues(outcome).Inc()
			s.metrics.hookLatency.Observe(d.Seconds())
		})
	}
	s.hub.ObserveFanout(func(d time.Duration) { s.metrics.fanout.Observe(d.Seconds()) })
	s.echo = s.routes()
	s.stopRevoke = s.bus.OnRevoke(s.revoked)
	s.stopReconnect = func() {}
	s.reconnected = make(chan struct{}, 1)
	// A bus that can lose its server (Valkey) says when it is back; Run
	// then sends every open stream a fresh snapshot, so clients converge,
	// and re-checks the sessions of open streams.
	if r, ok := s.bus.(streams.Reconnector); ok {
		s.stopReconnect = r.OnReconnect(func() {
			s.metrics.busReconnects.Inc()
			select {
			case s.reconnected <- struct{}{}:
			default: // one already pending covers this one too
			}
		})
	}
	return s
}

// Handler is the node's whole HTTP surface.
func (s *Server) Handler() http.Handler { return s.echo }

// Run does the server's periodic work (the dashboard push) and its work
// after a bus outage until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.DashboardInterval)
	defer t.Stop()
	var hookTick <-chan time.Time
	if s.hook != nil {
		ht := time.NewTicker(time.Second)
		defer ht.Stop()
		hookTick = ht.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hookTick:
			s.recheckHooked(ctx)
		case <-s.reconnected:
			s.afterReconnect(ctx)
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s.hub.Refresh(rctx)
			cancel()
			s.polls.expire(s.now())
			s.ipLimits.prune(time.Now())
		}
	}
}

// Drain starts shutdown: /readyz answers 503, new streams are refused, and
// every open stream is told to go at once (WebSockets close with 1001).
func (s *Server) Drain() { s.DrainOver(context.Background(), 0) }

// DrainOver starts shutdown like Drain, but tells the open streams to go
// spread evenly over spread, so that a rolling deploy does not send every
// client of the node to the other nodes in the same second. It returns once
// the last one is told, or when ctx ends (the rest are then told at once).
func (s *Server) DrainOver(ctx context.Context, spread time.Duration) {
	s.draining.Store(true)
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	tell := func(c *client) {
		c.mu.Lock()
		// The visitor's presence outlives the connection by the presence
		// TTL, so that a client reconnecting to another node causes no
		// leave/join flicker.
		c.handover = true
		c.mu.Unlock()
		c.closeWith(closeGoingAway, "server shutting down")
	}
	if spread <= 0 || len(cs) < 2 {
		for _, c := range cs {
			tell(c)
		}
		return
	}
	// Evenly spaced batches, at most one every drainTick: the streams of
	// one batch go together.
	batches := min(len(cs), max(int(spread/drainTick), 1))
	per := (len(cs) + batches - 1) / batches
	t := time.NewTicker(spread / time.Duration(batches))
	defer t.Stop()
	for i := 0; i < len(cs); i += per {
		if i > 0 {
			select {
			case <-ctx.Done():
				per = len(cs) // the rest at once
			case <-t.C:
			}
		}
		for _, c := range cs[i:min(i+per, len(cs))] {
			tell(c)
		}
	}
}

// drainTick is the shortest interval between DrainOver's batches.
const drainTick = 20 * time.Millisecond

// refuseWhileDraining answers a new stream 503 with a short Retry-After
// once the node is draining: accepted now, it would be cut at once without
// a goodbye; refused, the client goes to another node.
func (s *Server) refuseWhileDraining(c echo.Context) error {
	if !s.draining.Load() {
		return nil
	}
	c.Response().Header().Set("Retry-After", "1")
	return &httpError{Status: http.StatusServiceUnavailable, Slug: "shutting_down", Message: "the node is shutting down; connect again"}
}

// closeGoingAway is the close code of a node that stops (1001).
const closeGoingAway = 1001

// Close stops listening for revocations. The caller stops the HTTP server
// first.
func (s *Server) Close() {
	s.stopRevoke()
	s.stopReconnect()
	s.polls.close()
	s.sse.Close()
}

// OpenClients returns the number of open streams on this node.
func (s *Server) OpenClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if err := s.ready(c.Request().Context()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// ready says why the node is not ready (/readyz 503, footfall_ready 0):
// it is shutting down, or its bus is unreachable (or re-registering its
// state after an outage); nil when it is ready.
func (s *Server) ready(ctx context.Context) error {
	if s.draining.Load() {
		return &httpError{Status: http.StatusServiceUnavailable, Slug: "shutting_down", Message: "the node is shutting down"}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.bus.Ping(ctx); err != nil {
		s.log.Warn("readiness: bus unreachable", "err", err)
		return &httpError{Status: http.StatusServiceUnavailable, Slug: "bus_unavailable", Message: "the bus is unreachable"}
	}
	return nil
}

// community validates and normalizes the :id path parameter (404 on a
// malformed id, docs/protocol.md, credentials).
func community(c echo.Context) (string, error) {
	id, ok := streams.NormalizeCommunityID(c.Param("id"))
	if !ok {
		return "", errNotFound("unknown community id: ids match [0-9a-fA-F-]+")
	}
	return id, nil
}
