package api_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// busMetrics are the bus's metrics (bus errors, reconnects,
// resubscribes), each an unlabelled sample.
var busMetrics = []string{
	"footfall_bus_errors_total",
	"footfall_bus_reconnects_total",
	"footfall_bus_resubscribes_total",
	"footfall_bus_server_restarts_total",
	"footfall_bus_lease_lapses_total",
	"footfall_bus_leases_reaped_total",
	"footfall_bus_pending_events",
}

// scrape reads the node's /metrics over HTTP: the unlabelled samples by
// name, and the whole text.
func (g *gateway) scrape() (map[string]float64, string) {
	g.t.Helper()
	resp, err := http.Get(g.ts.URL + "/metrics")
	if err != nil {
		g.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		g.t.Fatalf("GET /metrics = %d, %v", resp.StatusCode, err)
	}
	vals := make(map[string]float64)
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			vals[name] = f
		}
	}
	return vals, string(body)
}

// waitMetrics scrapes until ok holds, failing after within.
func (g *gateway) waitMetrics(within time.Duration, what string, ok func(map[string]float64) bool) map[string]float64 {
	g.t.Helper()
	deadline := time.Now().Add(within)
	for {
		vals, _ := g.scrape()
		if ok(vals) {
			return vals
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("waited %v for %s; /metrics has %v", within, what, pick(vals, busMetrics))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pick(vals map[string]float64, names []string) map[string]float64 {
	out := make(map[string]float64, len(names))
	for _, n := range names {
		if v, ok := vals[n]; ok {
			out[n] = v
		}
	}
	return out
}

// TestBusMetricsMemory: the embedded bus cannot fail; it shows its error
// counter at 0 and nothing of the Valkey bus's recoveries.
func TestBusMetricsMemory(t *testing.T) {
	g := newGateway(t, nil)
	vals, _ := g.scrape()
	for name, want := range map[string]float64{"footfall_bus_errors_total": 0, "footfall_bus_reconnects_total": 0} {
		if got, ok := vals[name]; !ok || got != want {
			t.Errorf("/metrics %s = %v (present %v); want %v", name, got, ok, want)
		}
	}
	if _, ok := vals["footfall_bus_resubscribes_total"]; ok {
		t.Errorf("/metrics of a node on the memory bus has footfall_bus_resubscribes_total")
	}
}

// TestBusMetricsValkey runs a node on a real redis-server and watches its
// bus metrics move: another node dies (its lease is reaped), then Valkey
// stops and restarts empty (errors, a lapsed lease, a server restart,
// resubscriptions and a reconnect), while a client stays connected.
func TestBusMetricsValkey(t *testing.T) {
	srv := valkeytest.Start(t)
	a, _ := valkeyNode(t, srv.URL())
	c := randomCommunity()
	w := a.dial(visitorsPath(c), memberOf(t, "watcher", c))
	w.readType("visitor_count")

	start, text := a.scrape()
	for _, name := range busMetrics {
		if _, ok := start[name]; !ok {
			t.Errorf("/metrics lacks %s (unlabelled)", name)
		}
	}
	for _, name := range []string{"footfall_bus_reconnects_total", "footfall_bus_resubscribes_total", "footfall_bus_server_restarts_total", "footfall_bus_lease_lapses_total", "footfall_bus_leases_reaped_total"} {
		if start[name] != 0 {
			t.Errorf("/metrics %s = %v before any outage; want 0", name, start[name])
		}
	}
	if strings.Contains(text, c) || strings.Contains(text, "watcher") {
		t.Errorf("/metrics names a community or a user")
	}

	// A node dies without goodbye: node A reaps its lease.
	doomed, doomedBus := valkeyNode(t, srv.URL())
	v := doomed.dial(visitorsPath(c), memberOf(t, "doomed-visitor", c))
	v.readType("visitor_count")
	readFor(w, 5*time.Second, "visitor_joined", countIs(2))
	doomedBus.Abandon()
	v.conn.Close() // its node would never say goodbye for it
	readFor(w, 10*nodeTTL, "visitor_left", countIs(1))
	a.waitMetrics(10*time.Second, "a reaped lease", func(m map[string]float64) bool {
		return m["footfall_bus_leases_reaped_total"] >= 1
	})

	// Valkey goes away and comes back empty.
	before, _ := a.scrape()
	srv.Stop()
	a.waitMetrics(10*time.Second, "bus errors while Valkey is down", func(m map[string]float64) bool {
		return m["footfall_bus_errors_total"] > before["footfall_bus_errors_total"]
	})
	srv.Restart()
	after := a.waitMetrics(20*time.Second, "the node's recovery after the restart", func(m map[string]float64) bool {
		return m["footfall_bus_reconnects_total"] > before["footfall_bus_reconnects_total"] &&
			m["footfall_bus_resubscribes_total"] > before["footfall_bus_resubscribes_total"] &&
			m["footfall_bus_server_restarts_total"] > before["footfall_bus_server_restarts_total"] &&
			m["footfall_bus_lease_lapses_total"] > before["footfall_bus_lease_lapses_total"]
	})
	t.Logf("bus metrics after the restart: %v", pick(after, busMetrics))
	// The watcher stayed connected throughout and still gets answers.
	w.send(map[string]string{"type": "request_count"})
	readFor(w, 5*time.Second, "visitor_count", countIs(1))
}
