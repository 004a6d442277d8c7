package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Report is the result of one `run` (or the median of several). Times are
// milliseconds, CPU seconds, memory KiB.
type Report struct {
	// Parameters.
	Target      string  `json:"target"`
	Transport   string  `json:"transport"`
	Stream      string  `json:"stream"`
	Clients     int     `json:"clients"`
	Communities int     `json:"communities"`
	Broadcasts  int     `json:"broadcasts"`
	Rate        float64 `json:"rate_per_s"`
	ConnectRate float64 `json:"connect_rate_per_s"`
	ServerCPU   string  `json:"server_cpu,omitempty"`
	ClientCPU   string  `json:"client_cpu,omitempty"`
	Runs        int     `json:"runs"` // 1, or how many runs this is the median of
	// LoadAvg is the machine's 1-minute load average when the run began:
	// other work on the machine shows here.
	LoadAvg float64 `json:"load_avg_1m"`
	// OtherCPUS is the CPU time every other process on the machine used
	// during the run (all CPUs busy time minus the server's and the
	// harness's): on a shared machine, what disturbed the figures.
	OtherCPUS float64 `json:"other_cpu_s"`

	// Connecting: dial start to the first message (footfall's snapshot,
	// the baseline's hello).
	Connected      int     `json:"connected"`
	ConnectFailed  int     `json:"connect_failed"`
	ConnectTotalMS float64 `json:"connect_total_ms"`
	ConnectP50MS   float64 `json:"connect_p50_ms"`
	ConnectP99MS   float64 `json:"connect_p99_ms"`

	// Delivery of the probes: publish call to client receive.
	Expected      int64   `json:"expected"`
	Received      int64   `json:"received"`
	DeliveryRatio float64 `json:"delivery_ratio"`
	LatencyP50MS  float64 `json:"latency_p50_ms"`
	LatencyP99MS  float64 `json:"latency_p99_ms"`
	LatencyMaxMS  float64 `json:"latency_max_ms"`
	PublishP50MS  float64 `json:"publish_p50_ms"`
	PublishP99MS  float64 `json:"publish_p99_ms"`
	PublishErrors int     `json:"publish_errors"`
	Disconnected  int     `json:"disconnected"` // ready clients whose connection ended early

	// The server process (when its pid is known).
	ServerStats     bool    `json:"server_stats"`
	RSSBeforeKiB    int64   `json:"rss_before_kib"`
	RSSConnectedKiB int64   `json:"rss_connected_kib"`
	RSSEndKiB       int64   `json:"rss_end_kib"`
	RSSPerConnKiB   float64 `json:"rss_per_conn_kib"`
	ServerThreads   int     `json:"server_threads"`
	// From GET /metrics, when the server has it.
	Metrics           bool    `json:"metrics"`
	Goroutines        int64   `json:"server_goroutines"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
	HeapPerConnKiB    float64 `json:"heap_inuse_per_conn_kib"`
	// SocketFull is how many messages found their client's socket full
	// (footfall's /metrics), from connecting to the end of the broadcasts.
	SocketFull        int64          `json:"socket_full"`
	ServerFDs         int            `json:"server_fds"`
	ServerCPUConnectS float64        `json:"server_cpu_connect_s"`
	ServerCPUFanoutS  float64        `json:"server_cpu_broadcast_s"`
	ServerCPUTotalS   float64        `json:"server_cpu_s"`
	ClientCPUS        float64        `json:"client_cpu_s"`
	ServerCPUPerMsgUS float64        `json:"server_cpu_per_delivery_us"`
	ConnectErrors     map[string]int `json:"connect_errors,omitempty"`
}

// medianReport is the median of each measured figure of rs (same
// parameters).
func medianReport(rs []Report) Report {
	if len(rs) == 0 {
		return Report{}
	}
	if len(rs) == 1 {
		return rs[0]
	}
	m := rs[0]
	m.Runs = len(rs)
	medianInto(&m, rs, func(r *Report) []any {
		return []any{&r.Connected, &r.ConnectFailed, &r.ConnectTotalMS, &r.ConnectP50MS, &r.ConnectP99MS,
			&r.Expected, &r.Received, &r.DeliveryRatio, &r.LatencyP50MS, &r.LatencyP99MS, &r.LatencyMaxMS,
			&r.PublishP50MS, &r.PublishP99MS, &r.PublishErrors, &r.Disconnected,
			&r.RSSBeforeKiB, &r.RSSConnectedKiB, &r.RSSEndKiB, &r.RSSPerConnKiB,
			&r.Goroutines, &r.GoroutinesPerConn, &r.HeapPerConnKiB, &r.ServerThreads, &r.ServerFDs,
			&r.ServerCPUConnectS, &r.ServerCPUFanoutS, &r.ServerCPUTotalS, &r.ClientCPUS, &r.ServerCPUPerMsgUS,
			&r.LoadAvg, &r.OtherCPUS}
	})
	m.ConnectErrors = nil
	for _, r := range rs {
		for k, v := range r.ConnectErrors {
			if m.ConnectErrors == nil {
				m.ConnectErrors = map[string]int{}
			}
			m.ConnectErrors[k] += v
		}
	}
	return m
}

// medianOf is the runs of a measurement and their median.
type medianOf[T any] struct {
	Median T   `json:"median"`
	Runs   []T `json:"runs"`
}

// runResult is one target's runs and their median.
type runResult = medianOf[Report]

// targetCheck is one benchmark target (BENCHMARKS.md, "Targets") checked
// against a measurement.
type targetCheck struct {
	What     string  `json:"what"`
	Target   string  `json:"target"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
}

