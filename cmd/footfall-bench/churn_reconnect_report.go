package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// The report of churn --mode reconnect: a run's figures by phase, their
// medians per leave grace, the ratios of the grace on to off, and the text.

// reconnectPhase is the measurement of one phase of one run.
type reconnectPhase struct {
	Phase string `json:"phase"`
	// Reconnects: returns that got their first message (each a join).
	Reconnects int `json:"reconnects"`
	Failed     int `json:"failed"`
	// WallS: the phase (load: --duration; paced: first drop to last return).
	WallS float64 `json:"wall_s"`
	// JoinsPerS: returns that got their first message within WallS, per second.
	JoinsPerS  float64 `json:"joins_per_s"`
	SetupP50MS float64 `json:"setup_p50_ms"` // dial to first message
	SetupP99MS float64 `json:"setup_p99_ms"`
	// Load phase: the server's CPU within WallS, when its pid is known:
	// its share of one CPU, per join, and joins per second of server CPU
	// (what one core of this node sustains when the joins are all it does).
	ServerStats        bool    `json:"server_stats"`
	ServerCPUS         float64 `json:"server_cpu_s"`
	ServerBusy         float64 `json:"server_busy"`
	ServerCPUPerJoinUS float64 `json:"server_cpu_per_join_us"`
	JoinsPerServerCPUS float64 `json:"joins_per_server_cpu_s"`
	// ClientBusy: the harness's own CPU in the load phase, as a share of
	// one CPU (near 1 with --client-cpu: the harness, not the node, set
	// the pace).
	ClientBusy float64 `json:"client_busy"`
	// Watcher figures, from the phase's start to the end of its tail.
	WatcherMsgs      int64   `json:"watcher_msgs"`
	MsgsPerReconnect float64 `json:"msgs_per_reconnect_per_watcher"`
	MaxMsgsPerWatch  int     `json:"max_msgs_per_watcher"`
	MaxMsgsPerSecond int     `json:"max_msgs_per_s_per_watcher"`
	// FinalOK: watchers whose last count is the count before the phase
	// (every visitor is back).
	FinalOK int `json:"watchers_final_ok"`
	// FinalMin, FinalMax: the lowest and highest last count of a watcher.
	FinalMin int `json:"final_count_min"`
	FinalMax int `json:"final_count_max"`
}

type reconnectReport struct {
	Target    string  `json:"target"`
	GraceMS   float64 `json:"leave_grace_ms"`
	Transport string  `json:"visitor_transport"`
	Visitors  int     `json:"visitors"`
	Watchers  int     `json:"watchers"`
	WithinMS  float64 `json:"reconnect_within_ms"`
	HoldMS    float64 `json:"hold_ms"`
	BaseCount int     `json:"base_count"`
	Runs      int     `json:"runs"`
	OtherCPUS float64 `json:"other_cpu_s"`
	// Disconnected: connections the server ended before their client did
	// (watchers' and visitors').
	Disconnected int              `json:"disconnected"`
	Phases       []reconnectPhase `json:"phases"`
	ConnectErrs  map[string]int   `json:"connect_errors,omitempty"`
}

type reconnectSet struct {
	GraceMS float64           `json:"leave_grace_ms"`
	Median  reconnectReport   `json:"median"`
	Runs    []reconnectReport `json:"runs"`
}

type reconnectResult struct {
	Sets []reconnectSet `json:"graces"`
	// Ratios of the first grace's medians to the last's (on / off), by
	// phase: joins_per_s, server_cpu_per_join, joins_per_server_cpu_s.
	Ratios map[string]float64 `json:"ratios,omitempty"`
}

func medianReconnect(rs []reconnectReport) reconnectReport {
	if len(rs) == 0 {
		return reconnectReport{}
	}
	m := rs[0]
	m.Runs = len(rs)
	if len(rs) == 1 {
		return m
	}
	m.ConnectErrs = nil
	medianInto(&m, rs, func(r *reconnectReport) []any { return []any{&r.OtherCPUS, &r.Disconnected} })
	m.Phases = slices.Clone(rs[0].Phases)
	for pi := range m.Phases {
		medianInto(&m.Phases[pi], phaseAt(rs, pi, func(r reconnectReport) []reconnectPhase { return r.Phases }), func(p *reconnectPhase) []any {
			return []any{&p.Reconnects, &p.Failed, &p.WallS, &p.JoinsPerS, &p.SetupP50MS, &p.SetupP99MS,
				&p.ServerCPUS, &p.ServerBusy, &p.ClientBusy, &p.ServerCPUPerJoinUS, &p.JoinsPerServerCPUS,
				&p.WatcherMsgs, &p.MsgsPerReconnect, &p.MaxMsgsPerWatch, &p.MaxMsgsPerSecond,
				&p.FinalOK, &p.FinalMin, &p.FinalMax}
		})
	}
	return m
}

