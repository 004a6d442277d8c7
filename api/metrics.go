package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the node's Prometheus metrics (GET /metrics). Each Server has
// its own registry: no package-level state. Labels never name a community
// or a user; per-community figures go through GET .../stats instead.
type metrics struct {
	reg *prometheus.Registry
	// gather is what GET /metrics shows: reg, then Options.Metrics.
	gather prometheus.Gatherer

	open          *prometheus.GaugeVec     // transport, stream
	accepted      *prometheus.CounterVec   // transport, stream
	refused       *prometheus.CounterVec   // transport, code
	closed        *prometheus.CounterVec   // transport, code
	duration      *prometheus.HistogramVec // transport
	sent          *prometheus.CounterVec   // transport
	dropped       prometheus.Counter
	slowConsumers prometheus.Counter
	socketFull    prometheus.Counter
	fanout        prometheus.Histogram
	// busReconnects counts the bus's OnReconnect notices, each of which
	// sends every open stream a fresh snapshot (server.go).
	busReconnects prometheus.Counter
	// hookCalls and hookLatency: calls to the platform's auth hook, by
	// outcome (allowed, unauthorized, forbidden, timeout, error).
	hookCalls   *prometheus.CounterVec
	hookLatency prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "footfall_connections_open", Help: "Open stream connections on this node.",
		}, []string{"transport", "stream"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "footfall_connections_accepted_total", Help: "Stream connections authenticated and opened.",
		}, []string{"transport", "stream"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "footfall_connections_refused_total", Help: "Stream connections refused, by close code (4001-4004) or HTTP status.",
		}, []string{"transport", "code"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "footfall_connections_closed_total", Help: "Open stream connections that ended, by close code (0: the peer went away without one).",
		}, []string{"transport", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "footfall_connection_duration_seconds", Help: "How long stream connections stayed open.",
			Buckets: []float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600},
		}, []string{"transport"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "footfall_messages_sent_total", Help: "Messages written to clients.",
		}, []string{"transport"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "footfall_messages_dropped_total", Help: "Messages not delivered because their client's queue was full.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "footfall_slow_consumer_disconnects_total", Help: "Clients disconnected because they did not keep up.",
		}),
		socketFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "footfall_socket_full_total", Help: "WebSocket messages a client's socket did not take at once: the rest went to a writer goroutine that waits for the client. Rising fast means clients (or the node) fall behind.",
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "footfall_broadcast_fanout_duration_seconds", Help: "Time to hand one event to every local subscriber of its community.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
		busReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "footfall_bus_reconnects_total", Help: "Times the bus was connected again after an outage, had re-registered its state and resubscribed, and open streams got fresh snapshots.",
		}),
	}
	m.hookCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "footfall_auth_hook_calls_total", Help: "Calls to the platform's auth hook, by outcome: allowed, unauthorized, forbidden, timeout, error (5xx, nonsense, unreachable).",
	}, []string{"outcome"})
	m.hookLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "footfall_auth_hook_duration_seconds", Help: "How long the platform's auth hook took to answer (or to fail).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
	})
	reg.MustRegister(m.open, m.accepted, m.refused, m.closed, m.duration, m.sent, m.dropped,
		m.slowConsumers, m.socketFull, m.fanout, m.busReconnects, m.hookCalls, m.hookLatency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "footfall_present_visitors",
			Help: "Present visitors summed over the communities this node holds (has clients or pollers for).",
		}, func() float64 { return float64(s.hub.PresentTotal()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "footfall_ready",
			Help: "1 while the node would answer /readyz 200 (not shutting down, the bus reachable and its state re-registered after an outage), else 0. Read at each scrape (one bus ping).",
		}, func() float64 {
			if s.ready(context.Background()) != nil {
				return 0
			}
			return 1
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(busCollectors(s.bus)...)
	m.gather = reg
	if s.opts.Metrics != nil {
		m.gather = prometheus.Gatherers{reg, s.opts.Metrics}
	}
	return m
}

// busCollectors are the metrics of the bus itself. A bus that counts its
// failures and recoveries (streams.BusStatsReporter: the Valkey bus) is
// read at each scrape. footfall_bus_reconnects_total is not among them: the
// gateway counts the bus's reconnect notices itself (see New), the same
// events as BusStats.Reconnects. A bus without stats (the memory bus, which
// cannot fail) still shows footfall_bus_errors_total, at 0, so that
// dashboards and alerts work on every deployment.
func busCollectors(bus streams.Bus) []prometheus.Collector {
	r, ok := bus.(streams.BusStatsReporter)
	if !ok {
		return []prometheus.Collector{prometheus.NewCounter(prometheus.CounterOpts{
			Name: "footfall_bus_errors_total", Help: "Commands to the bus's backing store that failed (none: the embedded bus has no store to fail).",
		})}
	}
	counter := func(name, help string, read func(streams.BusStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(read(r.BusStats())) })
	}
	return []prometheus.Collector{
		counter("footfall_bus_errors_total",
			"Commands to Valkey that failed (error replies, timeouts, dropped or refused connections), for requests and for the bus's own background work.",
			func(s streams.BusStats) uint64 { return s.Errors }),
		counter("footfall_bus_resubscribes_total",
			"Valkey subscriptions (community events, revocations) confirmed again after their connection dropped.",
			func(s streams.BusStats) uint64 { return s.Resubscribes }),
		counter("footfall_bus_server_restarts_total",
			"Restarts of a Valkey server this node noticed (its run id changed); the node refilled it with its state.",
			func(s streams.BusStats) uint64 { return s.ServerRestarts }),
		counter("footfall_bus_lease_lapses_total",
			"Times this node found its presence lease lapsed (cut off longer than the presence TTL, or Valkey lost its data) and re-registered its visitors.",
			func(s streams.BusStats) uint64 { return s.LeaseLapses }),
		counter("footfall_bus_leases_reaped_total",
			"Lapsed leases of other nodes (dead or cut off) whose visitors this node ended.",
			func(s streams.BusStats) uint64 { return s.LeasesReaped }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "footfall_bus_pending_events",
			Help: "Events and notices from Valkey waiting for the bus's delivery goroutine.",
		}, func() float64 { return float64(r.BusStats().Pending) }),
	}
}

