package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// soak: a bounded run that mixes a steady pool of WebSocket and
// SSE clients on both streams, broadcasts, visitor churn through the
// service API and reconnects, and samples the server's RSS, threads, open
// descriptors and (from /metrics) goroutines at the start, along the way
// and at the end, with the same pool connected. Flat is good. It samples
// once more after closing every client: the descriptors must fall back to
// the idle figure.
//
// With --valkey the harness runs one or more footfall nodes on a Valkey
// server of its own (soak_valkey.go), and with --valkey-restart it kills
// that server and starts it again, empty, during the soak: no client may
// be disconnected, /readyz must go 503 and come back, and every client's
// count must converge on the truth again.

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

	// Valkey: footfall runs on a Valkey server the harness starts.
	Valkey       bool
	ValkeyServer string // the server binary (default: from PATH)
	ValkeyCPU    string // taskset -c for it (default: --server-cpu)
	Nodes        int    // footfall nodes on it; the pool is spread over them
	// Restart kills Valkey (SIGKILL) and starts it again, empty, every
	// RestartEvery (0: once, halfway), keeping it down at least ValkeyDown
	// and until every node's /readyz answers 503.
	Restart      bool
	RestartEvery time.Duration
	ValkeyDown   time.Duration
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
	fs.BoolVar(&cfg.Valkey, "valkey", false, "run footfall on a redis-server/valkey-server the harness starts on a free port (FOOTFALL_VALKEY_URL)")
	fs.StringVar(&cfg.ValkeyServer, "valkey-server", "", "Valkey server binary for --valkey (default: valkey-server or redis-server from PATH)")
	fs.StringVar(&cfg.ValkeyCPU, "valkey-cpu", "", "pin the Valkey server to this CPU list (default: --server-cpu)")
	fs.IntVar(&cfg.Nodes, "nodes", 1, "footfall nodes on the Valkey (--valkey); the pool is spread over them")
	fs.BoolVar(&cfg.Restart, "valkey-restart", false, "kill Valkey (SIGKILL) and start it again, empty, during the soak (implies --valkey)")
	fs.DurationVar(&cfg.RestartEvery, "valkey-restart-every", 0, "restart Valkey this often (default: once, halfway through)")
	fs.DurationVar(&cfg.ValkeyDown, "valkey-down", 3*time.Second, "keep Valkey down at least this long (and until every node's /readyz is 503)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Restart {
		cfg.Valkey = true
	}
	switch {
	case cfg.Nodes < 1, cfg.Nodes > 1 && !cfg.Valkey:
		return usagef("--nodes must be at least 1, and more than 1 only with --valkey")
	case cfg.RestartEvery < 0, cfg.ValkeyDown < 0:
		return usagef("--valkey-restart-every and --valkey-down must not be negative")
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
	if cfg.Valkey && kind != kindFootfall {
		return usagef("--valkey starts footfall itself: not with --target URL")
	}
	var valkeyBin string
	if cfg.Valkey {
		var err error
		if valkeyBin, err = findValkeyServer(cfg.ValkeyServer); err != nil {
			return err
		}
		if cfg.ValkeyCPU == "" {
			cfg.ValkeyCPU = sf.serverCPU
		}
	}
	bin, cleanup, err := sf.prepare(ctx, kind, cfg.Clients*2, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := sf.waitQuiet(ctx, stderr); err != nil {
		return err
	}
	var (
		nodes []*target
		vk    *valkeyProc
	)
	if cfg.Valkey {
		if vk, err = startValkey(ctx, valkeyBin, cfg.ValkeyCPU); err != nil {
			return err
		}
		defer vk.close() // after the nodes stopped (defers run last first)
		fmt.Fprintf(stderr, "soak: %s on %s\n", valkeyBin, vk.addr())
		if nodes, err = startFootfallNodes(ctx, cfg.Nodes, bin, sf.serverCPU, vk.url(), sf.serverEnv); err != nil {
			return err
		}
	} else {
		tg, err := sf.start(ctx, kind, bin)
		if err != nil {
			return err
		}
		nodes = []*target{tg}
	}
	defer func() {
		for _, tg := range nodes {
			_ = tg.stop()
		}
	}()
	rep, err := soakOnce(ctx, nodes, vk, cfg, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, rep)
	}
	writeSoakText(stdout, rep)
	return nil
}