// compareResult is `run --compare`: the baseline and footfall, measured in
// the same invocation, with footfall/baseline ratios of the medians.
type compareResult struct {
	Baseline runResult          `json:"baseline"`
	Footfall runResult          `json:"footfall"`
	Ratios   map[string]float64 `json:"ratios"`
	Targets  []targetCheck      `json:"targets"`
}

func newCompare(base, ff runResult) compareResult {
	b, f := base.Median, ff.Median
	cr := compareResult{Baseline: base, Footfall: ff, Ratios: map[string]float64{
		"connect_p50":          ratio(f.ConnectP50MS, b.ConnectP50MS),
		"connect_p99":          ratio(f.ConnectP99MS, b.ConnectP99MS),
		"latency_p50":          ratio(f.LatencyP50MS, b.LatencyP50MS),
		"latency_p99":          ratio(f.LatencyP99MS, b.LatencyP99MS),
		"latency_max":          ratio(f.LatencyMaxMS, b.LatencyMaxMS),
		"rss_per_conn":         ratio(f.RSSPerConnKiB, b.RSSPerConnKiB),
		"server_cpu_connect":   ratio(f.ServerCPUConnectS, b.ServerCPUConnectS),
		"server_cpu_broadcast": ratio(f.ServerCPUFanoutS, b.ServerCPUFanoutS),
		"client_cpu":           ratio(f.ClientCPUS, b.ClientCPUS),
	}}
	cr.Targets = checkTargets(f, cr.Ratios["latency_p99"])
	return cr
}

// checkTargets lists the benchmark targets a run report speaks to.
func checkTargets(f Report, p99Ratio float64) []targetCheck {
	var ts []targetCheck
	if f.Broadcasts > 0 {
		ts = append(ts, targetCheck{What: "every client receives every broadcast", Target: "delivery ratio 1", Measured: f.DeliveryRatio, Met: f.DeliveryRatio >= 1})
		if p99Ratio > 0 {
			ts = append(ts, targetCheck{What: "broadcast p99 vs bare baseline", Target: "<= 1.3x", Measured: p99Ratio, Unit: "x", Met: p99Ratio <= 1.3})
		}
		ts = append(ts, targetCheck{What: "seed promise: sub-100 ms delivery", Target: "p99 < 100 ms", Measured: f.LatencyP99MS, Unit: "ms", Met: f.LatencyP99MS < 100})
	}
	if f.ServerStats {
		limit := 12.0
		if f.Transport == "sse" {
			limit = 16
		}
		ts = append(ts, targetCheck{What: "RSS per " + f.Transport + " connection", Target: fmt.Sprintf("<= %g KiB", limit), Measured: f.RSSPerConnKiB, Unit: "KiB", Met: f.RSSPerConnKiB <= limit})
	}
	return ts
}

