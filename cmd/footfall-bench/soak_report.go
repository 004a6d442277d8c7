package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// The report of soak: the samples of the server's figures, whether they
// stayed flat, and the Valkey restarts.

type soakSample struct {
	ElapsedS float64 `json:"elapsed_s"`
	Label    string  `json:"label"`
	RSSKiB   int64   `json:"rss_kib"`
	Threads  int     `json:"threads"`
	FDs      int     `json:"fds"`
	CPUS     float64 `json:"cpu_s"`
	// From GET /metrics, when the server has it (0 otherwise).
	Goroutines   int64 `json:"goroutines,omitempty"`
	HeapInuseKiB int64 `json:"heap_inuse_kib,omitempty"`
	OpenConns    int64 `json:"open_connections,omitempty"`
	NextGCKiB    int64 `json:"next_gc_kib,omitempty"`
}

type soakReport struct {
	Target        string       `json:"target"`
	Nodes         int          `json:"nodes"`
	Valkey        bool         `json:"valkey"`
	DurationS     float64      `json:"duration_s"`
	Clients       int          `json:"clients"`
	Communities   int          `json:"communities"`
	Broadcasts    int          `json:"broadcasts"`
	PublishErrors int          `json:"publish_errors"`
	Reconnects    int          `json:"reconnects"`
	ChurnRounds   int          `json:"churn_rounds"`
	ChurnVisitors int          `json:"churn_visitor_events"`
	ChurnErrors   int          `json:"churn_errors"`
	ConnectFailed int64        `json:"connect_failed"`
	Disconnected  int64        `json:"unexpected_disconnects"`
	Received      int          `json:"probes_received"`
	LatencyP50MS  float64      `json:"latency_p50_ms"`
	LatencyP99MS  float64      `json:"latency_p99_ms"`
	LatencyMaxMS  float64      `json:"latency_max_ms"`
	ServerStats   bool         `json:"server_stats"`
	Metrics       bool         `json:"metrics"` // samples include /metrics figures
	Samples       []soakSample `json:"samples"`
	RSSGrowth     float64      `json:"rss_end_over_start"`
	FDsDelta      int          `json:"fds_end_minus_start"`
	FDsClosedIdle int          `json:"fds_closed_minus_idle"`
	ThreadsDelta  int          `json:"threads_end_minus_start"`
	// From /metrics: goroutines at the end minus at the start (same pool),
	// and after closing every client minus idle.
	GoroutinesDelta      int64   `json:"goroutines_end_minus_start,omitempty"`
	GoroutinesClosedIdle int64   `json:"goroutines_closed_minus_idle,omitempty"`
	HeapGrowth           float64 `json:"heap_end_over_start,omitempty"`
	// RSSSlope is the RSS trend over the second half of the soak (MiB a
	// minute): a heap that has reached its working size is near 0.
	RSSSlope      float64        `json:"rss_second_half_mib_per_min"`
	Flat          bool           `json:"flat"`
	ConnectErrors map[string]int `json:"connect_errors,omitempty"`

	// Valkey restarts: what each did, the nodes' bus metrics at the end,
	// and whether the clients came through every one (no unexpected
	// disconnect, every count converged).
	Outages          []soakOutage         `json:"valkey_restarts,omitempty"`
	BusMetrics       []map[string]float64 `json:"bus_metrics,omitempty"`
	RestartsSurvived bool                 `json:"restarts_survived,omitempty"`
}

// judgeSoak compares the start and end samples: flat means at most 25 %
// more RSS (or an RSS that stopped growing: at most 0.5 MiB a minute over
// the second half, since a Go heap grows to its GC target first), no more
// than a handful of extra descriptors, and the descriptors back at the
// idle figure once the clients are gone.
func judgeSoak(rep *soakReport) {
	if len(rep.Outages) > 0 {
		// Clients stay connected through every outage, /readyz comes back
		// and every count converges.
		rep.RestartsSurvived = rep.Disconnected == 0 && rep.ConnectFailed == 0
		for _, o := range rep.Outages {
			if o.ConvergedAfterRestartS < 0 || slices.Contains(o.Ready200AfterRestartS, -1) || slices.Contains(o.Ready503AfterKillS, -1) {
				rep.RestartsSurvived = false
			}
		}
	}
	find := func(label string) (soakSample, bool) {
		for _, s := range rep.Samples {
			if s.Label == label {
				return s, true
			}
		}
		return soakSample{}, false
	}
	idle, ok1 := find("idle")
	start, ok2 := find("start")
	end, ok3 := find("end")
	closed, ok4 := find("closed")
	if !ok1 || !ok2 || !ok3 || !ok4 || start.RSSKiB == 0 {
		return
	}
	rep.RSSGrowth = round(float64(end.RSSKiB)/float64(start.RSSKiB), 3)
	rep.FDsDelta = end.FDs - start.FDs
	rep.FDsClosedIdle = closed.FDs - idle.FDs
	rep.ThreadsDelta = end.Threads - start.Threads
	if rep.Metrics {
		rep.GoroutinesDelta = end.Goroutines - start.Goroutines
		rep.GoroutinesClosedIdle = closed.Goroutines - idle.Goroutines
		if start.HeapInuseKiB > 0 {
			rep.HeapGrowth = round(float64(end.HeapInuseKiB)/float64(start.HeapInuseKiB), 3)
		}
	}
	var run []soakSample
	for _, s := range rep.Samples {
		if s.Label == "running" || s.Label == "end" {
			run = append(run, s)
		}
	}
	if len(run) >= 3 {
		a, b := run[len(run)/2], run[len(run)-1]
		if dt := b.ElapsedS - a.ElapsedS; dt > 0 {
			rep.RSSSlope = round(float64(b.RSSKiB-a.RSSKiB)/1024/(dt/60), 2)
		}
	}
	slack := max(10, rep.Clients/100)
	memFlat := rep.RSSGrowth <= 1.25 || (len(run) >= 3 && rep.RSSSlope <= 0.5)
	rep.Flat = memFlat && rep.FDsDelta <= slack && rep.FDsClosedIdle <= 10
	if rep.Metrics {
		rep.Flat = rep.Flat && rep.GoroutinesDelta <= int64(2*slack) && rep.GoroutinesClosedIdle <= 20
	}
}

