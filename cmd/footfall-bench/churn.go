package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
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

type churnResult struct {
	Median churnReport   `json:"median"`
	Runs   []churnReport `json:"runs"`
}

// countEvent is one count message a watcher received.
type countEvent struct {
	at    int64 // Unix ns
	count int
}

type watcher struct {
	c      *benchClient
	last   atomic.Int64
	mu     sync.Mutex
	events []countEvent
}

var (
	visitorTypePrefix = []byte(`"type":"visitor_`)
	countKey          = []byte(`"count":`)
)

func (w *watcher) onMsg(msg []byte, now int64) {
	if !bytes.Contains(msg, visitorTypePrefix) {
		return
	}
	n, ok := extractInt(msg, countKey)
	if !ok {
		return
	}
	w.mu.Lock()
	w.events = append(w.events, countEvent{now, int(n)})
	w.mu.Unlock()
	w.last.Store(n)
}

func cmdChurn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("footfall-bench churn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serverFlags
	sf.register(fs, kindFootfall)
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
		if err := sf.waitQuiet(ctx, stderr); err != nil {
			return err
		}
		tg, err := sf.start(ctx, kind, bin)
		if err != nil {
			return err
		}
		rep, err := churnOnce(ctx, tg, cfg, uint32(0x100+i))
		_ = tg.stop()
		if err != nil {
			return err
		}
		runs = append(runs, rep)
		time.Sleep(time.Second)
	}
	res := churnResult{Median: medianChurn(runs), Runs: runs}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	writeChurnText(stdout, res)
	return nil
}

