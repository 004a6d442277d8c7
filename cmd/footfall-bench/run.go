package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"
)

// runConfig are the parameters of one fanout run.
type runConfig struct {
	Transport   string
	Stream      string
	Clients     int
	Communities int
	Broadcasts  int
	Rate        float64 // broadcasts per second
	ConnectRate float64 // new connections per second; 0: as fast as InFlight allows
	InFlight    int     // handshakes in flight at most
	PerIP       int     // clients per loopback source address (0: one address)
	Settle      time.Duration
	Drain       time.Duration
	ServerCPU   string
	ClientCPU   string
}

func (cfg runConfig) validate() error {
	switch {
	case cfg.Transport != "ws" && cfg.Transport != "sse":
		return usagef("--transport must be ws or sse")
	case cfg.Stream != "visitors" && cfg.Stream != "dashboard":
		return usagef("--stream must be visitors or dashboard")
	case cfg.Clients < 1:
		return usagef("--clients must be at least 1")
	case cfg.Communities < 1 || cfg.Communities > cfg.Clients:
		return usagef("--communities must be between 1 and --clients")
	case cfg.Broadcasts < 0:
		return usagef("--broadcasts must not be negative")
	case cfg.Broadcasts > 0 && cfg.Rate <= 0:
		return usagef("--rate must be positive")
	case cfg.ConnectRate < 0, cfg.InFlight < 1:
		return usagef("--connect-rate must not be negative and --in-flight positive")
	}
	return nil
}

// communityIDs are the bench's community ids (UUID-shaped hex).
func communityIDs(k int, tag uint32) []string {
	ids := make([]string, k)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-%04x-4000-8000-%012x", tag&0xffff, i)
	}
	return ids
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, sf := newCommand("run", stderr)
	var cfg runConfig
	fs.StringVar(&cfg.Transport, "transport", "ws", "ws or sse")
	fs.StringVar(&cfg.Stream, "stream", "dashboard", "visitors or dashboard")
	fs.IntVar(&cfg.Clients, "clients", 1000, "clients to open")
	fs.IntVar(&cfg.Communities, "communities", 1, "communities the clients are spread over (round robin); each broadcast goes to every community")
	fs.IntVar(&cfg.Broadcasts, "broadcasts", 50, "broadcasts per community (0: only connect, for idle RSS)")
	fs.Float64Var(&cfg.Rate, "rate", 5, "broadcasts per second")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 1000, "new connections per second while ramping (0: unpaced)")
	fs.IntVar(&cfg.InFlight, "in-flight", 128, "handshakes in flight at most")
	fs.IntVar(&cfg.PerIP, "clients-per-ip", 20, "clients per loopback source address (127.x.y.z), below footfall's per-IP connection limits; 0: all from one")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "wait after the last client is ready before sampling RSS and broadcasting")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "how long to wait for late deliveries after the last broadcast")
	repeat := fs.Int("repeat", 1, "runs per target (fresh server each); the report gives the medians")
	compare := fs.Bool("compare", false, "run the bare baseline and then the target, alternating, and print them side by side")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected argument %q", fs.Arg(0))
	}
	cfg.ServerCPU, cfg.ClientCPU = sf.serverCPU, sf.clientCPU
	if err := cfg.validate(); err != nil {
		return err
	}
	if *repeat < 1 {
		return usagef("--repeat must be at least 1")
	}
	kind := kindOf(sf.target)
	if *compare && kind == kindBaseline {
		return usagef("--compare runs the baseline beside --target footfall or a URL")
	}
	bin, cleanup, err := sf.prepare(ctx, kind, cfg.Clients, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	kinds := []string{kind}
	if *compare {
		kinds = []string{kindBaseline, kind}
	}
	results := make(map[string][]Report)
	for i := 0; i < *repeat; i++ {
		for _, k := range kinds {
			fmt.Fprintf(stderr, "run %d/%d: %s, %d %s %s clients...\n", i+1, *repeat, k, cfg.Clients, cfg.Transport, cfg.Stream)
			rep, err := onFresh(ctx, sf, k, bin, stderr, func(tg *target) (Report, error) {
				time.Sleep(500 * time.Millisecond) // let the server reach its idle RSS
				return runOnce(ctx, tg, cfg, uint32(i*len(kinds)+len(results[k])))
			})
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			results[k] = append(results[k], rep)
			time.Sleep(time.Second) // let the kernel settle the closed sockets
		}
	}
	res := func(k string) runResult { return runResult{Median: medianReport(results[k]), Runs: results[k]} }
	if *compare {
		return emit(stdout, *asJSON, newCompare(res(kindBaseline), res(kind)), writeCompareText)
	}
	return emit(stdout, *asJSON, res(kind), writeRunText)
}