// reconnectRatios compares the first grace's medians with the last's
// (with the default "5s,0s": on / off), phase by phase.
func reconnectRatios(sets []reconnectSet) map[string]float64 {
	if len(sets) < 2 {
		return nil
	}
	on, off := sets[0].Median, sets[len(sets)-1].Median
	r := map[string]float64{}
	for i := range min(len(on.Phases), len(off.Phases)) {
		a, b := on.Phases[i], off.Phases[i]
		r[a.Phase+"_setup_p50"] = ratio(a.SetupP50MS, b.SetupP50MS)
		if a.ServerStats && b.ServerStats {
			r[a.Phase+"_joins_per_s"] = ratio(a.JoinsPerS, b.JoinsPerS)
			r[a.Phase+"_server_cpu_per_join"] = ratio(a.ServerCPUPerJoinUS, b.ServerCPUPerJoinUS)
			r[a.Phase+"_joins_per_server_cpu_s"] = ratio(a.JoinsPerServerCPUS, b.JoinsPerServerCPUS)
		}
	}
	return r
}

func writeReconnectText(w io.Writer, res reconnectResult) {
	if len(res.Sets) == 0 {
		return
	}
	m := res.Sets[0].Median
	writeTitle(w, m.Runs, " per grace", "footfall-bench churn --mode reconnect: target=%s visitors=%d (via %s) watchers=%d reconnect-within=%.0f ms hold=%.0f ms",
		m.Target, m.Visitors, m.Transport, m.Watchers, m.WithinMS, m.HoldMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "grace\tphase\treconnects\tfailed\tjoins/s\tsetup p50/p99\tserver/harness busy\tCPU/join\tjoins per CPU-s\tmsgs/reconnect/watcher\tmax msgs/s\tfinal ok")
	for _, s := range res.Sets {
		for _, p := range s.Median.Phases {
			busy, perJoin, perCPU := "-", "-", "-"
			if p.ServerStats {
				busy, perJoin, perCPU = fmt.Sprintf("%.2f / %.2f", p.ServerBusy, p.ClientBusy), fmt.Sprintf("%.0f µs", p.ServerCPUPerJoinUS), fmt.Sprintf("%.0f", p.JoinsPerServerCPUS)
			}
			final := fmt.Sprintf("%d/%d", p.FinalOK, s.Median.Watchers)
			if p.FinalOK < s.Median.Watchers {
				final += fmt.Sprintf(" (counts %d..%d, want %d)", p.FinalMin, p.FinalMax, s.Median.BaseCount)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.1f / %.1f ms\t%s\t%s\t%s\t%.3f\t%d\t%s\n",
				graceText(s.GraceMS), p.Phase, p.Reconnects, p.Failed, p.JoinsPerS, p.SetupP50MS, p.SetupP99MS,
				busy, perJoin, perCPU, p.MsgsPerReconnect, p.MaxMsgsPerSecond, final)
		}
	}
	tw.Flush()
	for _, s := range res.Sets {
		if len(s.Runs) <= 1 {
			continue
		}
		for i, r := range s.Runs {
			for _, p := range r.Phases {
				fmt.Fprintf(w, "  grace %s run %d %s: %d reconnects, %.0f joins/s, %.0f µs CPU/join, %.3f msgs/reconnect/watcher, final %d/%d, other CPU %.1f s\n",
					graceText(s.GraceMS), i+1, p.Phase, p.Reconnects, p.JoinsPerS, p.ServerCPUPerJoinUS, p.MsgsPerReconnect, p.FinalOK, r.Watchers, r.OtherCPUS)
			}
		}
	}
	for _, s := range res.Sets {
		for _, r := range s.Runs {
			writeErrors(w, r.ConnectErrs)
		}
	}
	if len(res.Ratios) > 0 {
		keys := make([]string, 0, len(res.Ratios))
		for k := range res.Ratios {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintf(w, "ratios (grace %s / grace %s):", graceText(res.Sets[0].GraceMS), graceText(res.Sets[len(res.Sets)-1].GraceMS))
		for _, k := range keys {
			fmt.Fprintf(w, " %s=%g", k, res.Ratios[k])
		}
		fmt.Fprintln(w)
	}
	for _, s := range res.Sets {
		if s.GraceMS <= 0 {
			continue
		}
		for _, p := range s.Median.Phases {
			writeTargets(w, []targetCheck{{
				What:   fmt.Sprintf("grace %s, %s: messages per reconnect", graceText(s.GraceMS), p.Phase),
				Target: "0", Measured: p.MsgsPerReconnect, Met: p.MsgsPerReconnect == 0 && p.Reconnects > 0,
			}})
		}
	}
}

func graceText(msec float64) string { return time.Duration(msec * float64(time.Millisecond)).String() }
