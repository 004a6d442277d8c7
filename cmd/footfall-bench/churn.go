package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"text/tabwriter"
	"time"
)

// churn: N distinct visitors join a community at once while W
// watchers (visitors-stream WebSocket clients) record every count message
// they get with its arrival time. Reported: how long after the last join
// every watcher holds the final count, and the most count messages one
// watcher got in any one-second window. Then the same for N leaves.

type churnConfig struct {
	Visitors, Watchers int
	Join               string // api | ws
	Timeout            time.Duration
	InFlight           int
	PerIP              int
}

// churnPhase is the measurement of one burst (join or leave).
type churnPhase struct {
	Phase      string `json:"phase"`
	Visitors   int    `json:"visitors"`
	Watchers   int    `json:"watchers"`
	StartCount int    `json:"start_count"`
	FinalCount int    `json:"final_count"`
	Converged  int    `json:"converged_watchers"`
	// BurstMS: first send to the last join applied (api: the last batch
	// answered; ws: the last visitor connection got its first message).
	BurstMS float64 `json:"burst_ms"`
	// ConvergeAfterLastMS: from the last join to the moment every watcher
	// had received the final count (negative: before the harness saw the
	// last answer). ConvergeAfterFirstMS: from the first send.
	ConvergeAfterLastMS  float64 `json:"converge_after_last_join_ms"`
	ConvergeAfterFirstMS float64 `json:"converge_after_first_send_ms"`
	MaxMsgsPerSecond     int     `json:"max_count_msgs_per_s_per_watcher"`
	MeanMsgsPerWatcher   float64 `json:"mean_count_msgs_per_watcher"`
	MaxMsgsPerWatcher    int     `json:"max_count_msgs_per_watcher"`
}

type churnReport struct {
	Target   string       `json:"target"`
	Join     string       `json:"join"`
	Visitors int          `json:"visitors"`
	Watchers int          `json:"watchers"`
	Runs     int          `json:"runs"`
	Phases   []churnPhase `json:"phases"`
}

type churnResult = medianOf[churnReport]

