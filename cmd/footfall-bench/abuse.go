package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// abuse: one node, legitimate WebSocket clients receiving
// probe broadcasts, first quiet, then under abuse: bursts of connection
// attempts and REST polls from many loopback addresses, idle keep-alive
// connections, slowloris upgrades (a header line every few seconds, never
// finished), bogus credentials and long-gap SSE resumes. It reports the
// server's memory, goroutines and descriptors before, at the peak and
// after, the answers each attack got (no 5xx wanted), when the server
// closed the idle and slow connections, and the legitimate clients'
// fanout p99 quiet and under abuse.

type abuseConfig struct {
	Legit        int           `json:"legit_clients"`
	Communities  int           `json:"communities"`
	Rate         float64       `json:"probe_rate"`
	Quiet        time.Duration `json:"-"`
	Duration     time.Duration `json:"-"`
	Settle       time.Duration `json:"-"`
	BurstAddrs   int           `json:"burst_addresses"`
	Burst        int           `json:"burst_per_address"`
	Idle         int           `json:"idle_keepalives"`
	Slow         int           `json:"slowloris"`
	Bogus        float64       `json:"bogus_per_s"`
	Resumes      float64       `json:"resumes_per_s"`
	IdleTimeout  time.Duration `json:"-"`
	QuietS       float64       `json:"quiet_s"`
	DurationS    float64       `json:"abuse_s"`
	IdleTimeoutS float64       `json:"idle_timeout_s"`
}

func (c abuseConfig) validate() error {
	switch {
	case c.Legit < 1 || c.Communities < 1 || c.Rate <= 0:
		return usagef("abuse: --legit, --communities and --rate must be positive")
	case c.Quiet <= 0 || c.Duration <= 0 || c.Settle <= 0:
		return usagef("abuse: --quiet, --duration and --settle must be positive")
	case c.BurstAddrs < 0 || c.Burst < 0 || c.Idle < 0 || c.Slow < 0 || c.Bogus < 0 || c.Resumes < 0:
		return usagef("abuse: attack sizes must not be negative")
	case c.BurstAddrs > 60000:
		return usagef("abuse: --burst-addrs at most 60000 (loopback addresses 127.200-255.x.y)")
	}
	return nil
}

// abuseFigures is the server's state at one moment.
type abuseFigures struct {
	RSSKiB       int64 `json:"rss_kib"`
	Threads      int   `json:"threads"`
	FDs          int   `json:"fds"`
	Goroutines   int64 `json:"goroutines"`
	HeapInuseKiB int64 `json:"heap_inuse_kib"`
	OpenStreams  int64 `json:"open_streams"`
}

// abuseOutcome counts what one attack got.
type abuseOutcome struct {
	Attempts int            `json:"attempts"`
	Answers  map[string]int `json:"answers"` // HTTP status or WebSocket close code -> count
	FiveXX   int            `json:"5xx"`
}

type abuseReport struct {
	Config abuseConfig  `json:"config"`
	Before abuseFigures `json:"before"`
	Peak   abuseFigures `json:"peak"`
	After  abuseFigures `json:"after"`
	// ReturnedAfterS is how long after the abuse the goroutines, fds and
	// open streams were back at their baseline (-1: not within --settle).
	ReturnedAfterS float64                 `json:"returned_after_s"`
	Attacks        map[string]abuseOutcome `json:"attacks"`
	FiveXX         int                     `json:"5xx"`
	// Idle keep-alives and slowloris connections: how many the server
	// closed, and the median time it took (from the last byte sent).
	IdleOpened    int     `json:"idle_opened"`
	IdleClosed    int     `json:"idle_closed_by_server"`
	IdleClosedS   float64 `json:"idle_closed_after_s"`
	SlowOpened    int     `json:"slow_opened"`
	SlowClosed    int     `json:"slow_closed_by_server"`
	SlowClosedS   float64 `json:"slow_closed_after_s"`
	LegitReady    int     `json:"legit_ready"`
	LegitDropped  int64   `json:"legit_disconnected"`
	QuietP99MS    float64 `json:"quiet_fanout_p99_ms"`
	AbuseP99MS    float64 `json:"abuse_fanout_p99_ms"`
	QuietDelivery float64 `json:"quiet_delivery"` // received / expected
	AbuseDelivery float64 `json:"abuse_delivery"`
	// PublishErrors are probe publishes that got no answer (not counted
	// as sent).
	PublishErrors int64 `json:"probe_publish_errors"`
}

