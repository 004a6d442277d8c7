package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	fs := flag.NewFlagSet("footfall-bench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serverFlags
	sf.register(fs, kindFootfall)
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
			rep, err := runTarget(ctx, &sf, k, bin, cfg, uint32(i*len(kinds)+len(results[k])), stderr)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			results[k] = append(results[k], rep)
			time.Sleep(time.Second) // let the kernel settle the closed sockets
		}
	}
	res := func(k string) runResult { return runResult{Median: medianReport(results[k]), Runs: results[k]} }
	if *compare {
		cr := newCompare(res(kindBaseline), res(kind))
		if *asJSON {
			return writeJSON(stdout, cr)
		}
		writeCompareText(stdout, cr)
		return nil
	}
	if *asJSON {
		return writeJSON(stdout, res(kind))
	}
	writeRunText(stdout, res(kind))
	return nil
}

// runTarget starts the server of kind, runs once and stops it.
func runTarget(ctx context.Context, sf *serverFlags, kind, bin string, cfg runConfig, tag uint32, progress io.Writer) (Report, error) {
	if err := sf.waitQuiet(ctx, progress); err != nil {
		return Report{}, err
	}
	tg, err := sf.start(ctx, kind, bin)
	if err != nil {
		return Report{}, err
	}
	defer tg.stop()
	time.Sleep(500 * time.Millisecond) // let the server reach its idle RSS
	return runOnce(ctx, tg, cfg, tag)
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
	perCommunity := make([]int, cfg.Communities)
	for i := range clients {
		k := i % cfg.Communities
		tok, err := tg.token(fmt.Sprintf("bench-%d-%d", tag, i), comms[k], roleFor(cfg.Stream), 6*time.Hour)
		if err != nil {
			return rep, err
		}
		clients[i] = newBenchClient(comms[k], cfg.Stream, tok)
		clients[i].local = tg.sourceIP(i, cfg.PerIP)
	}

	// Connect.
	idleMetrics, haveMetrics := tg.scrapeMetrics(ctx)
	idle, haveStats := tg.stats()
	cpu0 := clientCPU()
	machine0, _ := readMachineCPU()
	ctr := newCounters()
	sem := make(chan struct{}, cfg.InFlight)
	var wg sync.WaitGroup
	defer func() {
		for _, c := range clients {
			c.stop()
		}
		wg.Wait()
	}()
	start := time.Now()
	for i, c := range clients {
		if cfg.ConnectRate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / cfg.ConnectRate * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, tg, cfg.Transport, ctr, sem)
		}()
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
	rep.ConnectErrors = nil
	for k, v := range ctr.errs {
		if rep.ConnectErrors == nil {
			rep.ConnectErrors = map[string]int{}
		}
		rep.ConnectErrors[k] = v
	}
	ctr.mu.Unlock()
	rep.Connected = len(connectNS)
	rep.ConnectFailed = cfg.Clients - rep.Connected
	if rep.Connected > 0 {
		rep.ConnectTotalMS = round(ms(lastReady.Sub(start)), 1)
	}
	cs := summarize(connectNS)
	rep.ConnectP50MS, rep.ConnectP99MS = round(ms(cs.P50), 2), round(ms(cs.P99), 2)
	if rep.Connected == 0 {
		return rep, fmt.Errorf("no client connected: %v", rep.ConnectErrors)
	}
	for i, c := range clients {
		if c.isReady.Load() {
			perCommunity[i%cfg.Communities]++
		}
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return rep, err
	}
	connected, _ := tg.stats()
	if m, ok := tg.scrapeMetrics(ctx); ok && haveMetrics {
		rep.Metrics = true
		rep.Goroutines = m.Goroutines
		rep.GoroutinesPerConn = round(float64(m.Goroutines-idleMetrics.Goroutines)/float64(rep.Connected), 2)
		rep.HeapPerConnKiB = round(float64(m.HeapInuseKiB-idleMetrics.HeapInuseKiB)/float64(rep.Connected), 2)
	}

	// Broadcast.
	okPublished := make([]int, cfg.Communities)
	var pubNS []int64
	if cfg.Broadcasts > 0 {
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
	end, _ := tg.stats()
	if m, ok := tg.scrapeMetrics(ctx); ok && haveMetrics {
		rep.SocketFull = m.SocketFull - idleMetrics.SocketFull
	}
	clientUsed := clientCPU() - cpu0
	rep.ClientCPUS = round(clientUsed.Seconds(), 2)
	if machine1, ok := readMachineCPU(); ok && haveStats {
		rep.OtherCPUS = round(max(0, (machine1.busySince(machine0)-clientUsed-(end.CPU-idle.CPU)).Seconds()), 2)
	}
	rep.Disconnected = int(ctr.disconnected.Load())

	// Stop the clients, then read what they recorded.
	for _, c := range clients {
		c.stop()
	}
	wg.Wait()
	var lat []int64
	for _, c := range clients {
		lat = append(lat, c.lat...)
	}
	rep.Received = int64(len(lat))
	if rep.Expected > 0 {
		rep.DeliveryRatio = round(float64(rep.Received)/float64(rep.Expected), 4)
	}
	ls := summarize(lat)
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS = round(ms(ls.P50), 2), round(ms(ls.P99), 2), round(ms(ls.Max), 2)
	ps := summarize(pubNS)
	rep.PublishP50MS, rep.PublishP99MS = round(ms(ps.P50), 2), round(ms(ps.P99), 2)

	if haveStats {
		rep.ServerStats = true
		rep.RSSBeforeKiB, rep.RSSConnectedKiB, rep.RSSEndKiB = idle.RSSKiB, connected.RSSKiB, end.RSSKiB
		rep.RSSPerConnKiB = round(float64(connected.RSSKiB-idle.RSSKiB)/float64(rep.Connected), 2)
		rep.ServerThreads, rep.ServerFDs = connected.Threads, connected.FDs
		rep.ServerCPUConnectS = round((connected.CPU - idle.CPU).Seconds(), 2)
		rep.ServerCPUFanoutS = round((end.CPU - connected.CPU).Seconds(), 2)
		rep.ServerCPUTotalS = round((end.CPU - idle.CPU).Seconds(), 2)
		if rep.Received > 0 {
			rep.ServerCPUPerMsgUS = round(float64(end.CPU-connected.CPU)/float64(time.Microsecond)/float64(rep.Received), 2)
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
					req, err := tg.publishRequest(ctx, comms[k], cfg.Stream, probeMessage(cfg.Stream, comms[k], t0.UnixNano()))
					if err != nil {
						mu.Lock()
						errs++
						sample = err
						mu.Unlock()
						continue
					}
					resp, err := hc.Do(req)
					d := time.Since(t0)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode/100 != 2 {
							err = fmt.Errorf("publish: HTTP %d", resp.StatusCode)
						}
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