// runOnce connects cfg.Clients clients to tg, publishes cfg.Broadcasts
// probes to every community at cfg.Rate and measures.
func runOnce(ctx context.Context, tg *target, cfg runConfig, tag uint32) (Report, error) {
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	rep := Report{
		Target: tg.kind, Transport: cfg.Transport, Stream: cfg.Stream, Clients: cfg.Clients,
		Communities: cfg.Communities, Broadcasts: cfg.Broadcasts, Rate: cfg.Rate, ConnectRate: cfg.ConnectRate,
		ServerCPU: cfg.ServerCPU, ClientCPU: cfg.ClientCPU, Runs: 1, LoadAvg: loadAvg(),
	}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	comms := communityIDs(cfg.Communities, tag)
	clients := make([]*benchClient, cfg.Clients)
	for i := range clients {
		c, err := tg.newClient(fmt.Sprintf("bench-%d-%d", tag, i), comms[i%cfg.Communities], cfg.Stream, tg.sourceIP(i, cfg.PerIP), 6*time.Hour)
		if err != nil {
			return rep, err
		}
		clients[i] = c
	}

	// Connect.
	idle := takeSnapshot(ctx, tg)
	cpu := startCPUWatch()
	ctr := newCounters()
	sem := make(chan struct{}, cfg.InFlight)
	pool := newPool(ctx)
	defer pool.stop()
	start := time.Now()
	for i, c := range clients {
		if cfg.ConnectRate > 0 {
			if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(i)/cfg.ConnectRate*float64(time.Second))))); err != nil {
				return rep, err
			}
		}
		if err := pool.start(tg, c, cfg.Transport, ctr, sem); err != nil {
			return rep, err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for ctr.ready.Load()+ctr.failed.Load() < int64(cfg.Clients) {
		if time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return rep, err
		}
	}
	ctr.mu.Lock()
	connectNS := append([]int64(nil), ctr.connectNS...)
	lastReady := ctr.lastReady
	if len(ctr.errs) > 0 {
		rep.ConnectErrors = maps.Clone(ctr.errs)
	}
	ctr.mu.Unlock()
	rep.Connected = len(connectNS)
	rep.ConnectFailed = cfg.Clients - rep.Connected
	if rep.Connected > 0 {
		rep.ConnectTotalMS = round(ms(lastReady.Sub(start)), 1)
	}
	rep.ConnectP50MS, rep.ConnectP99MS, _ = summarize(connectNS).ms()
	if rep.Connected == 0 {
		return rep, fmt.Errorf("no client connected: %v", rep.ConnectErrors)
	}
	perCommunity := make([]int, cfg.Communities)
	for i, c := range clients {
		if c.isReady.Load() {
			perCommunity[i%cfg.Communities]++
		}
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return rep, err
	}
	connected := takeSnapshot(ctx, tg)
	if connected.metricsOK && idle.metricsOK {
		rep.Metrics = true
		rep.Goroutines = connected.metrics.Goroutines
		rep.GoroutinesPerConn = round(float64(connected.metrics.Goroutines-idle.metrics.Goroutines)/float64(rep.Connected), 2)
		rep.HeapPerConnKiB = round(float64(connected.metrics.HeapInuseKiB-idle.metrics.HeapInuseKiB)/float64(rep.Connected), 2)
	}

	// Broadcast.
	var pubNS []int64
	if cfg.Broadcasts > 0 {
		var okPublished []int
		var err error
		okPublished, pubNS, rep.PublishErrors, err = publishProbes(ctx, tg, cfg, comms)
		if err != nil {
			return rep, err
		}
		for k := range comms {
			rep.Expected += int64(perCommunity[k] * okPublished[k])
		}
		last := time.Now()
		for ctr.received.Load() < rep.Expected && time.Since(last) < cfg.Drain {
			if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
				return rep, err
			}
		}
	}
	end := takeSnapshot(ctx, tg)
	if end.metricsOK && idle.metricsOK {
		rep.SocketFull = end.metrics.SocketFull - idle.metrics.SocketFull
	}
	rep.ClientCPUS = round(cpu.clientUsed().Seconds(), 2)
	if idle.procOK {
		rep.OtherCPUS, _ = cpu.otherCPU(end.proc.CPU - idle.proc.CPU)
	}
	rep.Disconnected = int(ctr.disconnected.Load())

	// Stop the clients, then read what they recorded.
	lat := latencies(pool.stop())
	rep.Received = int64(len(lat))
	if rep.Expected > 0 {
		rep.DeliveryRatio = round(float64(rep.Received)/float64(rep.Expected), 4)
	}
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS = summarize(lat).ms()
	rep.PublishP50MS, rep.PublishP99MS, _ = summarize(pubNS).ms()

	if idle.procOK {
		rep.ServerStats = true
		ip, cp, ep := idle.proc, connected.proc, end.proc
		rep.RSSBeforeKiB, rep.RSSConnectedKiB, rep.RSSEndKiB = ip.RSSKiB, cp.RSSKiB, ep.RSSKiB
		rep.RSSPerConnKiB = round(float64(cp.RSSKiB-ip.RSSKiB)/float64(rep.Connected), 2)
		rep.ServerThreads, rep.ServerFDs = cp.Threads, cp.FDs
		rep.ServerCPUConnectS = round((cp.CPU - ip.CPU).Seconds(), 2)
		rep.ServerCPUFanoutS = round((ep.CPU - cp.CPU).Seconds(), 2)
		rep.ServerCPUTotalS = round((ep.CPU - ip.CPU).Seconds(), 2)
		if rep.Received > 0 {
			rep.ServerCPUPerMsgUS = round(float64(ep.CPU-cp.CPU)/float64(time.Microsecond)/float64(rep.Received), 2)
		}
	}
	return rep, nil
}

