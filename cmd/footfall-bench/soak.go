package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"
)

// soak (issue 7): a bounded run that mixes a steady pool of WebSocket and
// SSE clients on both streams, broadcasts, visitor churn through the
// service API and reconnects, and samples the server's RSS, threads and
// open descriptors (footfall has no goroutine metric yet) at the start,
// along the way and at the end, with the same pool connected. Flat is
// good. It samples once more after closing every client: the descriptors
// must fall back to the idle figure.

type soakConfig struct {
	Duration      time.Duration
	Clients       int
	SSEFraction   float64
	Communities   int
	Rate          float64
	ReconnectRate float64
	ChurnEvery    time.Duration
	ChurnSize     int
	SampleEvery   time.Duration
	PerIP         int
	FreshIDs      bool
}

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
}

func cmdSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("footfall-bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serverFlags
	sf.register(fs, kindFootfall)
	var cfg soakConfig
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "how long to soak (e.g. 30s, 10m)")
	fs.IntVar(&cfg.Clients, "clients", 1000, "steady pool of clients (both streams)")
	fs.Float64Var(&cfg.SSEFraction, "sse-fraction", 0.2, "share of the pool on SSE instead of WebSocket")
	fs.IntVar(&cfg.Communities, "communities", 10, "communities the pool is spread over")
	fs.Float64Var(&cfg.Rate, "rate", 5, "broadcasts per second (round robin over communities and streams)")
	fs.Float64Var(&cfg.ReconnectRate, "reconnect-rate", 10, "pool clients closed and reopened per second")
	fs.DurationVar(&cfg.ChurnEvery, "churn-every", 5*time.Second, "a churn round every this long: visitors join, then leave half a period later")
	fs.IntVar(&cfg.ChurnSize, "churn-size", 200, "anonymous visitors per churn round (service API)")
	fs.DurationVar(&cfg.SampleEvery, "sample-every", 0, "sampling period (default: duration/10, at least 1s)")
	fs.IntVar(&cfg.PerIP, "clients-per-ip", 20, "clients per loopback source address, below footfall's per-IP connection limits; 0: all from one")
	fs.BoolVar(&cfg.FreshIDs, "fresh-ids", false, "a new token for every reconnect and new visitor ids for every churn round (realistic, but footfall's verified-token cache and today's-visitors set then grow by design); default: reuse them, so that any growth is a leak")
	valkeyRestart := fs.Bool("valkey-restart", false, "restart Valkey during the soak (not yet: the Valkey bus is being built)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *valkeyRestart {
		return fmt.Errorf("--valkey-restart: %w: footfall has only the embedded bus so far (issue 3); this flag is a stub", errNotYet)
	}
	switch {
	case cfg.Duration <= 0, cfg.Clients < 2, cfg.Communities < 1, cfg.Communities > cfg.Clients:
		return usagef("--duration must be positive, --clients at least 2 and --communities between 1 and --clients")
	case cfg.Rate <= 0, cfg.ReconnectRate < 0, cfg.ChurnEvery <= 0, cfg.ChurnSize < 0 || cfg.ChurnSize > 1000:
		return usagef("--rate and --churn-every must be positive, --reconnect-rate not negative, --churn-size 0..1000")
	case cfg.SSEFraction < 0 || cfg.SSEFraction > 1:
		return usagef("--sse-fraction must be between 0 and 1")
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = max(cfg.Duration/10, time.Second)
	}
	kind := kindOf(sf.target)
	if kind == kindBaseline {
		return usagef("soak needs footfall")
	}
	if err := pinSelf(sf.clientCPU); err != nil {
		return err
	}
	if _, err := raiseFDLimit(cfg.Clients * 2); err != nil {
		return err
	}
	bin := sf.footfallBin
	if kind == kindFootfall && bin == "" {
		b, dir, err := buildFootfall(ctx, stderr)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = b
	}
	if err := sf.waitQuiet(ctx, stderr); err != nil {
		return err
	}
	tg, err := sf.start(ctx, kind, bin)
	if err != nil {
		return err
	}
	defer tg.stop()
	rep, err := soakOnce(ctx, tg, cfg, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, rep)
	}
	writeSoakText(stdout, rep)
	return nil
}