func churnOnce(ctx context.Context, tg *target, cfg churnConfig, tag uint32) (churnReport, error) {
	rep := churnReport{Target: tg.kind, Join: cfg.Join, Visitors: cfg.Visitors, Watchers: cfg.Watchers, Runs: 1}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	community := communityIDs(1, tag)[0]

	// Watchers.
	watchers := make([]*watcher, cfg.Watchers)
	wctr := newCounters()
	var wg sync.WaitGroup
	var all []*benchClient
	defer func() {
		for _, c := range all {
			c.stop()
		}
		wg.Wait()
	}()
	start := func(c *benchClient, ctr *counters, sem chan struct{}) {
		all = append(all, c)
		if sem != nil {
			sem <- struct{}{}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, tg, "ws", ctr, sem)
		}()
	}
	for i := range watchers {
		tok, err := tg.token(fmt.Sprintf("watcher-%d-%d", tag, i), community, roleFor("visitors"), 6*time.Hour)
		if err != nil {
			return rep, err
		}
		w := &watcher{c: newBenchClient(community, "visitors", tok)}
		w.c.onMsg = w.onMsg
		w.c.local = tg.sourceIP(i, cfg.PerIP)
		watchers[i] = w
		start(w.c, wctr, nil)
	}
	if err := waitReady(ctx, wctr, cfg.Watchers, 30*time.Second); err != nil {
		return rep, fmt.Errorf("watchers: %w", err)
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
	if cfg.Join == "api" {
		t0 = time.Now()
		n, last, err := visitorEvents(ctx, hc, tg, community, ids, "join")
		if err != nil {
			return rep, err
		}
		final, tLast = n, last
	} else {
		vctr := newCounters()
		sem := make(chan struct{}, cfg.InFlight)
		t0 = time.Now()
		for i := range ids {
			tok, err := tg.token(ids[i], community, roleFor("visitors"), 6*time.Hour)
			if err != nil {
				return rep, err
			}
			c := newBenchClient(community, "visitors", tok)
			c.local = tg.sourceIP(cfg.Watchers+cfg.PerIP+i, cfg.PerIP) // no address shared with a watcher
			visitors = append(visitors, c)
			start(c, vctr, sem)
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
		t0 = time.Now()
		n, last, err := visitorEvents(ctx, hc, tg, community, ids, "leave")
		if err != nil {
			return rep, err
		}
		final, tLast = n, last
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

func waitReady(ctx context.Context, ctr *counters, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ctr.ready.Load()+ctr.failed.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d connected within %s", ctr.ready.Load(), n, timeout)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	if f := ctr.failed.Load(); f > 0 {
		ctr.mu.Lock()
		defer ctr.mu.Unlock()
		return fmt.Errorf("%d of %d failed to connect: %v", f, n, ctr.errs)
	}
	return nil
}

// waitAgree waits until every watcher holds the same count for a while and
// returns it.
func waitAgree(ctx context.Context, ws []*watcher, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	stable := 0
	prev := int64(-1)
	for {
		v := ws[0].last.Load()
		same := true
		for _, w := range ws[1:] {
			if w.last.Load() != v {
				same = false
				break
			}
		}
		if same && v == prev {
			stable++
		} else {
			stable = 0
		}
		prev = v
		if stable >= 20 { // 20 x 25 ms: half a second without change
			return int(v), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("watchers did not agree on a count within %s", timeout)
		}
		if err := sleepCtx(ctx, 25*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// visitorEvents sends action for every id in batches of up to 1000 (all at
// once) and returns the highest count answered (joins) or the lowest
// (leaves), and when the last answer arrived.
func visitorEvents(ctx context.Context, hc *http.Client, tg *target, community string, ids []string, action string) (int, time.Time, error) {
	type answer struct {
		count int
		at    time.Time
		err   error
	}
	var batches [][]string
	for i := 0; i < len(ids); i += 1000 {
		batches = append(batches, ids[i:min(i+1000, len(ids))])
	}
	answers := make(chan answer, len(batches))
	for _, b := range batches {
		var body bytes.Buffer
		body.WriteByte('[')
		for i, id := range b {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"visitor_id":%q,"authenticated":false,"action":%q}`, id, action)
		}
		body.WriteByte(']')
		go func(body []byte) {
			req, err := tg.serviceRequest(ctx, http.MethodPost, "/api/v1/communities/"+community+"/visitor-events", body)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			resp, err := hc.Do(req)
			at := time.Now()
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			var m struct {
				Count int `json:"count"`
			}
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				answers <- answer{err: fmt.Errorf("visitor-events: HTTP %d %s", resp.StatusCode, b)}
				return
			}
			err = json.NewDecoder(resp.Body).Decode(&m)
			answers <- answer{count: m.Count, at: at, err: err}
		}(body.Bytes())
	}
	var count int
	var last time.Time
	for i := range batches {
		a := <-answers
		if a.err != nil {
			return 0, last, a.err
		}
		if i == 0 || (action == "join" && a.count > count) || (action == "leave" && a.count < count) {
			count = a.count
		}
		if a.at.After(last) {
			last = a.at
		}
	}
	return count, last, nil
}

// measurePhase waits until every watcher holds final (or the timeout), a
// second more for stragglers, and measures the burst.
func measurePhase(ctx context.Context, ws []*watcher, phase string, cfg churnConfig, from, final int, t0, tLast time.Time) churnPhase {
	p := churnPhase{Phase: phase, Visitors: cfg.Visitors, Watchers: len(ws), StartCount: from, FinalCount: final, BurstMS: round(ms(tLast.Sub(t0)), 1)}
	deadline := time.Now().Add(cfg.Timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		for _, w := range ws {
			if w.last.Load() != int64(final) {
				done = false
				break
			}
		}
		if done {
			break
		}
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
	m.Phases = append([]churnPhase(nil), rs[0].Phases...)
	for pi := range m.Phases {
		f := func(get func(churnPhase) float64) float64 {
			var xs []float64
			for _, r := range rs {
				if pi < len(r.Phases) {
					xs = append(xs, get(r.Phases[pi]))
				}
			}
			return median(xs)
		}
		p := &m.Phases[pi]
		p.BurstMS = f(func(c churnPhase) float64 { return c.BurstMS })
		p.ConvergeAfterLastMS = f(func(c churnPhase) float64 { return c.ConvergeAfterLastMS })
		p.ConvergeAfterFirstMS = f(func(c churnPhase) float64 { return c.ConvergeAfterFirstMS })
		p.MaxMsgsPerSecond = int(f(func(c churnPhase) float64 { return float64(c.MaxMsgsPerSecond) }) + 0.5)
		p.MeanMsgsPerWatcher = f(func(c churnPhase) float64 { return c.MeanMsgsPerWatcher })
		p.MaxMsgsPerWatcher = int(f(func(c churnPhase) float64 { return float64(c.MaxMsgsPerWatcher) }) + 0.5)
		p.Converged = int(f(func(c churnPhase) float64 { return float64(c.Converged) }) + 0.5)
	}
	return m
}

func writeChurnText(w io.Writer, res churnResult) {
	m := res.Median
	fmt.Fprintf(w, "footfall-bench churn: target=%s visitors=%d (via %s) watchers=%d\n", m.Target, m.Visitors, m.Join, m.Watchers)
	if m.Runs > 1 {
		fmt.Fprintf(w, "median of %d runs\n", m.Runs)
	}
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