// publishProbes sends cfg.Broadcasts probes to every community at
// cfg.Rate; the probes of one tick go out in parallel. It returns the
// successful publishes per community and the durations of the calls.
func publishProbes(ctx context.Context, tg *target, cfg runConfig, comms []string) ([]int, []int64, int, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	ok := make([]int, len(comms))
	var (
		mu     sync.Mutex
		durs   []int64
		errs   int
		sample error
	)
	workers := min(len(comms), 16)
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	for b := 0; b < cfg.Broadcasts; b++ {
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(b)*interval))); err != nil {
			return ok, durs, errs, err
		}
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					t0 := time.Now()
					status, err := tg.publish(ctx, hc, comms[k], cfg.Stream, probeMessage(cfg.Stream, comms[k], t0.UnixNano()))
					d := time.Since(t0)
					if err == nil && status/100 != 2 {
						err = fmt.Errorf("publish: HTTP %d", status)
					}
					mu.Lock()
					if err != nil {
						errs++
						sample = err
					} else {
						ok[k]++
						durs = append(durs, int64(d))
					}
					mu.Unlock()
				}
			}()
		}
		for k := range comms {
			next <- k
		}
		close(next)
		wg.Wait()
	}
	if errs > 0 && len(durs) == 0 {
		return ok, durs, errs, fmt.Errorf("every publish failed: %w", sample)
	}
	return ok, durs, errs, nil
}
