// Package api is footfall's HTTP surface and nothing else: the echo routes,
// the WebSocket streams, the service API, credential extraction and the one
// mapping of errors to HTTP statuses and close codes. It is the only package
// that imports echo and gorilla/websocket; the domain lives in streams.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/internal/hangup"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/r3labs/sse/v2"
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
	sse      *sse.Server
	hangups  *hangup.Watcher // nil where unsupported: SSE readers instead
	polls    *pollLeases
	metrics  *metrics
	limits   Limits
	ipLimits *ipLimits
	guests   *guestPolicy
	hook     *authHook // nil without Options.AuthHookURL
	nodeID   string
	now      func() time.Time
	origins  originPolicy

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
		sse:      newSSEServer(),
		clients:  make(map[*client]struct{}),
		sessions: make(map[string]map[*client]struct{}),

		revokedRecent: make(map[string]time.Time),
		hooked:        make(map[*client]struct{}),

		perCommunity: make(map[string]*streamCounts),
	}
	if w, err := hangup.New(); err == nil {
		s.hangups = w
	} else if hangup.Supported {
		s.log.Warn("no hangup watcher: each SSE connection gets a reader goroutine", "err", err)
	}
	s.limits = opts.Limits.withDefaults()
	s.ipLimits = newIPLimits(s.limits)
	s.guests = newGuestPolicy(opts.PublicCommunities, opts.GuestKey, s.limits.TrustedProxies)
	s.polls = newPollLeases(s)
	s.metrics = newMetrics(s)
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
	if s.hangups != nil {
		s.hangups.Close()
	}
}

// OpenClients returns the number of open streams on this node.
func (s *Server) OpenClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

func (s *Server) register(c *client) {
	if s.index(c) {
		// Revoked while this connection was being set up.
		c.closeWith(int(auth.CodeExpired), "session revoked")
	}
}

// index adds c to the server's indexes; revoked says that c's session was
// revoked meanwhile.
func (s *Server) index(c *client) (revoked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sessionID != "" {
		_, revoked = s.revokedRecent[c.sessionID]
	}
	s.clients[c] = struct{}{}
	if c.hook != nil {
		s.hooked[c] = struct{}{}
	}
	n := s.perCommunity[c.community]
	if n == nil {
		n = new(streamCounts)
		s.perCommunity[c.community] = n
	}
	n.add(c, 1)
	s.metrics.opened(c)
	if sid := c.sessionID; sid != "" {
		m := s.sessions[sid]
		if m == nil {
			m = make(map[*client]struct{})
			s.sessions[sid] = m
		}
		m[c] = struct{}{}
	}
	return revoked
}

// streamCounts is a community's open streams on this node, by transport
// (WebSocket, SSE) and stream (visitors, dashboard).
type streamCounts [2][2]int

// add adds d to c's cell and returns the community's total.
func (n *streamCounts) add(c *client, d int) int {
	t, st := 0, 0
	if c.transport == "sse" {
		t = 1
	}
	if c.stream == streams.StreamDashboard {
		st = 1
	}
	n[t][st] += d
	return n[0][0] + n[0][1] + n[1][0] + n[1][1]
}

func (s *Server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[c]; !ok {
		return
	}
	delete(s.clients, c)
	delete(s.hooked, c)
	if n := s.perCommunity[c.community]; n != nil && n.add(c, -1) == 0 {
		delete(s.perCommunity, c.community)
	}
	if sid := c.sessionID; sid != "" {
		if m := s.sessions[sid]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(s.sessions, sid)
			}
		}
	}
}