func soakOnce(ctx context.Context, tg *target, cfg soakConfig, progress io.Writer) (soakReport, error) {
	rep := soakReport{Target: tg.kind, DurationS: cfg.Duration.Seconds(), Clients: cfg.Clients, Communities: cfg.Communities}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	t0 := time.Now()
	_, rep.ServerStats = tg.stats()
	sample := func(label string) {
		s, ok := tg.stats()
		if !ok {
			return
		}
		row := soakSample{ElapsedS: round(time.Since(t0).Seconds(), 1), Label: label, RSSKiB: s.RSSKiB, Threads: s.Threads, FDs: s.FDs, CPUS: round(s.CPU.Seconds(), 2)}
		if m, ok := tg.scrapeMetrics(ctx); ok {
			rep.Metrics = true
			row.Goroutines, row.HeapInuseKiB, row.OpenConns, row.NextGCKiB = m.Goroutines, m.HeapInuseKiB, m.OpenConns, m.NextGCKiB
		}
		rep.Samples = append(rep.Samples, row)
		fmt.Fprintf(progress, "soak %6.1fs %-8s RSS %7.1f MiB  heap %7.1f MiB  GC goal %7.1f MiB  goroutines %6d  open %5d  threads %3d  fds %5d  cpu %.1f s\n",
			row.ElapsedS, label, float64(row.RSSKiB)/1024, float64(row.HeapInuseKiB)/1024, float64(row.NextGCKiB)/1024, row.Goroutines, row.OpenConns, row.Threads, row.FDs, row.CPUS)
	}
	time.Sleep(500 * time.Millisecond)
	sample("idle")

	comms := communityIDs(cfg.Communities, 0x300)
	ctr := newCounters()
	var (
		wg    sync.WaitGroup
		allMu sync.Mutex
		all   []*benchClient
	)
	transportOf := make([]string, cfg.Clients)
	slots := make([]*benchClient, cfg.Clients)
	tokens := make([]string, cfg.Clients)
	open := func(i int) error {
		stream := "dashboard"
		if i%2 == 1 {
			stream = "visitors"
		}
		tok := tokens[i]
		if tok == "" || cfg.FreshIDs {
			var err error
			if tok, err = tg.token(fmt.Sprintf("soak-%d", i), comms[i%cfg.Communities], roleFor(stream), 24*time.Hour); err != nil {
				return err
			}
			tokens[i] = tok
		}
		c := newBenchClient(comms[i%cfg.Communities], stream, tok)
		c.local = tg.sourceIP(i, cfg.PerIP)
		slots[i] = c
		allMu.Lock()
		all = append(all, c)
		allMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, tg, transportOf[i], ctr, nil)
		}()
		return nil
	}
	defer func() {
		allMu.Lock()
		cs := append([]*benchClient(nil), all...)
		allMu.Unlock()
		for _, c := range cs {
			c.stop()
		}
		wg.Wait()
	}()
	nSSE := int(float64(cfg.Clients)*cfg.SSEFraction + 0.5)
	for i := range slots {
		transportOf[i] = "ws"
		if (i*7919)%cfg.Clients < nSSE { // a permutation: nSSE clients spread over streams and communities
			transportOf[i] = "sse"
		}
		if err := open(i); err != nil {
			return rep, err
		}
		if i%500 == 499 {
			time.Sleep(500 * time.Millisecond) // ramp at about 1,000/s
		}
	}
	if err := waitReady(ctx, ctr, cfg.Clients, 60*time.Second); err != nil {
		return rep, err
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return rep, err
	}
	sample("start")

	sctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer hc.CloseIdleConnections()
	var loops sync.WaitGroup
	var mu sync.Mutex // guards rep's counters written by the loops

	loops.Add(1)
	go func() { // broadcasts
		defer loops.Done()
		tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer tick.Stop()
		for b := 0; ; b++ {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			stream := "dashboard"
			if (b/cfg.Communities)%2 == 1 {
				stream = "visitors"
			}
			req, err := tg.publishRequest(sctx, comms[b%cfg.Communities], stream, probeMessage(stream, comms[b%cfg.Communities], time.Now().UnixNano()))
			ok := false
			if err == nil {
				if resp, err := hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode/100 == 2
				}
			}
			mu.Lock()
			rep.Broadcasts++
			if !ok && sctx.Err() == nil {
				rep.PublishErrors++
			}
			mu.Unlock()
		}
	}()

	if cfg.ReconnectRate > 0 {
		loops.Add(1)
		go func() { // reconnects
			defer loops.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.ReconnectRate))
			defer tick.Stop()
			rng := rand.New(rand.NewPCG(7, 11))
			for {
				select {
				case <-sctx.Done():
					return
				case <-tick.C:
				}
				i := rng.IntN(cfg.Clients)
				slots[i].stop()
				if err := open(i); err != nil {
					return
				}
				mu.Lock()
				rep.Reconnects++
				mu.Unlock()
			}
		}()
	}

	if cfg.ChurnSize > 0 {
		loops.Add(1)
		go func() { // churn
			defer loops.Done()
			for round := 0; ; round++ {
				ids := make([]string, cfg.ChurnSize)
				idRound := round % 4 // the same 4 sets of visitors again and again
				if cfg.FreshIDs {
					idRound = round
				}
				for i := range ids {
					ids[i] = fmt.Sprintf("soak-anon-%d-%d", idRound, i)
				}
				community := comms[round%cfg.Communities]
				_, _, errJ := visitorEvents(context.Background(), hc, tg, community, ids, "join")
				_ = sleepCtx(sctx, cfg.ChurnEvery/2)
				// Leave even when the soak is over, so that the end sample
				// has no churn visitors present.
				_, _, errL := visitorEvents(context.Background(), hc, tg, community, ids, "leave")
				mu.Lock()
				rep.ChurnRounds++
				rep.ChurnVisitors += 2 * len(ids)
				if errJ != nil {
					rep.ChurnErrors++
				}
				if errL != nil {
					rep.ChurnErrors++
				}
				mu.Unlock()
				if sleepCtx(sctx, cfg.ChurnEvery/2) != nil {
					return
				}
			}
		}()
	}

	tick := time.NewTicker(cfg.SampleEvery)
