package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// churn --mode reconnect: V visitors hold a visitors-stream
// connection each and, at random, drop it and come back after a random
// delay below the leave grace (a page reload, a flaky network), while W
// watchers count every message they receive. With the grace on, a watcher
// should hear nothing of it; with the grace off (FOOTFALL_LEAVE_GRACE=0s)
// every reconnect is a visitor_left and a visitor_joined (fewer when
// coalescing merges them). Two phases per run:
//
//   - paced: a few reconnects at a low rate, each by a different visitor,
//     so that coalescing hardly merges them: messages per reconnect.
//   - load: every visitor reconnects over and over (hold, drop, away,
//     return) for a while: joins per second the node sustains, its CPU per
//     join, and messages per reconnect under load.
//
// Each run starts a fresh footfall with FOOTFALL_LEAVE_GRACE set to each
// of --leave-grace's values in turn, so the figures with the grace on and
// off come from alternating runs on the same machine.

type reconnectConfig struct {
	Visitors, Watchers int
	Transport          string // ws | sse | mixed (each connection picks at random)
	Graces             []time.Duration
	Grace              time.Duration // of the run at hand
	Within             time.Duration // away time: uniform in [0, Within)
	Hold               time.Duration // load: mean time connected between reconnects (uniform in [0, 2*Hold))
	Paced              int           // reconnects in the paced phase (0: no paced phase)
	PacedRate          float64       // paced reconnects started per second
	Duration           time.Duration // load phase (0: no load phase)
	Tail               time.Duration // after the last return: more than the grace, so that a leave that should not happen is seen
	InFlight           int
	PerIP              int
}

func (c *reconnectConfig) validate() error {
	switch {
	case c.Visitors < 1, c.Watchers < 1:
		return usagef("--visitors and --watchers must be positive")
	case c.Transport != "ws" && c.Transport != "sse" && c.Transport != "mixed":
		return usagef("--visitor-transport must be ws, sse or mixed")
	case len(c.Graces) == 0:
		return usagef("--leave-grace needs at least one duration")
	case c.Within <= 0:
		return usagef("--reconnect-within must be positive")
	case c.Hold < 0 || c.Tail < 0:
		return usagef("--hold and --tail must not be negative")
	case c.Paced < 0 || c.Paced > c.Visitors:
		return usagef("--paced-reconnects must be between 0 and --visitors (each paced reconnect is a different visitor)")
	case c.Paced > 0 && c.PacedRate <= 0:
		return usagef("--paced-rate must be positive")
	case c.Duration < 0 || (c.Paced == 0 && c.Duration == 0):
		return usagef("nothing to measure: give --paced-reconnects or --duration")
	case c.InFlight < 1:
		return usagef("--in-flight must be at least 1")
	}
	for _, g := range c.Graces {
		if g < 0 {
			return usagef("--leave-grace %s is negative", g)
		}
		if g > 0 && c.Within >= g {
			return usagef("--reconnect-within %s must be below every leave grace that is on (%s): a visitor returns within the grace", c.Within, g)
		}
	}
	return nil
}

// parseGraces reads a comma-separated list of durations ("5s,0s").
func parseGraces(s string) ([]time.Duration, error) {
	var gs []time.Duration
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, usagef("--leave-grace: %v", err)
		}
		gs = append(gs, d)
	}
	return gs, nil
}

// reconnectFlags are churn's flags of the reconnect mode.
type reconnectFlags struct {
	transport, graces       string
	within, hold, dur, tail time.Duration
	paced                   int
	pacedRate               float64
}