func soakOnce(ctx context.Context, nodes []*target, vk *valkeyProc, cfg soakConfig, progress io.Writer) (soakReport, error) {
	tg := nodes[0] // mints the tokens (every node has the same secret)
	progress = &syncWriter{w: progress}
	rep := soakReport{Target: tg.kind, Nodes: len(nodes), Valkey: vk != nil, DurationS: cfg.Duration.Seconds(), Clients: cfg.Clients, Communities: cfg.Communities}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	t0 := time.Now()
	_, rep.ServerStats = tg.stats()
	// sample sums the figures of every node (one node: its own).
	sample := func(label string) {
		row := soakSample{ElapsedS: round(time.Since(t0).Seconds(), 1), Label: label}
		for _, n := range nodes {
			s, ok := n.stats()
			if !ok {
				return
			}
			row.RSSKiB, row.Threads, row.FDs, row.CPUS = row.RSSKiB+s.RSSKiB, row.Threads+s.Threads, row.FDs+s.FDs, row.CPUS+s.CPU.Seconds()
			if m, ok := n.scrapeMetrics(ctx); ok {
				rep.Metrics = true
				row.Goroutines += m.Goroutines
				row.HeapInuseKiB += m.HeapInuseKiB
				row.OpenConns += m.OpenConns
				row.NextGCKiB += m.NextGCKiB
			}
		}
		row.CPUS = round(row.CPUS, 2)
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
	var watch *countWatch // the count each client was last sent, for --valkey-restart
	if cfg.Restart {
		watch = newCountWatch(cfg.Clients)
	}
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
		// Slot i's stream is i%2 and its community i%Communities: the
		// node is (i/2)%nodes, so that every node has clients of both
		// streams in every community (i%nodes would put all of one
		// stream on one node with two nodes).
		node := nodes[(i/2)%len(nodes)]
		c := newBenchClient(comms[i%cfg.Communities], stream, tok)
		c.local = node.sourceIP(i, cfg.PerIP)
		if watch != nil {
			c.onMsg = watch.follow(i, stream)
		}
		slots[i] = c
		allMu.Lock()
		all = append(all, c)
		allMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, node, transportOf[i], ctr, nil)
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
	tStart := time.Now()

	sctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer hc.CloseIdleConnections()
	var loops sync.WaitGroup
	var mu sync.Mutex // guards rep's counters written by the loops
	// hold pauses the mix: each step of a loop holds it for reading, a
	// Valkey restart for writing, so that the pool stands still (every
	// client connected, no churn visitor present) from before the kill
	// until every count converged, and the truth is known.
	var hold sync.RWMutex

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
			hold.RLock()
			stream := "dashboard"
			if (b/cfg.Communities)%2 == 1 {
				stream = "visitors"
			}
			req, err := nodes[b%len(nodes)].publishRequest(sctx, comms[b%cfg.Communities], stream, probeMessage(stream, comms[b%cfg.Communities], time.Now().UnixNano()))
			ok := false
			if err == nil {
				if resp, err := hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode/100 == 2
				}
			}
			hold.RUnlock()
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
				hold.RLock()
				i := rng.IntN(cfg.Clients)
				slots[i].stop()
				err := open(i)
				hold.RUnlock()
				if err != nil {
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
				node := nodes[round%len(nodes)]
				hold.RLock()
				_, _, errJ := visitorEvents(context.Background(), hc, node, community, ids, "join")
				_ = sleepCtx(sctx, cfg.ChurnEvery/2)
				// Leave even when the soak is over, so that the end sample
				// has no churn visitors present.
				_, _, errL := visitorEvents(context.Background(), hc, node, community, ids, "leave")
				hold.RUnlock()
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

	var restartErr error // written by the restart loop before loops.Wait returns
	if cfg.Restart {
		loops.Add(1)
		go func() { // Valkey restarts
			defer loops.Done()
			every := cfg.RestartEvery
			first := every
			if every == 0 {
				first = cfg.Duration / 2
			}
			timer := time.NewTimer(first)
			defer timer.Stop()
			for k := 2; ; k++ {
				select {
				case <-sctx.Done():
					return
				case <-timer.C:
				}
				// A restart takes a few seconds beyond --valkey-down: no
				// periodic one starts so close to the end that it would
				// outlast the soak (the single halfway one always runs).
				if every > 0 && time.Until(tStart.Add(cfg.Duration)) < cfg.ValkeyDown+10*time.Second {
					return
				}
				hold.Lock() // waits for the loops' steps in flight
				if sctx.Err() != nil {
					hold.Unlock()
					return
				}
				o, err := restartValkey(ctx, vk, nodes, cfg, restartState{
					slots: slots, watch: watch, ctr: ctr, open: open, t0: t0,
				}, progress)
				hold.Unlock()
				mu.Lock()
				rep.Outages = append(rep.Outages, o)
				mu.Unlock()
				if err != nil {
					restartErr = err
					cancel()
					return
				}
				if every == 0 {
					return
				}
				timer.Reset(time.Until(tStart.Add(time.Duration(k) * every)))
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
	loops.Wait()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if restartErr != nil {
		return rep, restartErr
	}

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
	if vk != nil {
		for _, n := range nodes {
			rep.BusMetrics = append(rep.BusMetrics, n.scrapeBusMetrics(ctx))
		}
	}
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
