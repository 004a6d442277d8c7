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
)

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
	tm       transport.Timings // the connections' (Options.Timings), shared by them
	ipLimits *ipLimits
	guests   *guestPolicy
	hook     *authHook // nil without Options.AuthHookURL
	nodeID   string
	now      func() time.Time
	origins  originPolicy

	clientEnv *clientEnv // what its clients need of it
	svc       *serviceAPI
	history   *historyAPI

	connSeq  atomic.Uint64
	draining atomic.Bool

	// The lifecycle (lifecycle.go): stop ends Run's work, runs counts the
	// Runs going, released is Shutdown's release of what the Server holds.
	stop     context.Context
	stopAll  context.CancelFunc
	runMu    sync.Mutex // orders runs.Add before runs.Wait
	runs     sync.WaitGroup
	released sync.Once

	mu      sync.Mutex
	clients map[*client]struct{}
	// gone, when set, is closed (and cleared) by the last client to
	// unregister: Shutdown waits on it.
	gone     chan struct{}
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

// New returns a Server. Run does its background work; Shutdown stops it
// (lifecycle.go).
func New(opts Options) *Server {
	opts = opts.withDefaults()
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

		limits: opts.Limits,
		tm:     opts.Timings.transport(),
	}
	s.stop, s.stopAll = context.WithCancel(context.Background())
	var err error
	if s.sse, err = transport.NewSSENode(&s.alarms, s.tm); err != nil {
		s.log.Warn("no hangup watcher: each SSE connection gets a reader goroutine", "err", err)
	}
	s.ipLimits = newIPLimits(s.limits)
	s.guests = newGuestPolicy(opts.PublicCommunities, opts.GuestKey, s.limits.TrustedProxies)
	s.polls = newPollLeases(s)
	s.metrics = newMetrics(s)
	s.clientEnv = newClientEnv(s)
	s.svc = newServiceAPI(s)
	s.history = &historyAPI{bus: s.bus, svc: s.svc, identify: s.identify, now: s.now}
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