func registerReconnectFlags(fs *flag.FlagSet) *reconnectFlags {
	rf := &reconnectFlags{}
	fs.StringVar(&rf.transport, "visitor-transport", "ws", "--mode reconnect: how visitors connect: ws, sse, or mixed (each connection picks one at random, so a reload may move from WebSocket to SSE)")
	fs.StringVar(&rf.graces, "leave-grace", "5s,0s", "--mode reconnect: FOOTFALL_LEAVE_GRACE of the started footfall, a comma list: each run measures every value in turn (0s: the grace off); with --target URL, the grace that server has")
	fs.DurationVar(&rf.within, "reconnect-within", time.Second, "--mode reconnect: a visitor that drops comes back after a random delay below this (must be below the grace)")
	fs.DurationVar(&rf.hold, "hold", 0, "--mode reconnect, load phase: mean time a visitor stays connected between reconnects")
	fs.IntVar(&rf.paced, "paced-reconnects", 20, "--mode reconnect: reconnects of the paced phase, each by another visitor (0: skip it)")
	fs.Float64Var(&rf.pacedRate, "paced-rate", 2, "--mode reconnect: paced reconnects started per second")
	fs.DurationVar(&rf.dur, "duration", 30*time.Second, "--mode reconnect: length of the load phase, in which every visitor reconnects over and over (0: skip it)")
	fs.DurationVar(&rf.tail, "tail", 0, "--mode reconnect: how long watchers keep listening after the last return (default: the largest grace + 1s)")
	return rf
}

// config is the reconnect mode's configuration from churn's flags.
// Unless --clients-per-ip was given, every visitor has a source address of
// its own: a visitor reconnects a few times a second, and footfall admits
// 20 new connections per address and second.
func (rf *reconnectFlags) config(fs *flag.FlagSet, cc churnConfig) (reconnectConfig, error) {
	c := reconnectConfig{
		Visitors: cc.Visitors, Watchers: cc.Watchers, Transport: rf.transport, Within: rf.within, Hold: rf.hold,
		Paced: rf.paced, PacedRate: rf.pacedRate, Duration: rf.dur, Tail: rf.tail, InFlight: cc.InFlight, PerIP: 1,
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "clients-per-ip" {
			c.PerIP = cc.PerIP
		}
	})
	gs, err := parseGraces(rf.graces)
	if err != nil {
		return c, err
	}
	c.Graces = gs
	return c, c.validate()
}

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

// msgWatcher is a visitors-stream client that records the arrival of
// every message and the last count it carried.
type msgWatcher struct {
	c    *benchClient
	last atomic.Int64
	mu   sync.Mutex
	at   []int64
}

func (w *msgWatcher) onMsg(msg []byte, now int64) {
	w.mu.Lock()
	w.at = append(w.at, now)
	w.mu.Unlock()
	if n, ok := extractInt(msg, countKey); ok {
		w.last.Store(n)
	}
}

// since returns the arrival times at or after t.
func (w *msgWatcher) since(t int64) []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearch(w.at, t)
	return append([]int64(nil), w.at[i:]...)
}

// rvisitor is one reconnecting visitor: its token and source address
// stay, its connection changes.
type rvisitor struct {
	tok   string
	local net.IP
	rng   *rand.Rand // owned by the goroutine that cycles the visitor
	cur   *benchClient
}

// connect dials until a connection of the visitor got its first message
// (up to 3 tries); it returns the time from dial to that message.
func (v *rvisitor) connect(ctx context.Context, tg *target, cfg reconnectConfig, community string, ctr *counters, sem chan struct{}) (time.Duration, error) {
	var err error
	for try := 0; try < 3; try++ {
		transport := cfg.Transport
		if transport == "mixed" {
			transport = [2]string{"ws", "sse"}[v.rng.IntN(2)]
		}
		c := newBenchClient(community, "visitors", v.tok)
		c.local = v.local
		ready := make(chan struct{})
		var once sync.Once
		c.onMsg = func([]byte, int64) { once.Do(func() { close(ready) }) }
		if sem != nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		start := time.Now()
		go c.run(ctx, tg, transport, ctr, sem)
		select {
		case <-ready:
			v.cur = c
			return time.Since(start), nil
		case <-c.done:
			err = c.err
			if err == nil {
				err = fmt.Errorf("%s connection ended before its first message", transport)
			}
		case <-ctx.Done():
			c.stop()
			<-c.done
			return 0, ctx.Err()
		}
		if sleepCtx(ctx, 50*time.Millisecond) != nil {
			return 0, ctx.Err()
		}
	}
	return 0, err
}

// drop closes the visitor's connection and waits until it has ended.
func (v *rvisitor) drop() {
	if v.cur != nil {
		v.cur.stop()
		<-v.cur.done
		v.cur = nil
	}
}

