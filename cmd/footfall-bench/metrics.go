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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/metrics", nil)
	if err != nil {
		return serverMetrics{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return serverMetrics{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverMetrics{}, false
	}
	return parseMetrics(resp.Body)
}

// parseMetrics sums the samples of the few metrics it knows (over their
// labels) from the Prometheus text format.
func parseMetrics(r io.Reader) (serverMetrics, bool) {
	sums := map[string]float64{}
	seen := false
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
		switch name {
		case "go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_next_gc_bytes", "footfall_connections_open", "footfall_socket_full_total":
		default:
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
		seen = true
	}
	if !seen {
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
