package api

import (
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
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
	// Timings are the connections' and the background work's timings;
	// zero fields take DefaultTimings.
	Timings Timings
	// DrainSpread is how long Shutdown takes to tell the open streams to
	// go, in evenly spaced batches (docs/protocol.md, Shutdown); 0: all at
	// once.
	DrainSpread time.Duration

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

// Timings are a node's connection timings and the periods of its
// background work. They are the Server's own (tests give each node its
// own), passed down to api/internal/transport as values.
type Timings struct {
	// WriteWait bounds every write to a client: one that does not take a
	// frame in this time is gone (10 s).
	WriteWait time.Duration
	// PingEvery is the WebSocket keepalive (25 s); PongWait is how long a
	// silent WebSocket peer is kept (60 s).
	PingEvery time.Duration
	PongWait  time.Duration
	// SSELinger is how long an idle SSE session of a hijacked connection
	// stays up after its last message before it parks (2 s).
	SSELinger time.Duration
	// HookRecheck is how often the streams the auth hook admitted are
	// looked at for a verdict that ran out (1 s).
	HookRecheck time.Duration
}

// DefaultTimings returns the timings a node runs with unless configured.
func DefaultTimings() Timings {
	t := transport.DefaultTimings()
	return Timings{
		WriteWait:   t.WriteWait,
		PingEvery:   t.PingEvery,
		PongWait:    t.PongWait,
		SSELinger:   t.SSELinger,
		HookRecheck: time.Second,
	}
}

func (t Timings) withDefaults() Timings {
	d := DefaultTimings()
	if t.WriteWait <= 0 {
		t.WriteWait = d.WriteWait
	}
	if t.PingEvery <= 0 {
		t.PingEvery = d.PingEvery
	}
	if t.PongWait <= 0 {
		t.PongWait = d.PongWait
	}
	if t.SSELinger <= 0 {
		t.SSELinger = d.SSELinger
	}
	if t.HookRecheck <= 0 {
		t.HookRecheck = d.HookRecheck
	}
	return t
}

// transport is what api/internal/transport takes of them.
func (t Timings) transport() transport.Timings {
	return transport.Timings{WriteWait: t.WriteWait, PingEvery: t.PingEvery, PongWait: t.PongWait, SSELinger: t.SSELinger}
}

// withDefaults fills in every setting that o leaves zero: the one place
// where a Server's defaults are applied.
func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 30 * time.Second
	}
	if o.DashboardInterval <= 0 {
		o.DashboardInterval = 30 * time.Second
	}
	if o.SSEHeartbeat <= 0 {
		o.SSEHeartbeat = 15 * time.Second
	}
	if o.DrainSpread < 0 {
		o.DrainSpread = 0
	}
	o.Limits = o.Limits.withDefaults()
	o.Timings = o.Timings.withDefaults()
	return o
}