func (m *metrics) handler() echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(m.gather, promhttp.HandlerOpts{}))
}

func (m *metrics) refusedWith(transport string, code int) {
	m.refused.WithLabelValues(transport, strconv.Itoa(code)).Inc()
}

func (m *metrics) opened(c *client) {
	m.accepted.WithLabelValues(c.transport, string(c.stream)).Inc()
	m.open.WithLabelValues(c.transport, string(c.stream)).Inc()
}

func (m *metrics) ended(c *client, code int, d time.Duration) {
	m.open.WithLabelValues(c.transport, string(c.stream)).Dec()
	m.closed.WithLabelValues(c.transport, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(c.transport).Observe(d.Seconds())
}

// stats is GET /api/v1/communities/{id}/stats (service API): the seed's
// "active connections per community", kept out of metric labels.
func (s *Server) stats(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	snap, err := s.bus.Snapshot(c.Request().Context(), community)
	if err != nil {
		return err
	}
	var n streamCounts
	s.mu.Lock()
	if p := s.perCommunity[community]; p != nil {
		n = *p
	}
	s.mu.Unlock()
	conns := map[string]map[string]int{
		"websocket": {string(streams.StreamVisitors): n[0][0], string(streams.StreamDashboard): n[0][1]},
		"sse":       {string(streams.StreamVisitors): n[1][0], string(streams.StreamDashboard): n[1][1]},
	}
	return c.JSON(http.StatusOK, map[string]any{
		"community_id":     community,
		"node_connections": conns,
		"present_visitors": snap.Count,
		"today_visitors": map[string]int{
			"authenticated_visitors": snap.Today.Authenticated,
			"anonymous_visitors":     snap.Today.Anonymous,
			"total_unique_visitors":  snap.Today.Total(),
		},
		"timestamp": rfc3339(s.now()),
	})
}