// joinLog collects the returns of a phase.
type joinLog struct {
	mu     sync.Mutex
	at     []int64 // when each return got its first message
	setup  []int64
	failed int
	errs   map[string]int
}

func (l *joinLog) add(at time.Time, setup time.Duration) {
	l.mu.Lock()
	l.at = append(l.at, at.UnixNano())
	l.setup = append(l.setup, int64(setup))
	l.mu.Unlock()
}

func (l *joinLog) fail(err error) {
	l.mu.Lock()
	l.failed++
	if l.errs == nil {
		l.errs = map[string]int{}
	}
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160]
	}
	l.errs[msg]++
	l.mu.Unlock()
}

// reconnect is one drop and return of v: away for a random time below
// cfg.Within.
func (v *rvisitor) reconnect(ctx context.Context, tg *target, cfg reconnectConfig, community string, ctr *counters, sem chan struct{}, log *joinLog) {
	v.drop()
	if sleepCtx(ctx, time.Duration(v.rng.Int64N(int64(cfg.Within)))) != nil {
		return
	}
	d, err := v.connect(ctx, tg, cfg, community, ctr, sem)
	if err != nil {
		if ctx.Err() == nil {
			log.fail(err)
		}
		return
	}
	log.add(time.Now(), d)
}

func cmdChurnReconnect(ctx context.Context, sf serverFlags, cfg reconnectConfig, repeat int, asJSON bool, stdout, stderr io.Writer) error {
	kind := kindOf(sf.target)
	if kind == kindBaseline {
		return usagef("churn needs footfall (the baseline has no presence)")
	}
	if kind == kindURL && len(cfg.Graces) != 1 {
		return usagef("with --target URL, --leave-grace is the one grace that server has")
	}
	bin, cleanup, err := sf.prepare(ctx, kind, cfg.Visitors+cfg.Watchers, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	if cfg.Tail == 0 {
		cfg.Tail = slices.Max(cfg.Graces) + time.Second
	}
	byGrace := make([][]reconnectReport, len(cfg.Graces))
	for i := 0; i < repeat; i++ {
		for gi, g := range cfg.Graces {
			fmt.Fprintf(stderr, "churn reconnect run %d/%d, leave grace %s: %d visitors via %s, %d watchers...\n", i+1, repeat, g, cfg.Visitors, cfg.Transport, cfg.Watchers)
			if err := sf.waitQuiet(ctx, stderr); err != nil {
				return err
			}
			run := sf
			if kind == kindFootfall {
				run.serverEnv = append(slices.Clone(sf.serverEnv), "FOOTFALL_LEAVE_GRACE="+g.String())
			}
			tg, err := run.start(ctx, kind, bin)
			if err != nil {
				return err
			}
			c := cfg
			c.Grace = g
			rep, err := reconnectOnce(ctx, tg, c, uint32(0x200+i*len(cfg.Graces)+gi), stderr)
			_ = tg.stop()
			if err != nil {
				return err
			}
			byGrace[gi] = append(byGrace[gi], rep)
			time.Sleep(time.Second)
		}
	}
	res := reconnectResult{}
	for gi, g := range cfg.Graces {
		res.Sets = append(res.Sets, reconnectSet{GraceMS: ms(g), Median: medianReconnect(byGrace[gi]), Runs: byGrace[gi]})
	}
	res.Ratios = reconnectRatios(res.Sets)
	if asJSON {
		return writeJSON(stdout, res)
	}
	writeReconnectText(stdout, res)
	return nil
}

func reconnectOnce(ctx context.Context, tg *target, cfg reconnectConfig, tag uint32, progress io.Writer) (reconnectReport, error) {
	rep := reconnectReport{
		Target: tg.kind, GraceMS: ms(cfg.Grace), Transport: cfg.Transport, Visitors: cfg.Visitors, Watchers: cfg.Watchers,
		WithinMS: ms(cfg.Within), HoldMS: ms(cfg.Hold), Runs: 1,
	}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	community := communityIDs(1, tag)[0]
	rng := rand.New(rand.NewPCG(uint64(tag), 12))

	// Watchers.
	watchers := make([]*msgWatcher, cfg.Watchers)
	wctr := newCounters()
	var wg sync.WaitGroup
	for i := range watchers {
		tok, err := tg.token(fmt.Sprintf("rwatcher-%d-%d", tag, i), community, roleFor("visitors"), 6*time.Hour)
		if err != nil {
			return rep, err
		}
		w := &msgWatcher{c: newBenchClient(community, "visitors", tok)}
		w.c.onMsg = w.onMsg
		w.c.local = tg.sourceIP(i, cfg.PerIP)
		watchers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.c.run(ctx, tg, "ws", wctr, nil)
		}()
	}
	// Visitors: each its own user and, from after the watchers' addresses,
	// its own share of source addresses.
	visitors := make([]*rvisitor, cfg.Visitors)
	firstIP := (cfg.Watchers + cfg.PerIP) / max(cfg.PerIP, 1) * max(cfg.PerIP, 1)
	for i := range visitors {
		tok, err := tg.token(fmt.Sprintf("rvisitor-%d-%d", tag, i), community, roleFor("visitors"), 6*time.Hour)
		if err != nil {
			return rep, err
		}
		visitors[i] = &rvisitor{tok: tok, local: tg.sourceIP(firstIP+i, cfg.PerIP), rng: rand.New(rand.NewPCG(uint64(tag), uint64(i)))}
	}
	vctr := newCounters()
	defer func() {
		for _, w := range watchers {
			w.c.stop()
		}
		var vw sync.WaitGroup
		for _, v := range visitors {
			vw.Add(1)
			go func() { defer vw.Done(); v.drop() }()
		}
		vw.Wait()
		wg.Wait()
	}()
	if err := waitReady(ctx, wctr, cfg.Watchers, 30*time.Second); err != nil {
		return rep, fmt.Errorf("watchers: %w", err)
	}
	sem := make(chan struct{}, cfg.InFlight)
	var connectErr error
	var cmu sync.Mutex
	var cw sync.WaitGroup
	for _, v := range visitors {
		cw.Add(1)
		go func() {
			defer cw.Done()
			if _, err := v.connect(ctx, tg, cfg, community, vctr, sem); err != nil {
				cmu.Lock()
				connectErr = err
				cmu.Unlock()
			}
		}()
	}
	cw.Wait()
	if connectErr != nil {
		return rep, fmt.Errorf("visitors: %w", connectErr)
	}
	// The community is new: every watcher should come to hold visitors +
	// watchers. On a starved machine the last coalesced counts can pause
	// longer than waitAgreeMsgs's half second, so wait for that count
	// first, and take whatever the watchers agree on only if it never
	// comes.
	want := cfg.Visitors + cfg.Watchers
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !allHold(watchers, want) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return rep, err
		}
	}
	base, err := waitAgreeMsgs(ctx, watchers, 30*time.Second)
	if err != nil {
		return rep, err
	}
	if base != want {
		fmt.Fprintf(progress, "  watchers agree on %d, not %d visitors + watchers (other visitors in the community?)\n", base, want)
	}
	rep.BaseCount = base
	m0, _ := readMachineCPU()
	s0, _ := tg.stats()
	c0 := clientCPU()

	errs := map[string]int{}
	if cfg.Paced > 0 {
		fmt.Fprintf(progress, "  paced: %d reconnects at %g/s\n", cfg.Paced, cfg.PacedRate)
		perm := rng.Perm(len(visitors))[:cfg.Paced]
		var log joinLog
		t0 := time.Now()
		var pw sync.WaitGroup
		gap := time.Duration(float64(time.Second) / cfg.PacedRate)
		for k, vi := range perm {
			if k > 0 && sleepCtx(ctx, gap) != nil {
				break
			}
			pw.Add(1)
			go func() {
				defer pw.Done()
				visitors[vi].reconnect(ctx, tg, cfg, community, vctr, nil, &log)
			}()
		}
		pw.Wait()
		p := finishPhase(ctx, "paced", watchers, &log, base, t0, time.Now(), cfg.Tail)
		rep.Phases = append(rep.Phases, p)
		for k, n := range log.errs {
			errs[k] += n
		}
	}
	if cfg.Duration > 0 {
		fmt.Fprintf(progress, "  load: every visitor reconnects for %s\n", cfg.Duration)
		var log joinLog
		t0 := time.Now()
		cpu0, ok0 := tg.stats()
		cc0 := clientCPU()
		end := t0.Add(cfg.Duration)
		var lw sync.WaitGroup
		for _, v := range visitors {
			lw.Add(1)
			go func() {
				defer lw.Done()
				for time.Now().Before(end) && ctx.Err() == nil {
					if cfg.Hold > 0 && sleepCtx(ctx, time.Duration(v.rng.Int64N(int64(2*cfg.Hold)))) != nil {
						return
					}
					if !time.Now().Before(end) {
						return
					}
					// A return started before the end completes after it.
					v.reconnect(ctx, tg, cfg, community, vctr, sem, &log)
					if v.cur == nil { // failed: try again later
						if sleepCtx(ctx, 100*time.Millisecond) != nil {
							return
						}
						if _, err := v.connect(ctx, tg, cfg, community, vctr, sem); err != nil {
							log.fail(err)
						}
					}
				}
			}()
		}
		_ = sleepCtx(ctx, time.Until(end))
		cpu1, ok1 := tg.stats()
		cc1 := clientCPU()
		lw.Wait()
		p := finishPhase(ctx, "load", watchers, &log, base, t0, end, cfg.Tail)
		// The CPU of the phase itself, not of the returns after its end.
		p.ClientBusy = round((cc1-cc0).Seconds()/cfg.Duration.Seconds(), 3)
		if ok0 && ok1 {
			p.ServerStats = true
			p.ServerCPUS = round((cpu1.CPU - cpu0.CPU).Seconds(), 3)
			p.ServerBusy = round(p.ServerCPUS/cfg.Duration.Seconds(), 3)
			inWall := 0
			for _, at := range log.at {
				if at <= end.UnixNano() {
					inWall++
				}
			}
			if inWall > 0 {
				p.ServerCPUPerJoinUS = round(p.ServerCPUS*1e6/float64(inWall), 1)
			}
			if p.ServerCPUS > 0 {
				p.JoinsPerServerCPUS = round(float64(inWall)/p.ServerCPUS, 0)
			}
		}
		rep.Phases = append(rep.Phases, p)
		for k, n := range log.errs {
			errs[k] += n
		}
	}
	if m1, ok := readMachineCPU(); ok {
		s1, _ := tg.stats()
		other := m1.busySince(m0) - (s1.CPU - s0.CPU) - (clientCPU() - c0)
		rep.OtherCPUS = round(max(other, 0).Seconds(), 2)
	}
	rep.Disconnected = int(vctr.disconnected.Load() + wctr.disconnected.Load())
	if len(errs) > 0 {
		rep.ConnectErrs = errs
	}
	return rep, nil
}