// writeTitle prints a report's first line and, when its figures are the
// medians of several runs, how many (note says more).
func writeTitle(w io.Writer, runs int, note, format string, args ...any) {
	fmt.Fprintf(w, format+"\n", args...)
	if runs > 1 {
		fmt.Fprintf(w, "median of %d runs%s\n", runs, note)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func params(r Report) string {
	s := fmt.Sprintf("transport=%s stream=%s clients=%d communities=%d broadcasts=%d rate=%g/s connect-rate=%g/s",
		r.Transport, r.Stream, r.Clients, r.Communities, r.Broadcasts, r.Rate, r.ConnectRate)
	if r.ServerCPU != "" {
		s += " server-cpu=" + r.ServerCPU
	}
	if r.ClientCPU != "" {
		s += " client-cpu=" + r.ClientCPU
	}
	return s
}

func kib(k int64) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }

// rows are the text report's lines: a label and one value per report.
func rows(rs []Report) [][]string {
	var out [][]string
	add := func(label string, f func(Report) string) {
		row := []string{label}
		for _, r := range rs {
			row = append(row, f(r))
		}
		out = append(out, row)
	}
	add("connected", func(r Report) string { return fmt.Sprintf("%d/%d", r.Connected, r.Clients) })
	add("connect total", func(r Report) string { return fmt.Sprintf("%.0f ms", r.ConnectTotalMS) })
	add("connect p50 / p99", func(r Report) string { return fmt.Sprintf("%.1f / %.1f ms", r.ConnectP50MS, r.ConnectP99MS) })
	broadcasts := false
	for _, r := range rs {
		broadcasts = broadcasts || r.Broadcasts > 0
	}
	if broadcasts {
		add("delivery", func(r Report) string {
			return fmt.Sprintf("%d/%d = %.4f", r.Received, r.Expected, r.DeliveryRatio)
		})
		add("latency p50", func(r Report) string { return fmt.Sprintf("%.1f ms", r.LatencyP50MS) })
		add("latency p99", func(r Report) string { return fmt.Sprintf("%.1f ms", r.LatencyP99MS) })
		add("latency max", func(r Report) string { return fmt.Sprintf("%.1f ms", r.LatencyMaxMS) })
		add("publish call p50 / p99", func(r Report) string { return fmt.Sprintf("%.2f / %.2f ms", r.PublishP50MS, r.PublishP99MS) })
	}
	add("errors (publish/disconnect)", func(r Report) string { return fmt.Sprintf("%d / %d", r.PublishErrors, r.Disconnected) })
	stat := func(f func(Report) string) func(Report) string {
		return func(r Report) string {
			if !r.ServerStats {
				return "n/a"
			}
			return f(r)
		}
	}
	add("server RSS idle / connected / end", stat(func(r Report) string {
		return kib(r.RSSBeforeKiB) + " / " + kib(r.RSSConnectedKiB) + " / " + kib(r.RSSEndKiB)
	}))
	add("RSS per connection", stat(func(r Report) string { return fmt.Sprintf("%.1f KiB", r.RSSPerConnKiB) }))
	add("server threads / fds", stat(func(r Report) string { return fmt.Sprintf("%d / %d", r.ServerThreads, r.ServerFDs) }))
	add("goroutines (per conn) / heap per conn", func(r Report) string {
		if !r.Metrics {
			return "n/a (no /metrics)"
		}
		return fmt.Sprintf("%d (%.2f) / %.1f KiB", r.Goroutines, r.GoroutinesPerConn, r.HeapPerConnKiB)
	})
	add("server CPU connect / broadcast", stat(func(r Report) string {
		return fmt.Sprintf("%.2f / %.2f s", r.ServerCPUConnectS, r.ServerCPUFanoutS)
	}))
	if broadcasts {
		add("server CPU per delivery", stat(func(r Report) string { return fmt.Sprintf("%.1f µs", r.ServerCPUPerMsgUS) }))
	}
	add("client CPU", func(r Report) string { return fmt.Sprintf("%.2f s", r.ClientCPUS) })
	add("other processes' CPU / load at start", func(r Report) string { return fmt.Sprintf("%.2f s / %.2f", r.OtherCPUS, r.LoadAvg) })
	return out
}

// writeRunText prints one target's result.
func writeRunText(w io.Writer, res runResult) {
	m := res.Median
	writeTitle(w, m.Runs, "", "footfall-bench run: target=%s %s", m.Target, params(m))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range rows([]Report{m}) {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	writeErrors(w, m.ConnectErrors)
	if m.Runs > 1 {
		writeRunLines(w, m.Target, res.Runs)
	}
	writeTargets(w, checkTargets(m, 0))
}

func writeRunLines(w io.Writer, name string, rs []Report) {
	for i, r := range rs {
		if r.Broadcasts == 0 {
			fmt.Fprintf(w, "  %s run %d: connect p99 %.1f ms, RSS/conn %.1f KiB, server CPU %.2f s, other CPU %.2f s\n",
				name, i+1, r.ConnectP99MS, r.RSSPerConnKiB, r.ServerCPUTotalS, r.OtherCPUS)
			continue
		}
		full := ""
		if r.Metrics {
			full = fmt.Sprintf(", socket full %d", r.SocketFull)
		}
		fmt.Fprintf(w, "  %s run %d: delivery %.4f, p50 %.1f ms, p99 %.1f ms, max %.1f ms, RSS/conn %.1f KiB, server CPU %.2f s, other CPU %.2f s%s\n",
			name, i+1, r.DeliveryRatio, r.LatencyP50MS, r.LatencyP99MS, r.LatencyMaxMS, r.RSSPerConnKiB, r.ServerCPUTotalS, r.OtherCPUS, full)
	}
}

func writeErrors(w io.Writer, errs map[string]int) {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  connect error x%d: %s\n", errs[k], k)
	}
}

func writeTargets(w io.Writer, ts []targetCheck) {
	for _, t := range ts {
		verdict := "MET"
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "target: %-52s %-16s measured %g%s  %s\n", t.What, t.Target, round(t.Measured, 3), t.Unit, verdict)
	}
}

