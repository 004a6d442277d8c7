package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// The runs of churn --mode reconnect: the reconnecting visitors, and the
// paced and load phases measured by the watchers.
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
	errs   errCounts
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
	l.errs.add(err)
	l.mu.Unlock()
}

// within is how many returns got their first message by end.
func (l *joinLog) within(end time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.at {
		if at <= end.UnixNano() {
			n++
		}
	}
	return n
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

// reconnectRun is one run of churn --mode reconnect: one community, its
// watchers, and its visitors, connected.
type reconnectRun struct {
	tg        *target
	cfg       reconnectConfig
	community string
	watchers  []*watcher
	visitors  []*rvisitor
	vctr      *counters
	sem       chan struct{}
	base      int // the count every watcher holds with every visitor present
}

func reconnectOnce(ctx context.Context, tg *target, cfg reconnectConfig, tag uint32, progress io.Writer) (reconnectReport, error) {
	rep := reconnectReport{
		Target: tg.kind, GraceMS: ms(cfg.Grace), Transport: cfg.Transport, Visitors: cfg.Visitors, Watchers: cfg.Watchers,
		WithinMS: ms(cfg.Within), HoldMS: ms(cfg.Hold), Runs: 1,
	}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	r := &reconnectRun{tg: tg, cfg: cfg, community: communityIDs(1, tag)[0], vctr: newCounters(), sem: make(chan struct{}, cfg.InFlight)}
	rng := rand.New(rand.NewPCG(uint64(tag), 12))
	pool := newPool(ctx)
	defer func() {
		pool.stop()
		var vw sync.WaitGroup
		for _, v := range r.visitors {
			vw.Go(v.drop)
		}
		vw.Wait()
	}()
	var (
		wctr *counters
		err  error
	)
	r.watchers, wctr, err = startWatchers(ctx, pool, tg, r.community, "rwatcher", tag, cfg.Watchers, cfg.PerIP, true)
	if err != nil {
		return rep, err
	}
	if err := r.connectVisitors(ctx, tag, progress); err != nil {
		return rep, err
	}
	rep.BaseCount = r.base
	s0, _ := tg.stats()
	cpu := startCPUWatch()

	errs := errCounts{}
	if cfg.Paced > 0 {
		p, log := r.pacedPhase(ctx, rng, progress)
		rep.Phases = append(rep.Phases, p)
		for k, n := range log.errs {
			errs[k] += n
		}
	}
	if cfg.Duration > 0 {
		p, log := r.loadPhase(ctx, progress)
		rep.Phases = append(rep.Phases, p)
		for k, n := range log.errs {
			errs[k] += n
		}
	}
	s1, _ := tg.stats()
	rep.OtherCPUS, _ = cpu.otherCPU(s1.CPU - s0.CPU)
	rep.Disconnected = int(r.vctr.disconnected.Load() + wctr.disconnected.Load())
	if len(errs) > 0 {
		rep.ConnectErrs = errs
	}
	return rep, nil
}

// connectVisitors connects every visitor (each its own user and, from
// after the watchers' addresses, its own share of source addresses) and
// waits for the count the watchers agree on.
func (r *reconnectRun) connectVisitors(ctx context.Context, tag uint32, progress io.Writer) error {
	cfg := r.cfg
	r.visitors = make([]*rvisitor, cfg.Visitors)
	firstIP := (cfg.Watchers + cfg.PerIP) / max(cfg.PerIP, 1) * max(cfg.PerIP, 1)
	for i := range r.visitors {
		tok, err := r.tg.token(fmt.Sprintf("rvisitor-%d-%d", tag, i), r.community, roleFor("visitors"), 6*time.Hour)
		if err != nil {
			return err
		}
		r.visitors[i] = &rvisitor{tok: tok, local: r.tg.sourceIP(firstIP+i, cfg.PerIP), rng: rand.New(rand.NewPCG(uint64(tag), uint64(i)))}
	}
	var connectErr error
	var cmu sync.Mutex
	var cw sync.WaitGroup
	for _, v := range r.visitors {
		cw.Go(func() {
			if _, err := v.connect(ctx, r.tg, cfg, r.community, r.vctr, r.sem); err != nil {
				cmu.Lock()
				connectErr = err
				cmu.Unlock()
			}
		})
	}
	cw.Wait()
	if connectErr != nil {
		return fmt.Errorf("visitors: %w", connectErr)
	}
	// The community is new: every watcher should come to hold visitors +
	// watchers. On a starved machine the last coalesced counts can pause
	// longer than waitAgree's half second, so wait for that count first,
	// and take whatever the watchers agree on only if it never comes.
	want := cfg.Visitors + cfg.Watchers
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !allHold(r.watchers, want) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	base, err := waitAgree(ctx, r.watchers, 30*time.Second)
	if err != nil {
		return err
	}
	if base != want {
		fmt.Fprintf(progress, "  watchers agree on %d, not %d visitors + watchers (other visitors in the community?)\n", base, want)
	}
	r.base = base
	return nil
}

// pacedPhase: cfg.Paced reconnects at cfg.PacedRate, each by another
// visitor.
func (r *reconnectRun) pacedPhase(ctx context.Context, rng *rand.Rand, progress io.Writer) (reconnectPhase, *joinLog) {
	cfg := r.cfg
	fmt.Fprintf(progress, "  paced: %d reconnects at %g/s\n", cfg.Paced, cfg.PacedRate)
	perm := rng.Perm(len(r.visitors))[:cfg.Paced]
	log := &joinLog{}
	t0 := time.Now()
	var pw sync.WaitGroup
	gap := time.Duration(float64(time.Second) / cfg.PacedRate)
	for k, vi := range perm {
		if k > 0 && sleepCtx(ctx, gap) != nil {
			break
		}
		pw.Go(func() { r.visitors[vi].reconnect(ctx, r.tg, cfg, r.community, r.vctr, nil, log) })
	}
	pw.Wait()
	return finishPhase(ctx, "paced", r.watchers, log, r.base, t0, time.Now(), cfg.Tail), log
}

// loadPhase: every visitor reconnects over and over for cfg.Duration.
func (r *reconnectRun) loadPhase(ctx context.Context, progress io.Writer) (reconnectPhase, *joinLog) {
	cfg := r.cfg
	fmt.Fprintf(progress, "  load: every visitor reconnects for %s\n", cfg.Duration)
	log := &joinLog{}
	t0 := time.Now()
	cpu0, ok0 := r.tg.stats()
	cc0 := clientCPU()
	end := t0.Add(cfg.Duration)
	var lw sync.WaitGroup
	for _, v := range r.visitors {
		lw.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				if cfg.Hold > 0 && sleepCtx(ctx, time.Duration(v.rng.Int64N(int64(2*cfg.Hold)))) != nil {
					return
				}
				if !time.Now().Before(end) {
					return
				}
				// A return started before the end completes after it.
				v.reconnect(ctx, r.tg, cfg, r.community, r.vctr, r.sem, log)
				if v.cur == nil { // failed: try again later
					if sleepCtx(ctx, 100*time.Millisecond) != nil {
						return
					}
					if _, err := v.connect(ctx, r.tg, cfg, r.community, r.vctr, r.sem); err != nil {
						log.fail(err)
					}
				}
			}
		})
	}
	_ = sleepCtx(ctx, time.Until(end))
	cpu1, ok1 := r.tg.stats()
	cc1 := clientCPU()
	lw.Wait()
	p := finishPhase(ctx, "load", r.watchers, log, r.base, t0, end, cfg.Tail)
	// The CPU of the phase itself, not of the returns after its end.
	p.ClientBusy = round((cc1-cc0).Seconds()/cfg.Duration.Seconds(), 3)
	if ok0 && ok1 {
		p.ServerStats = true
		p.ServerCPUS = round((cpu1.CPU - cpu0.CPU).Seconds(), 3)
		p.ServerBusy = round(p.ServerCPUS/cfg.Duration.Seconds(), 3)
		inWall := log.within(end)
		if inWall > 0 {
			p.ServerCPUPerJoinUS = round(p.ServerCPUS*1e6/float64(inWall), 1)
		}
		if p.ServerCPUS > 0 {
			p.JoinsPerServerCPUS = round(float64(inWall)/p.ServerCPUS, 0)
		}
	}
	return p, log
}

// finishPhase waits out the tail after the last return and measures the
// phase [t0, end].
func finishPhase(ctx context.Context, phase string, ws []*watcher, log *joinLog, base int, t0, end time.Time, tail time.Duration) reconnectPhase {
	_ = sleepCtx(ctx, tail)
	p := reconnectPhase{Phase: phase, WallS: round(end.Sub(t0).Seconds(), 3)}
	inWall := log.within(end)
	log.mu.Lock()
	p.Reconnects = len(log.at)
	p.Failed = log.failed
	p.SetupP50MS, p.SetupP99MS, _ = summarize(log.setup).ms()
	log.mu.Unlock()
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