// finishPhase waits out the tail after the last return and measures the
// phase [t0, end].
func finishPhase(ctx context.Context, phase string, ws []*msgWatcher, log *joinLog, base int, t0, end time.Time, tail time.Duration) reconnectPhase {
	_ = sleepCtx(ctx, tail)
	p := reconnectPhase{Phase: phase, WallS: round(end.Sub(t0).Seconds(), 3)}
	log.mu.Lock()
	p.Reconnects = len(log.at)
	p.Failed = log.failed
	inWall := 0
	for _, at := range log.at {
		if at <= end.UnixNano() {
			inWall++
		}
	}
	s := summarize(log.setup)
	log.mu.Unlock()
	p.SetupP50MS, p.SetupP99MS = round(ms(s.P50), 2), round(ms(s.P99), 2)
	if p.WallS > 0 {
		p.JoinsPerS = round(float64(inWall)/p.WallS, 1)
	}
	var total int64
	for i, w := range ws {
		times := w.since(t0.UnixNano())
		total += int64(len(times))
		p.MaxMsgsPerWatch = max(p.MaxMsgsPerWatch, len(times))
		p.MaxMsgsPerSecond = max(p.MaxMsgsPerSecond, maxPerWindow(times, time.Second))
		last := int(w.last.Load())
		if last == base {
			p.FinalOK++
		}
		if i == 0 {
			p.FinalMin, p.FinalMax = last, last
		}
		p.FinalMin, p.FinalMax = min(p.FinalMin, last), max(p.FinalMax, last)
	}
	p.WatcherMsgs = total
	if p.Reconnects > 0 {
		p.MsgsPerReconnect = round(float64(total)/float64(len(ws))/float64(p.Reconnects), 4)
	}
	return p
}