func cmdAbuse(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, sf := newCommand("abuse", stderr)
	var cfg abuseConfig
	fs.IntVar(&cfg.Legit, "legit", 200, "legitimate WebSocket clients (visitors streams) whose fanout is measured")
	fs.IntVar(&cfg.Communities, "communities", 4, "communities of the legitimate clients")
	fs.Float64Var(&cfg.Rate, "rate", 5, "probe broadcasts per second to each community")
	fs.DurationVar(&cfg.Quiet, "quiet-phase", 10*time.Second, "how long the fanout is measured before the abuse")
	fs.DurationVar(&cfg.Duration, "duration", 15*time.Second, "how long the abuse lasts")
	fs.DurationVar(&cfg.Settle, "settle", 30*time.Second, "how long to wait after the abuse for the server's figures to return")
	fs.IntVar(&cfg.BurstAddrs, "burst-addrs", 50, "loopback addresses (127.200-255.x.y) that each send bursts every second")
	fs.IntVar(&cfg.Burst, "burst", 250, "stream connection attempts (without a credential) and REST polls per address per burst (over the default per-address bursts of 40 and 200)")
	fs.IntVar(&cfg.Idle, "idle", 1000, "idle keep-alive connections (one request each, then silence)")
	fs.IntVar(&cfg.Slow, "slowloris", 300, "slowloris upgrades (a header line every 3 s, never finished)")
	fs.Float64Var(&cfg.Bogus, "bogus", 200, "bogus credentials per second (bad signature, malformed, expired; WebSocket, SSE, REST, service API)")
	fs.Float64Var(&cfg.Resumes, "resumes", 50, "SSE resumes per second with an unknown, ancient or over-long Last-Event-ID")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 5*time.Second, "FOOTFALL_IDLE_TIMEOUT of a started footfall (default 2m is too long to wait for)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("abuse: unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	kind := kindOf(sf.target)
	if kind == kindBaseline {
		return usagef("abuse: --target footfall or a URL")
	}
	cfg.QuietS, cfg.DurationS, cfg.IdleTimeoutS = cfg.Quiet.Seconds(), cfg.Duration.Seconds(), cfg.IdleTimeout.Seconds()
	if kind == kindFootfall {
		sf = sf.withEnv("FOOTFALL_IDLE_TIMEOUT=" + cfg.IdleTimeout.String())
	}
	need := cfg.Legit + burstInFlight + cfg.Idle + cfg.Slow + int((cfg.Bogus+cfg.Resumes)*5) + 256
	bin, cleanup, err := sf.prepare(ctx, kind, need, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	rep, err := onFresh(ctx, sf, kind, bin, stderr, func(tg *target) (abuseReport, error) {
		return abuseOnce(ctx, tg, cfg, stderr)
	})
	if err != nil {
		return err
	}
	return emit(stdout, *asJSON, rep, writeAbuseText)
}

// legitTraffic is the legitimate clients' side of abuse: the probes sent
// and the latencies received, by phase (a probe sent before the abuse
// began is quiet).
type legitTraffic struct {
	abuseStart                        atomic.Int64 // Unix ns
	sentQuiet, sentAbuse, publishErrs atomic.Int64

	mu                 sync.Mutex
	quietLat, abuseLat []int64
}

func (lt *legitTraffic) onMsg(msg []byte, now int64) {
	if v, ok := extractInt(msg, probeKeyVisitors); ok {
		lt.mu.Lock()
		if v < lt.abuseStart.Load() {
			lt.quietLat = append(lt.quietLat, now-v)
		} else {
			lt.abuseLat = append(lt.abuseLat, now-v)
		}
		lt.mu.Unlock()
	}
}

// probe publishes a probe to every community rate times a second until
// probeCtx ends. The publishes use ctx, not probeCtx: stopping the probes
// must not cancel a publish the server may already have delivered (it
// would then count as delivered, never sent).
func (lt *legitTraffic) probe(ctx, probeCtx context.Context, tg *target, comms []string, rate float64) {
	hc := &http.Client{Timeout: 10 * time.Second}
	tickEvery(probeCtx, time.Duration(float64(time.Second)/rate), func(int) bool {
		for _, comm := range comms {
			ns := time.Now().UnixNano()
			if _, err := tg.publish(ctx, hc, comm, "visitors", probeMessage("visitors", comm, ns)); err != nil {
				lt.publishErrs.Add(1)
				continue
			}
			if ns < lt.abuseStart.Load() {
				lt.sentQuiet.Add(1)
			} else {
				lt.sentAbuse.Add(1)
			}
		}
		return true
	})
}

// fanout fills in the legitimate clients' fanout figures.
func (lt *legitTraffic) fanout(rep *abuseReport, cfg abuseConfig) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	rep.QuietP99MS = ms(time.Duration(percentileOf(lt.quietLat, 99)))
	rep.AbuseP99MS = ms(time.Duration(percentileOf(lt.abuseLat, 99)))
	perProbe := float64(cfg.Legit) / float64(cfg.Communities)
	if n := lt.sentQuiet.Load(); n > 0 {
		rep.QuietDelivery = round(float64(len(lt.quietLat))/(float64(n)*perProbe), 4)
	}
	if n := lt.sentAbuse.Load(); n > 0 {
		rep.AbuseDelivery = round(float64(len(lt.abuseLat))/(float64(n)*perProbe), 4)
	}
	rep.PublishErrors = lt.publishErrs.Load()
}