func cmdChurn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, sf := newCommand("churn", stderr)
	var cfg churnConfig
	fs.IntVar(&cfg.Visitors, "visitors", 1000, "distinct visitors that join at once")
	fs.IntVar(&cfg.Watchers, "watchers", 50, "visitors-stream WebSocket clients that watch the count")
	fs.StringVar(&cfg.Join, "join", "api", "how visitors join: api (service-API visitor-events batches of anonymous visitors) or ws (one WebSocket connection each)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "how long to wait for convergence")
	fs.IntVar(&cfg.InFlight, "in-flight", 256, "handshakes in flight at most (--join ws)")
	fs.IntVar(&cfg.PerIP, "clients-per-ip", 20, "clients per loopback source address, below footfall's per-IP connection limits; 0: all from one")
	repeat := fs.Int("repeat", 1, "runs (fresh server each); the report gives the medians")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	mode := fs.String("mode", "burst", "burst (visitors join at once, then leave) or reconnect (visitors drop and come back within the leave grace; see churn_reconnect.go)")
	rf := registerReconnectFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *mode {
	case "burst":
	case "reconnect":
		rc, err := rf.config(fs, cfg)
		if err != nil {
			return err
		}
		if *repeat < 1 {
			return usagef("--repeat must be at least 1")
		}
		return cmdChurnReconnect(ctx, sf, rc, *repeat, *asJSON, stdout, stderr)
	default:
		return usagef("--mode must be burst or reconnect")
	}
	switch {
	case cfg.Visitors < 1, cfg.Watchers < 1:
		return usagef("--visitors and --watchers must be positive")
	case cfg.Join != "api" && cfg.Join != "ws":
		return usagef("--join must be api or ws")
	case *repeat < 1:
		return usagef("--repeat must be at least 1")
	}
	kind := kindOf(sf.target)
	if kind == kindBaseline {
		return usagef("churn needs footfall (the baseline has no presence)")
	}
	bin, cleanup, err := sf.prepare(ctx, kind, cfg.Visitors+cfg.Watchers, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	var runs []churnReport
	for i := 0; i < *repeat; i++ {
		fmt.Fprintf(stderr, "churn run %d/%d: %d visitors via %s, %d watchers...\n", i+1, *repeat, cfg.Visitors, cfg.Join, cfg.Watchers)
		rep, err := onFresh(ctx, sf, kind, bin, stderr, func(tg *target) (churnReport, error) {
			return churnOnce(ctx, tg, cfg, uint32(0x100+i))
		})
		if err != nil {
			return err
		}
		runs = append(runs, rep)
		time.Sleep(time.Second)
	}
	return emit(stdout, *asJSON, churnResult{Median: medianChurn(runs), Runs: runs}, writeChurnText)
}

func churnOnce(ctx context.Context, tg *target, cfg churnConfig, tag uint32) (churnReport, error) {
	rep := churnReport{Target: tg.kind, Join: cfg.Join, Visitors: cfg.Visitors, Watchers: cfg.Watchers, Runs: 1}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	community := communityIDs(1, tag)[0]

	pool := newPool(ctx)
	defer pool.stop()
	watchers, _, err := startWatchers(ctx, pool, tg, community, "watcher", tag, cfg.Watchers, cfg.PerIP, false)
	if err != nil {
		return rep, err
	}
	// The watchers' own joins settle into one count.
	base, err := waitAgree(ctx, watchers, 10*time.Second)
	if err != nil {
		return rep, err
	}

	hc := &http.Client{Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	ids := make([]string, cfg.Visitors)
	for i := range ids {
		ids[i] = fmt.Sprintf("anon-%d-%d", tag, i)
	}

	// Join.
	var visitors []*benchClient
	var t0, tLast time.Time
	final := base + cfg.Visitors
	// viaAPI sends every visitor's action in batches: when it began, the
	// count answered and when the last answer came.
	viaAPI := func(action string) (t0 time.Time, count int, last time.Time, err error) {
		t0 = time.Now()
		count, last, err = visitorEvents(ctx, hc, tg, community, ids, action)
		return t0, count, last, err
	}
	if cfg.Join == "api" {
		if t0, final, tLast, err = viaAPI("join"); err != nil {
			return rep, err
		}
	} else {
		vctr := newCounters()
		sem := make(chan struct{}, cfg.InFlight)
		t0 = time.Now()
		for i := range ids {
			// No source address is shared with a watcher.
			c, err := tg.newClient(ids[i], community, "visitors", tg.sourceIP(cfg.Watchers+cfg.PerIP+i, cfg.PerIP), 6*time.Hour)
			if err != nil {
				return rep, err
			}
			visitors = append(visitors, c)
			if err := pool.start(tg, c, "ws", vctr, sem); err != nil {
				return rep, err
			}
		}
		if err := waitReady(ctx, vctr, cfg.Visitors, 60*time.Second); err != nil {
			return rep, fmt.Errorf("visitors: %w", err)
		}
		vctr.mu.Lock()
		tLast = vctr.lastReady
		vctr.mu.Unlock()
	}
	join := measurePhase(ctx, watchers, "join", cfg, base, final, t0, tLast)
	rep.Phases = append(rep.Phases, join)

	// Leave.
	for _, w := range watchers {
		w.mu.Lock()
		w.events = w.events[:0]
		w.mu.Unlock()
	}
	if cfg.Join == "api" {
		if t0, final, tLast, err = viaAPI("leave"); err != nil {
			return rep, err
		}
	} else {
		t0 = time.Now()
		for _, c := range visitors {
			c.stop()
		}
		tLast = time.Now()
		final = base
	}
	rep.Phases = append(rep.Phases, measurePhase(ctx, watchers, "leave", cfg, join.FinalCount, final, t0, tLast))
	return rep, nil
}

// measurePhase waits until every watcher holds final (or the timeout), a
// second more for stragglers, and measures the burst.
func measurePhase(ctx context.Context, ws []*watcher, phase string, cfg churnConfig, from, final int, t0, tLast time.Time) churnPhase {
	p := churnPhase{Phase: phase, Visitors: cfg.Visitors, Watchers: len(ws), StartCount: from, FinalCount: final, BurstMS: round(ms(tLast.Sub(t0)), 1)}
	deadline := time.Now().Add(cfg.Timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil && !allHold(ws, final) {
		time.Sleep(2 * time.Millisecond)
	}
	_ = sleepCtx(ctx, time.Second) // anything still coming (an overshoot) is seen
	var convergedAt int64
	total := 0
	for _, w := range ws {
		w.mu.Lock()
		evs := append([]countEvent(nil), w.events...)
		w.mu.Unlock()
		var times []int64
		for _, e := range evs {
			if e.at >= t0.UnixNano() {
				times = append(times, e.at)
			}
		}
		total += len(times)
		p.MaxMsgsPerWatcher = max(p.MaxMsgsPerWatcher, len(times))
		p.MaxMsgsPerSecond = max(p.MaxMsgsPerSecond, maxPerWindow(times, time.Second))
		at, ok := convergence(evs, final)
		if ok {
			p.Converged++
			convergedAt = max(convergedAt, at)
		}
	}
	p.MeanMsgsPerWatcher = round(float64(total)/float64(len(ws)), 2)
	if p.Converged == len(ws) {
		p.ConvergeAfterLastMS = round(ms(time.Duration(convergedAt-tLast.UnixNano())), 1)
		p.ConvergeAfterFirstMS = round(ms(time.Duration(convergedAt-t0.UnixNano())), 1)
	} else {
		p.ConvergeAfterLastMS, p.ConvergeAfterFirstMS = -1, -1
	}
	return p
}

// convergence returns when a watcher got the final count for good: the
// arrival of the first message of the trailing run of messages that all
// carry final. ok is false if the last message is not final.
func convergence(evs []countEvent, final int) (int64, bool) {
	i := len(evs)
	for i > 0 && evs[i-1].count == final {
		i--
	}
	if i == len(evs) {
		return 0, false
	}
	return evs[i].at, true
}

func medianChurn(rs []churnReport) churnReport {
	if len(rs) <= 1 {
		if len(rs) == 1 {
			return rs[0]
		}
		return churnReport{}
	}
	m := rs[0]
	m.Runs = len(rs)
	m.Phases = slices.Clone(rs[0].Phases)
	for pi := range m.Phases {
		medianInto(&m.Phases[pi], phaseAt(rs, pi, func(r churnReport) []churnPhase { return r.Phases }), func(p *churnPhase) []any {
			return []any{&p.BurstMS, &p.ConvergeAfterLastMS, &p.ConvergeAfterFirstMS, &p.MaxMsgsPerSecond,
				&p.MeanMsgsPerWatcher, &p.MaxMsgsPerWatcher, &p.Converged}
		})
	}
	return m
}

func writeChurnText(w io.Writer, res churnResult) {
	m := res.Median
	writeTitle(w, m.Runs, "", "footfall-bench churn: target=%s visitors=%d (via %s) watchers=%d", m.Target, m.Visitors, m.Join, m.Watchers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tcount\tburst\tconverged\tafter last\tafter first\tmax msgs/s\tmsgs/watcher mean/max")
	for _, p := range m.Phases {
		fmt.Fprintf(tw, "%s\t%d -> %d\t%.0f ms\t%d/%d\t%.0f ms\t%.0f ms\t%d\t%.1f / %d\n", p.Phase, p.StartCount, p.FinalCount, p.BurstMS,
			p.Converged, p.Watchers, p.ConvergeAfterLastMS, p.ConvergeAfterFirstMS, p.MaxMsgsPerSecond, p.MeanMsgsPerWatcher, p.MaxMsgsPerWatcher)
	}
	tw.Flush()
	for i, r := range res.Runs {
		if m.Runs <= 1 {
			break
		}
		for _, p := range r.Phases {
			fmt.Fprintf(w, "  run %d %s: converged %d/%d, after last %.0f ms, max %d msgs/s\n", i+1, p.Phase, p.Converged, p.Watchers, p.ConvergeAfterLastMS, p.MaxMsgsPerSecond)
		}
	}
	for _, p := range m.Phases {
		writeTargets(w, []targetCheck{
			{What: "churn " + p.Phase + ": converge after the last " + p.Phase, Target: "<= 500 ms", Measured: p.ConvergeAfterLastMS, Unit: "ms", Met: p.Converged == p.Watchers && p.ConvergeAfterLastMS <= 500},
			{What: "churn " + p.Phase + ": count messages per watcher", Target: "<= 10 /s", Measured: float64(p.MaxMsgsPerSecond), Unit: "/s", Met: p.MaxMsgsPerSecond <= 10},
		})
	}
}