func writeSoakText(w io.Writer, rep soakReport) {
	fmt.Fprintf(w, "footfall-bench soak: target=%s duration=%gs clients=%d communities=%d\n", rep.Target, rep.DurationS, rep.Clients, rep.Communities)
	if rep.Valkey {
		fmt.Fprintf(w, "  on Valkey, %d node(s); server figures below are summed over the nodes\n", rep.Nodes)
	}
	fmt.Fprintf(w, "  broadcasts %d (errors %d), reconnects %d, churn rounds %d (%d visitor events, errors %d)\n",
		rep.Broadcasts, rep.PublishErrors, rep.Reconnects, rep.ChurnRounds, rep.ChurnVisitors, rep.ChurnErrors)
	fmt.Fprintf(w, "  connect failures %d, unexpected disconnects %d, probes received %d, latency p50 %.1f ms p99 %.1f ms max %.1f ms\n",
		rep.ConnectFailed, rep.Disconnected, rep.Received, rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS)
	writeErrors(w, rep.ConnectErrors)
	if !rep.ServerStats {
		fmt.Fprintln(w, "  server statistics: n/a (pass --server-pid for a --target URL)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  elapsed\tsample\tRSS\theap in use\tGC goal\tgoroutines\topen conns\tthreads\tfds\tCPU")
	for _, s := range rep.Samples {
		heap, goal, gor, open := "n/a", "n/a", "n/a", "n/a"
		if rep.Metrics {
			heap, goal = fmt.Sprintf("%.1f MiB", float64(s.HeapInuseKiB)/1024), fmt.Sprintf("%.1f MiB", float64(s.NextGCKiB)/1024)
			gor, open = strconv.FormatInt(s.Goroutines, 10), strconv.FormatInt(s.OpenConns, 10)
		}
		fmt.Fprintf(tw, "  %.0f s\t%s\t%.1f MiB\t%s\t%s\t%s\t%s\t%d\t%d\t%.1f s\n", s.ElapsedS, s.Label, float64(s.RSSKiB)/1024, heap, goal, gor, open, s.Threads, s.FDs, s.CPUS)
	}
	tw.Flush()
	if rep.Metrics {
		fmt.Fprintf(w, "  goroutines end vs start %+d, closed vs idle %+d; heap in use end/start x%.3f\n", rep.GoroutinesDelta, rep.GoroutinesClosedIdle, rep.HeapGrowth)
	}
	verdict := "FLAT"
	if !rep.Flat {
		verdict = "NOT FLAT"
	}
	fmt.Fprintf(w, "  end vs start: RSS x%.3f (second half %+.2f MiB/min), fds %+d, threads %+d; after closing every client fds %+d vs idle: %s\n",
		rep.RSSGrowth, rep.RSSSlope, rep.FDsDelta, rep.ThreadsDelta, rep.FDsClosedIdle, verdict)
	writeOutagesText(w, rep)
}

// writeOutagesText reports the Valkey restarts, if any.
func writeOutagesText(w io.Writer, rep soakReport) {
	for i, o := range rep.Outages {
		conv := "NOT converged within 60 s"
		if o.ConvergedAfterRestartS >= 0 {
			conv = fmt.Sprintf("every count converged %.2f s after it", o.ConvergedAfterRestartS)
		}
		if !o.ConvergedBeforeKill {
			conv += " (the counts had not settled before the kill)"
		}
		fmt.Fprintf(w, "  valkey restart %d at %.0f s: down %.1f s; /readyz 503 %v s after the kill, 200 %v s after the restart (per node); %d visitors left while it was down; %s (%d clients); unexpected disconnects %d\n",
			i+1, o.AtS, o.DownS, o.Ready503AfterKillS, o.Ready200AfterRestartS, o.LeftWhileDown, conv, o.Watched, o.Disconnects)
	}
	for i, m := range rep.BusMetrics {
		names := slices.Sorted(maps.Keys(m))
		parts := make([]string, len(names))
		for j, n := range names {
			parts[j] = fmt.Sprintf("%s %g", strings.TrimPrefix(n, "footfall_bus_"), m[n])
		}
		fmt.Fprintf(w, "  node %d bus metrics: %s\n", i+1, strings.Join(parts, ", "))
	}
	if len(rep.Outages) > 0 {
		verdict := "SURVIVED"
		if !rep.RestartsSurvived {
			verdict = "NOT SURVIVED"
		}
		fmt.Fprintf(w, "  valkey restarts: %d; unexpected disconnects %d, connect failures %d: %s\n", len(rep.Outages), rep.Disconnected, rep.ConnectFailed, verdict)
	}
}