func abuseOnce(ctx context.Context, tg *target, cfg abuseConfig, progress io.Writer) (abuseReport, error) {
	rep := abuseReport{Config: cfg, Attacks: map[string]abuseOutcome{}, ReturnedAfterS: -1}
	if !tg.loopback() {
		return rep, usagef("abuse: the target must listen on an IPv4 loopback address (attacks come from 127.x.y.z)")
	}
	comms := communityIDs(cfg.Communities, uint32(time.Now().Unix()))
	st := &abuseState{tg: tg, cfg: cfg, community: "abcdef00-0000-4000-8000-0000000ab05e", outcomes: map[string]*abuseOutcome{}}

	// The legitimate clients.
	lt := &legitTraffic{}
	lt.abuseStart.Store(1 << 62)
	ctr := newCounters()
	pool := newPool(ctx)
	defer pool.stop()
	sem := make(chan struct{}, 64)
	for i := range cfg.Legit {
		c, err := tg.newClient(fmt.Sprintf("legit-%d", i), comms[i%len(comms)], "visitors", tg.sourceIP(i, 20), 2*time.Hour)
		if err != nil {
			return rep, err
		}
		c.onMsg = lt.onMsg
		if err := pool.start(tg, c, "ws", ctr, sem); err != nil {
			return rep, err
		}
	}
	if err := waitReady(ctx, ctr, cfg.Legit, 60*time.Second); err != nil {
		return rep, fmt.Errorf("legitimate clients: %w", err)
	}
	rep.LegitReady = int(ctr.ready.Load())
	fmt.Fprintf(progress, "abuse: %d legitimate clients ready; quiet phase %s\n", rep.LegitReady, cfg.Quiet)
	_ = sleepCtx(ctx, 2*time.Second)
	rep.Before = abuseSnapshot(ctx, tg)

	// Probes run through both phases.
	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		lt.probe(ctx, probeCtx, tg, comms, cfg.Rate)
	}()
	if err := sleepCtx(ctx, cfg.Quiet); err != nil {
		stopProbes()
		return rep, err
	}

	// The abuse.
	fmt.Fprintf(progress, "abuse: attacking for %s\n", cfg.Duration)
	lt.abuseStart.Store(time.Now().UnixNano())
	attackCtx, stopAttacks := context.WithTimeout(ctx, cfg.Duration)
	var wg sync.WaitGroup
	var idle, slow *lingerSet
	wg.Go(func() { st.bursts(attackCtx) })
	wg.Go(func() { idle = st.idleKeepalives(attackCtx) })
	wg.Go(func() { slow = st.slowloris(attackCtx) })
	wg.Go(func() { st.bogus(attackCtx) })
	wg.Go(func() { st.resumes(attackCtx) })
	peakDone := make(chan struct{})
	go func() {
		defer close(peakDone)
		for attackCtx.Err() == nil {
			rep.Peak = maxFigures(rep.Peak, abuseSnapshot(ctx, tg))
			_ = sleepCtx(attackCtx, 500*time.Millisecond)
		}
	}()
	<-attackCtx.Done()
	stopAttacks()
	<-peakDone
	wg.Wait()
	abuseEnd := time.Now()
	// A second of probes after the attacks, then the fanout figures.
	_ = sleepCtx(ctx, time.Second)
	stopProbes()
	<-probesDone
	_ = sleepCtx(ctx, time.Second)

	// Back to baseline: the attacks' connections still open are the idle
	// and slow ones, which the server must close by itself.
	fmt.Fprintf(progress, "abuse: waiting up to %s for the server to return to its baseline\n", cfg.Settle)
	deadline := abuseEnd.Add(cfg.Settle)
	for {
		cur := abuseSnapshot(ctx, tg)
		rep.Peak = maxFigures(rep.Peak, cur)
		rep.After = cur
		if idle.allClosed() && slow.allClosed() && backAtBaseline(rep.Before, cur) {
			rep.ReturnedAfterS = round(time.Since(abuseEnd).Seconds(), 1)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		_ = sleepCtx(ctx, 500*time.Millisecond)
	}
	rep.IdleOpened, rep.IdleClosed, rep.IdleClosedS = idle.closed()
	rep.SlowOpened, rep.SlowClosed, rep.SlowClosedS = slow.closed()
	idle.closeAll()
	slow.closeAll()

	st.mu.Lock()
	for name, o := range st.outcomes {
		rep.Attacks[name] = *o
		rep.FiveXX += o.FiveXX
	}
	st.mu.Unlock()
	lt.fanout(&rep, cfg)
	rep.LegitDropped = ctr.disconnected.Load()
	return rep, nil
}

