package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
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

func cmdSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, sf := newCommand("soak", stderr)
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
	var rep soakReport
	if cfg.Valkey {
		rep, err = soakOnValkey(ctx, sf, bin, valkeyBin, cfg, stderr)
	} else {
		rep, err = onFresh(ctx, sf, kind, bin, stderr, func(tg *target) (soakReport, error) {
			return soakOnce(ctx, []*target{tg}, nil, cfg, stderr)
		})
	}
	if err != nil {
		return err
	}
	return emit(stdout, *asJSON, rep, writeSoakText)
}

// soakOnValkey soaks cfg.Nodes fresh footfall nodes on a Valkey server of
// the harness's own.
func soakOnValkey(ctx context.Context, sf *serverFlags, bin, valkeyBin string, cfg soakConfig, progress io.Writer) (soakReport, error) {
	if err := sf.waitQuiet(ctx, progress); err != nil {
		return soakReport{}, err
	}
	vk, err := startValkey(ctx, valkeyBin, cfg.ValkeyCPU)
	if err != nil {
		return soakReport{}, err
	}
	defer vk.close() // after the nodes stopped (defers run last first)
	fmt.Fprintf(progress, "soak: %s on %s\n", valkeyBin, vk.addr())
	nodes, err := startFootfallNodes(ctx, cfg.Nodes, bin, sf.serverCPU, vk.url(), sf.serverEnv)
	if err != nil {
		return soakReport{}, err
	}
	defer func() {
		for _, tg := range nodes {
			_ = tg.stop()
		}
	}()
	return soakOnce(ctx, nodes, vk, cfg, progress)
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
		snap := takeSnapshot(ctx, nodes...)
		if !snap.procOK {
			return
		}
		rep.Metrics = rep.Metrics || snap.metricsOK
		p, m := snap.proc, snap.metrics
		row := soakSample{ElapsedS: round(time.Since(t0).Seconds(), 1), Label: label,
			RSSKiB: p.RSSKiB, Threads: p.Threads, FDs: p.FDs, CPUS: round(p.CPU.Seconds(), 2),
			Goroutines: m.Goroutines, HeapInuseKiB: m.HeapInuseKiB, OpenConns: m.OpenConns, NextGCKiB: m.NextGCKiB}
		rep.Samples = append(rep.Samples, row)
		fmt.Fprintf(progress, "soak %6.1fs %-8s RSS %7.1f MiB  heap %7.1f MiB  GC goal %7.1f MiB  goroutines %6d  open %5d  threads %3d  fds %5d  cpu %.1f s\n",
			row.ElapsedS, label, float64(row.RSSKiB)/1024, float64(row.HeapInuseKiB)/1024, float64(row.NextGCKiB)/1024, row.Goroutines, row.OpenConns, row.Threads, row.FDs, row.CPUS)
	}
	time.Sleep(500 * time.Millisecond)
	sample("idle")

	comms := communityIDs(cfg.Communities, 0x300)
	ctr := newCounters()
	pool := newPool(ctx)
	defer pool.stop()
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
		return pool.start(node, c, transportOf[i], ctr, nil)
	}
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

	loops.Go(func() { // broadcasts
		tickEvery(sctx, time.Duration(float64(time.Second)/cfg.Rate), func(b int) bool {
			hold.RLock()
			stream := "dashboard"
			if (b/cfg.Communities)%2 == 1 {
				stream = "visitors"
			}
			comm := comms[b%cfg.Communities]
			status, err := nodes[b%len(nodes)].publish(sctx, hc, comm, stream, probeMessage(stream, comm, time.Now().UnixNano()))
			hold.RUnlock()
			mu.Lock()
			rep.Broadcasts++
			if (err != nil || status/100 != 2) && sctx.Err() == nil {
				rep.PublishErrors++
			}
			mu.Unlock()
			return true
		})
	})

	if cfg.ReconnectRate > 0 {
		rng := rand.New(rand.NewPCG(7, 11))
		loops.Go(func() { // reconnects
			tickEvery(sctx, time.Duration(float64(time.Second)/cfg.ReconnectRate), func(int) bool {
				hold.RLock()
				i := rng.IntN(cfg.Clients)
				slots[i].stop()
				err := open(i)
				hold.RUnlock()
				if err != nil {
					return false
				}
				mu.Lock()
				rep.Reconnects++
				mu.Unlock()
				return true
			})
		})
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
	lat := latencies(pool.stop())
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return rep, err
	}
	sample("closed")

	rep.Received = len(lat)
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS = summarize(lat).ms()
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