// revoked closes every local connection of a revoked session. The bus calls
// it for revocations made on any node.
//
// A connection of that session may be in set-up right now, authenticated
// before the revocation but not yet registered: the revocation is
// remembered for revokedMemory, and register closes such a connection.
func (s *Server) revoked(sessionID string) {
	now := time.Now()
	s.mu.Lock()
	if len(s.revokedRecent) >= revokedRecentMax {
		for id, at := range s.revokedRecent {
			if now.Sub(at) > revokedMemory {
				delete(s.revokedRecent, id)
			}
		}
	}
	if len(s.revokedRecent) < revokedRecentMax {
		s.revokedRecent[sessionID] = now
	}
	s.mu.Unlock()
	s.closeSession(sessionID, "session revoked")
}

// revokedMemory is how long a revocation is remembered for connections in
// set-up (which takes a few round trips to the bus, bounded by their
// timeouts); revokedRecentMax bounds the memory of them.
const (
	revokedMemory    = time.Minute
	revokedRecentMax = 100_000
)

// closeSession closes every local connection of a session with 4004.
func (s *Server) closeSession(sessionID, reason string) {
	s.mu.Lock()
	var cs []*client
	for c := range s.sessions[sessionID] {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.closeWith(int(auth.CodeExpired), reason)
	}
}

// afterReconnect runs once the bus is back from an outage: every open
// stream gets a fresh snapshot (visitors may have come and gone meanwhile),
// and the sessions of open streams are re-checked, because revocations
// published while this node was cut off never reached it.
func (s *Server) afterReconnect(ctx context.Context) {
	// Other nodes may still be re-registering their visitors in a Valkey
	// that lost its data: read the state once they are done, so that
	// clients see the true count, not a partial one on the way.
	select {
	case <-ctx.Done():
		return
	case <-time.After(streams.ResyncSettle):
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s.hub.Refresh(rctx)
	cancel()
	s.recheckSessions(ctx)
}

// recheckConcurrency bounds the session lookups in flight after an outage:
// one round trip each, so a node with many session-backed streams is not
// checked one session after another.
const recheckConcurrency = 32

// recheckSessions closes the streams of sessions revoked or expired while
// the node was cut off from the bus.
func (s *Server) recheckSessions(ctx context.Context) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
		sem    = make(chan struct{}, recheckConcurrency)
	)
	for _, id := range ids {
		if failed.Load() || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := s.bus.Session(ctx, id)
			switch {
			case errors.Is(err, streams.ErrSessionRevoked):
				s.closeSession(id, "session revoked")
			case errors.Is(err, streams.ErrSessionExpired):
				s.closeSession(id, "session expired")
			case err != nil && !errors.Is(err, streams.ErrSessionNotFound):
				// Still unreachable: the next reconnect checks again.
				if failed.CompareAndSwap(false, true) {
					s.log.Warn("re-checking sessions after a bus outage", "err", err)
				}
			}
			// ErrSessionNotFound: a Valkey that restarted empty lost its
			// sessions. The stream was authorized when it opened and
			// still ends at the session's expiry; closing every
			// session-backed stream of the site for a data loss would be
			// worse.
		}()
	}
	wg.Wait()
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

// originPolicy decides which browser origins may open streams.
type originPolicy struct {
	any     bool
	allowed map[string]bool // lower-case origins; nil = same host
}

func newOriginPolicy(list []string) originPolicy {
	var p originPolicy
	for _, o := range list {
		o = strings.TrimRight(strings.ToLower(strings.TrimSpace(o)), "/")
		if o == "" {
			continue
		}
		if o == "*" {
			p.any = true
			continue
		}
		if p.allowed == nil {
			p.allowed = make(map[string]bool)
		}
		p.allowed[o] = true
	}
	return p
}

// check applies docs/protocol.md, fine print: no Origin is allowed (not a browser),
// "null" is refused, otherwise the list (or the same host:port as Host).
func (p originPolicy) check(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	origin = strings.ToLower(origin)
	if origin == "null" {
		return false
	}
	if p.any {
		return true
	}
	if p.allowed != nil {
		return p.allowed[origin]
	}
	scheme, host, ok := strings.Cut(origin, "://")
	if !ok || scheme == "" || host == "" {
		return false
	}
	return host == strings.ToLower(r.Host)
}