sampling:
	for {
		select {
		case <-sctx.Done():
			break sampling
		case <-tick.C:
			sample("running")
		}
	}
	tick.Stop()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	loops.Wait()

	// The end: the same pool connected, nothing else going on.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, c := range slots {
			if c.isReady.Load() {
				n++
			}
		}
		if n == cfg.Clients || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return rep, err
	}
	sample("end")
	allMu.Lock()
	cs := append([]*benchClient(nil), all...)
	allMu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	wg.Wait()
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return rep, err
	}
	sample("closed")

	var lat []int64
	for _, c := range cs {
		lat = append(lat, c.lat...)
	}
	rep.Received = len(lat)
	ls := summarize(lat)
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS = round(ms(ls.P50), 2), round(ms(ls.P99), 2), round(ms(ls.Max), 2)
	rep.ConnectFailed = ctr.failed.Load()
	rep.Disconnected = ctr.disconnected.Load()
	ctr.mu.Lock()
	if len(ctr.errs) > 0 {
		rep.ConnectErrors = ctr.errs
	}
	ctr.mu.Unlock()
	judgeSoak(&rep)
	return rep, nil
}

// judgeSoak compares the start and end samples: flat means at most 25 %
// more RSS (or an RSS that stopped growing: at most 0.5 MiB a minute over
// the second half, since a Go heap grows to its GC target first), no more
// than a handful of extra descriptors, and the descriptors back at the
// idle figure once the clients are gone.
func judgeSoak(rep *soakReport) {
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
}