func allHold(ws []*msgWatcher, count int) bool {
	for _, w := range ws {
		if w.last.Load() != int64(count) {
			return false
		}
	}
	return true
}

// waitAgreeMsgs waits until every watcher holds the same count for half a
// second and returns it.
func waitAgreeMsgs(ctx context.Context, ws []*msgWatcher, timeout time.Duration) (int, error) {
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
		if stable >= 20 {
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
	m.OtherCPUS = median(collect(rs, func(r reconnectReport) float64 { return r.OtherCPUS }))
	m.Disconnected = int(median(collect(rs, func(r reconnectReport) float64 { return float64(r.Disconnected) })) + 0.5)
	m.Phases = slices.Clone(rs[0].Phases)
	for pi := range m.Phases {
		f := func(get func(reconnectPhase) float64) float64 {
			var xs []float64
			for _, r := range rs {
				if pi < len(r.Phases) {
					xs = append(xs, get(r.Phases[pi]))
				}
			}
			return median(xs)
		}
		n := func(get func(reconnectPhase) float64) int { return int(f(get) + 0.5) }
		p := &m.Phases[pi]
		p.Reconnects = n(func(c reconnectPhase) float64 { return float64(c.Reconnects) })
		p.Failed = n(func(c reconnectPhase) float64 { return float64(c.Failed) })
		p.WallS = f(func(c reconnectPhase) float64 { return c.WallS })
		p.JoinsPerS = f(func(c reconnectPhase) float64 { return c.JoinsPerS })
		p.SetupP50MS = f(func(c reconnectPhase) float64 { return c.SetupP50MS })
		p.SetupP99MS = f(func(c reconnectPhase) float64 { return c.SetupP99MS })
		p.ServerCPUS = f(func(c reconnectPhase) float64 { return c.ServerCPUS })
		p.ServerBusy = f(func(c reconnectPhase) float64 { return c.ServerBusy })
		p.ClientBusy = f(func(c reconnectPhase) float64 { return c.ClientBusy })
		p.ServerCPUPerJoinUS = f(func(c reconnectPhase) float64 { return c.ServerCPUPerJoinUS })
		p.JoinsPerServerCPUS = f(func(c reconnectPhase) float64 { return c.JoinsPerServerCPUS })
		p.WatcherMsgs = int64(f(func(c reconnectPhase) float64 { return float64(c.WatcherMsgs) }) + 0.5)
		p.MsgsPerReconnect = f(func(c reconnectPhase) float64 { return c.MsgsPerReconnect })
		p.MaxMsgsPerWatch = n(func(c reconnectPhase) float64 { return float64(c.MaxMsgsPerWatch) })
		p.MaxMsgsPerSecond = n(func(c reconnectPhase) float64 { return float64(c.MaxMsgsPerSecond) })
		p.FinalOK = n(func(c reconnectPhase) float64 { return float64(c.FinalOK) })
		p.FinalMin = n(func(c reconnectPhase) float64 { return float64(c.FinalMin) })
		p.FinalMax = n(func(c reconnectPhase) float64 { return float64(c.FinalMax) })
	}
	return m
}

func collect[T any](xs []T, get func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = get(x)
	}
	return out
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
	fmt.Fprintf(w, "footfall-bench churn --mode reconnect: target=%s visitors=%d (via %s) watchers=%d reconnect-within=%.0f ms hold=%.0f ms\n",
		m.Target, m.Visitors, m.Transport, m.Watchers, m.WithinMS, m.HoldMS)
	if m.Runs > 1 {
		fmt.Fprintf(w, "median of %d runs per grace\n", m.Runs)
	}
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