func percentileOf(ns []int64, p float64) int64 {
	s := slices.Clone(ns)
	slices.Sort(s)
	return percentile(s, p)
}

// backAtBaseline: goroutines, descriptors and open streams are where they
// were before the abuse (a small slack for the harness's own scrapes and
// the runtime).
func backAtBaseline(before, cur abuseFigures) bool {
	return cur.Goroutines <= before.Goroutines+10 && cur.FDs <= before.FDs+5 && cur.OpenStreams <= before.OpenStreams
}

func abuseSnapshot(ctx context.Context, tg *target) abuseFigures {
	s := takeSnapshot(ctx, tg)
	return abuseFigures{
		RSSKiB: s.proc.RSSKiB, Threads: s.proc.Threads, FDs: s.proc.FDs,
		Goroutines: s.metrics.Goroutines, HeapInuseKiB: s.metrics.HeapInuseKiB, OpenStreams: s.metrics.OpenConns,
	}
}

func maxFigures(a, b abuseFigures) abuseFigures {
	return abuseFigures{
		RSSKiB: max(a.RSSKiB, b.RSSKiB), Threads: max(a.Threads, b.Threads), FDs: max(a.FDs, b.FDs),
		Goroutines: max(a.Goroutines, b.Goroutines), HeapInuseKiB: max(a.HeapInuseKiB, b.HeapInuseKiB),
		OpenStreams: max(a.OpenStreams, b.OpenStreams),
	}
}

func writeAbuseText(w io.Writer, r abuseReport) {
	c := r.Config
	fmt.Fprintf(w, "abuse: %d legitimate WebSocket clients over %d communities, %g probes/s each; quiet %s, abuse %s\n",
		c.Legit, c.Communities, c.Rate, c.Quiet, c.Duration)
	fmt.Fprintf(w, "attacks: bursts from %d addresses x %d stream connections + %d REST polls a second, %d idle keep-alives, %d slowloris upgrades, %g bogus credentials/s, %g long-gap resumes/s (idle timeout %s)\n\n",
		c.BurstAddrs, c.Burst, c.Burst, c.Idle, c.Slow, c.Bogus, c.Resumes, c.IdleTimeout)
	fmt.Fprintf(w, "%-8s %10s %8s %6s %11s %10s %13s\n", "", "RSS", "threads", "fds", "goroutines", "heap", "open streams")
	for _, row := range []struct {
		name string
		f    abuseFigures
	}{{"before", r.Before}, {"peak", r.Peak}, {"after", r.After}} {
		fmt.Fprintf(w, "%-8s %10s %8d %6d %11d %10s %13d\n", row.name, kib(row.f.RSSKiB), row.f.Threads, row.f.FDs, row.f.Goroutines, kib(row.f.HeapInuseKiB), row.f.OpenStreams)
	}
	if r.ReturnedAfterS >= 0 {
		fmt.Fprintf(w, "back at baseline (goroutines, fds, open streams) %.1f s after the abuse\n\n", r.ReturnedAfterS)
	} else {
		fmt.Fprintf(w, "NOT back at baseline within %s of the abuse\n\n", c.Settle)
	}
	names := make([]string, 0, len(r.Attacks))
	for n := range r.Attacks {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		o := r.Attacks[n]
		answers := make([]string, 0, len(o.Answers))
		for a, k := range o.Answers {
			answers = append(answers, fmt.Sprintf("%s x%d", a, k))
		}
		slices.Sort(answers)
		fmt.Fprintf(w, "  %-34s %7d  %s\n", n, o.Attempts, strings.Join(answers, ", "))
	}
	fmt.Fprintf(w, "5xx answers: %d\n", r.FiveXX)
	fmt.Fprintf(w, "idle keep-alives closed by the server: %d of %d (median %.2f s after their request)\n", r.IdleClosed, r.IdleOpened, r.IdleClosedS)
	fmt.Fprintf(w, "slowloris upgrades closed by the server: %d of %d (median %.2f s after their last line)\n", r.SlowClosed, r.SlowOpened, r.SlowClosedS)
	fmt.Fprintf(w, "legitimate clients: %d ready, %d disconnected; fanout p99 %.2f ms quiet, %.2f ms under abuse; delivery %.4f quiet, %.4f under abuse (%d probe publishes unanswered)\n",
		r.LegitReady, r.LegitDropped, r.QuietP99MS, r.AbuseP99MS, r.QuietDelivery, r.AbuseDelivery, r.PublishErrors)
}
