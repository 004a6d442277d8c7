package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serverMetrics are the figures the harness reads from a footfall's
// Prometheus endpoint (GET /metrics) when it has one: the Go runtime's
// goroutine count and heap, and the open stream connections.
type serverMetrics struct {
	Goroutines   int64 `json:"goroutines"`
	HeapInuseKiB int64 `json:"heap_inuse_kib"`
	StackKiB     int64 `json:"stack_inuse_kib"`
	OpenConns    int64 `json:"open_connections"`
	// NextGCKiB is the GC's heap goal, set from the heap marked live at the
	// last collection (about twice it with GOGC=100): unlike the heap in
	// use it holds no garbage, so it is the steadier leak signal.
	NextGCKiB int64 `json:"next_gc_kib"`
	// SocketFull counts messages whose client's socket was full, so that a
	// writer goroutine took over (footfall_socket_full_total).
	SocketFull int64 `json:"socket_full"`
}

// scrapeMetrics reads /metrics; ok is false when the server has none.
func (t *target) scrapeMetrics(ctx context.Context) (serverMetrics, bool) {
	sums, ok := t.metricSums(ctx, func(name string) bool { return knownMetrics[name] })
	if !ok {
		return serverMetrics{}, false
	}
	return serverMetricsOf(sums)
}

// metricSums reads the server's /metrics and sums, over their labels, the
// samples of the metrics keep accepts; ok is false when the server has no
// /metrics.
func (t *target) metricSums(ctx context.Context, keep func(name string) bool) (map[string]float64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/metrics", nil)
	if err != nil {
		return nil, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	return sumMetrics(resp.Body, keep), true
}

// knownMetrics are the samples serverMetrics is made of.
var knownMetrics = map[string]bool{
	"go_goroutines": true, "go_memstats_heap_inuse_bytes": true, "go_memstats_stack_inuse_bytes": true,
	"go_memstats_next_gc_bytes": true, "footfall_connections_open": true, "footfall_socket_full_total": true,
}

// parseMetrics sums the samples of the few metrics it knows (over their
// labels) from the Prometheus text format.
func parseMetrics(r io.Reader) (serverMetrics, bool) {
	return serverMetricsOf(sumMetrics(r, func(name string) bool { return knownMetrics[name] }))
}

func serverMetricsOf(sums map[string]float64) (serverMetrics, bool) {
	if len(sums) == 0 {
		return serverMetrics{}, false
	}
	return serverMetrics{
		Goroutines:   int64(sums["go_goroutines"]),
		HeapInuseKiB: int64(sums["go_memstats_heap_inuse_bytes"] / 1024),
		StackKiB:     int64(sums["go_memstats_stack_inuse_bytes"] / 1024),
		OpenConns:    int64(sums["footfall_connections_open"]),
		NextGCKiB:    int64(sums["go_memstats_next_gc_bytes"] / 1024),
		SocketFull:   int64(sums["footfall_socket_full_total"]),
	}, true
}

// sumMetrics sums, by metric name over their labels, the samples of the
// Prometheus text format that keep accepts.
func sumMetrics(r io.Reader, keep func(name string) bool) map[string]float64 {
	sums := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			rest = strings.TrimSpace(line[j+1:])
		}
		if !keep(name) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sums[name] += v
	}
	return sums
}