// writeCompareText prints the baseline and footfall side by side.
func writeCompareText(w io.Writer, cr compareResult) {
	b, f := cr.Baseline.Median, cr.Footfall.Median
	fmt.Fprintf(w, "footfall-bench run --compare: %s\n", params(f))
	if f.Runs > 1 {
		fmt.Fprintf(w, "medians of %d runs each (alternating baseline, footfall)\n", f.Runs)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\tbaseline\t%s\tratio\n", f.Target)
	ratios := map[string]string{
		"connect p50 / p99":              fmt.Sprintf("%.2fx / %.2fx", cr.Ratios["connect_p50"], cr.Ratios["connect_p99"]),
		"latency p50":                    fmt.Sprintf("%.2fx", cr.Ratios["latency_p50"]),
		"latency p99":                    fmt.Sprintf("%.2fx", cr.Ratios["latency_p99"]),
		"latency max":                    fmt.Sprintf("%.2fx", cr.Ratios["latency_max"]),
		"RSS per connection":             fmt.Sprintf("%.2fx", cr.Ratios["rss_per_conn"]),
		"server CPU connect / broadcast": fmt.Sprintf("%.2fx / %.2fx", cr.Ratios["server_cpu_connect"], cr.Ratios["server_cpu_broadcast"]),
		"client CPU":                     fmt.Sprintf("%.2fx", cr.Ratios["client_cpu"]),
	}
	for _, row := range rows([]Report{b, f}) {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t"+ratios[row[0]])
	}
	tw.Flush()
	writeErrors(w, b.ConnectErrors)
	writeErrors(w, f.ConnectErrors)
	if f.Runs > 1 {
		writeRunLines(w, "baseline", cr.Baseline.Runs)
		writeRunLines(w, f.Target, cr.Footfall.Runs)
	}
	writeTargets(w, cr.Targets)
}
