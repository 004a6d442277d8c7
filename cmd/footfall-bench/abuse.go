package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api/auth"
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
	fs := flag.NewFlagSet("footfall-bench abuse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serverFlags
	sf.register(fs, kindFootfall)
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
		sf.serverEnv = append(sf.serverEnv, "FOOTFALL_IDLE_TIMEOUT="+cfg.IdleTimeout.String())
	}
	need := cfg.Legit + burstInFlight + cfg.Idle + cfg.Slow + int((cfg.Bogus+cfg.Resumes)*5) + 256
	bin, cleanup, err := sf.prepare(ctx, kind, need, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := sf.waitQuiet(ctx, stderr); err != nil {
		return err
	}
	tg, err := sf.start(ctx, kind, bin)
	if err != nil {
		return err
	}
	defer tg.stop()
	rep, err := abuseOnce(ctx, tg, cfg, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, rep)
	}
	writeAbuseText(stdout, rep)
	return nil
}

// abuseState is what the attacks share.
type abuseState struct {
	tg  *target
	cfg abuseConfig
	// community is the community of the attacks (not a legitimate one).
	community string

	mu       sync.Mutex
	outcomes map[string]*abuseOutcome
}

func (st *abuseState) count(attack, answer string, status int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.outcomes[attack]
	if o == nil {
		o = &abuseOutcome{Answers: map[string]int{}}
		st.outcomes[attack] = o
	}
	o.Attempts++
	o.Answers[answer]++
	if status >= 500 && status < 600 {
		o.FiveXX++
	}
}

// abuseAddr is the i-th attacking loopback address, apart from the
// legitimate clients' (127.1-199.x.y).
func abuseAddr(i int) net.IP {
	return net.IPv4(127, byte(200+i/62500%56), byte(i/250%250+1), byte(i%250+1))
}

func abuseOnce(ctx context.Context, tg *target, cfg abuseConfig, progress io.Writer) (abuseReport, error) {
	rep := abuseReport{Config: cfg, Attacks: map[string]abuseOutcome{}, ReturnedAfterS: -1}
	if !tg.loopback() {
		return rep, usagef("abuse: the target must listen on an IPv4 loopback address (attacks come from 127.x.y.z)")
	}
	comms := communityIDs(cfg.Communities, uint32(time.Now().Unix()))
	st := &abuseState{tg: tg, cfg: cfg, community: "abcdef00-0000-4000-8000-0000000ab05e", outcomes: map[string]*abuseOutcome{}}

	// The legitimate clients, and their probe latencies by phase: a probe
	// sent before the abuse began is quiet.
	var abuseStart atomic.Int64
	abuseStart.Store(1 << 62)
	var latMu sync.Mutex
	var quietLat, abuseLat []int64
	ctr := newCounters()
	clients := make([]*benchClient, cfg.Legit)
	sem := make(chan struct{}, 64)
	key := probeKey("visitors")
	for i := range clients {
		comm := comms[i%len(comms)]
		tok, err := tg.token(fmt.Sprintf("legit-%d", i), comm, auth.RoleMember, 2*time.Hour)
		if err != nil {
			return rep, err
		}
		c := newBenchClient(comm, "visitors", tok)
		c.local = tg.sourceIP(i, 20)
		c.onMsg = func(msg []byte, now int64) {
			if v, ok := extractInt(msg, key); ok {
				latMu.Lock()
				if v < abuseStart.Load() {
					quietLat = append(quietLat, now-v)
				} else {
					abuseLat = append(abuseLat, now-v)
				}
				latMu.Unlock()
			}
		}
		clients[i] = c
		sem <- struct{}{}
		go c.run(ctx, tg, "ws", ctr, sem)
	}
	defer func() {
		for _, c := range clients {
			c.stop()
			<-c.done
		}
	}()
	if err := waitReady(ctx, ctr, cfg.Legit, 60*time.Second); err != nil {
		return rep, fmt.Errorf("legitimate clients: %w", err)
	}
	rep.LegitReady = int(ctr.ready.Load())
	fmt.Fprintf(progress, "abuse: %d legitimate clients ready; quiet phase %s\n", rep.LegitReady, cfg.Quiet)
	_ = sleepCtx(ctx, 2*time.Second)
	rep.Before = abuseSnapshot(ctx, tg)

	// Probes run through both phases.
	probeCtx, stopProbes := context.WithCancel(ctx)
	var sentQuiet, sentAbuse, publishErrors atomic.Int64
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		hc := &http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer tick.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-tick.C:
			}
			for _, comm := range comms {
				ns := time.Now().UnixNano()
				// The run's ctx, not probeCtx: stopping the probes must not
				// cancel a publish the server may already have delivered
				// (it would then count as delivered, never sent).
				req, err := tg.publishRequest(ctx, comm, "visitors", probeMessage("visitors", comm, ns))
				if err != nil {
					continue
				}
				resp, err := hc.Do(req)
				if err != nil {
					publishErrors.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if ns < abuseStart.Load() {
					sentQuiet.Add(1)
				} else {
					sentAbuse.Add(1)
				}
			}
		}
	}()
	if err := sleepCtx(ctx, cfg.Quiet); err != nil {
		stopProbes()
		return rep, err
	}

	// The abuse.
	fmt.Fprintf(progress, "abuse: attacking for %s\n", cfg.Duration)
	abuseStart.Store(time.Now().UnixNano())
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
	latMu.Lock()
	rep.QuietP99MS = ms(time.Duration(percentileOf(quietLat, 99)))
	rep.AbuseP99MS = ms(time.Duration(percentileOf(abuseLat, 99)))
	perProbe := float64(cfg.Legit) / float64(cfg.Communities)
	if n := sentQuiet.Load(); n > 0 {
		rep.QuietDelivery = round(float64(len(quietLat))/(float64(n)*perProbe), 4)
	}
	if n := sentAbuse.Load(); n > 0 {
		rep.AbuseDelivery = round(float64(len(abuseLat))/(float64(n)*perProbe), 4)
	}
	latMu.Unlock()
	rep.LegitDropped = ctr.disconnected.Load()
	rep.PublishErrors = publishErrors.Load()
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
	var f abuseFigures
	if ps, ok := tg.stats(); ok {
		f.RSSKiB, f.Threads, f.FDs = ps.RSSKiB, ps.Threads, ps.FDs
	}
	if m, ok := tg.scrapeMetrics(ctx); ok {
		f.Goroutines, f.HeapInuseKiB, f.OpenStreams = m.Goroutines, m.HeapInuseKiB, m.OpenConns
	}
	return f
}

func maxFigures(a, b abuseFigures) abuseFigures {
	return abuseFigures{
		RSSKiB: max(a.RSSKiB, b.RSSKiB), Threads: max(a.Threads, b.Threads), FDs: max(a.FDs, b.FDs),
		Goroutines: max(a.Goroutines, b.Goroutines), HeapInuseKiB: max(a.HeapInuseKiB, b.HeapInuseKiB),
		OpenStreams: max(a.OpenStreams, b.OpenStreams),
	}
}

// dialFrom dials the target from a local address.
func (st *abuseState) dialFrom(ctx context.Context, local net.IP) (net.Conn, error) {
	u, _ := url.Parse(st.tg.base)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", u.Host)
}

// httpFrom is an HTTP client whose connections come from local, one
// request per connection.
func (st *abuseState) httpFrom(local net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// get sends one GET and counts its answer under attack.
func (st *abuseState) get(ctx context.Context, hc *http.Client, attack, path string, hdr http.Header) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.tg.base+path, nil)
	if err != nil {
		return
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			st.count(attack, "error", 0)
		}
		return
	}
	// An SSE stream: its first event is enough.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "data:") {
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	}
	resp.Body.Close()
	st.count(attack, strconv.Itoa(resp.StatusCode), resp.StatusCode)
}

// dialWS opens one WebSocket from local and counts how it ended: the
// refusal's status, or the close code the server sent.
func (st *abuseState) dialWS(ctx context.Context, attack string, local net.IP, hdr http.Header) {
	d := *wsDialer
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
	d.NetDialContext = nd.DialContext
	d.HandshakeTimeout = 10 * time.Second
	ws, resp, err := d.DialContext(ctx, st.tg.wsURL("visitors", st.community), hdr)
	if err != nil {
		switch {
		case resp != nil:
			st.count(attack, strconv.Itoa(resp.StatusCode), resp.StatusCode)
		case ctx.Err() == nil:
			st.count(attack, "error", 0)
		}
		return
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				st.count(attack, "close "+strconv.Itoa(ce.Code), 0)
			} else {
				st.count(attack, "101 admitted", 0) // a first message, then silence (a guest of a public community)
			}
			return
		}
	}
}

// burstInFlight bounds the burst attack's requests in flight.
const burstInFlight = 512

// bursts: every second, each attacking address opens --burst stream
// connections without a credential and sends --burst REST polls at once.
func (st *abuseState) bursts(ctx context.Context) {
	if st.cfg.BurstAddrs == 0 || st.cfg.Burst == 0 {
		return
	}
	count := "/api/v1/communities/" + st.community + "/visitors/count"
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sem := make(chan struct{}, burstInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		for a := range st.cfg.BurstAddrs {
			local := abuseAddr(a)
			hc := st.httpFrom(local)
			for range st.cfg.Burst {
				for _, kind := range []string{"ws", "rest"} {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					wg.Go(func() {
						defer func() { <-sem }()
						if kind == "ws" {
							st.dialWS(ctx, "burst: stream connections", local, nil)
						} else {
							st.get(ctx, hc, "burst: REST polls", count, nil)
						}
					})
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// lingerSet holds the connections an attack leaves open, and when the
// server closed each.
type lingerSet struct {
	mu          sync.Mutex
	conns       []net.Conn
	lastTx      []time.Time
	closedAfter []time.Duration // -1: still open
}

func (l *lingerSet) add(c net.Conn) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns = append(l.conns, c)
	l.lastTx = append(l.lastTx, time.Now())
	l.closedAfter = append(l.closedAfter, -1)
	return len(l.conns) - 1
}

func (l *lingerSet) sent(i int) {
	l.mu.Lock()
	l.lastTx[i] = time.Now()
	l.mu.Unlock()
}

// watch reads connection i until the server closes it.
func (l *lingerSet) watch(i int, r io.Reader) {
	_, _ = io.Copy(io.Discard, r)
	l.mu.Lock()
	l.closedAfter[i] = time.Since(l.lastTx[i])
	l.mu.Unlock()
}

func (l *lingerSet) allClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.Contains(l.closedAfter, -1)
}

// closed is how many were opened, how many the server closed, and the
// median time it took.
func (l *lingerSet) closed() (opened, closed int, medianS float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []float64
	for _, d := range l.closedAfter {
		if d >= 0 {
			ds = append(ds, d.Seconds())
		}
	}
	return len(l.conns), len(ds), round(median(ds), 2)
}

func (l *lingerSet) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// idleKeepalives opens --idle connections, sends one request on each and
// then nothing: the server's idle timeout must close them.
func (st *abuseState) idleKeepalives(ctx context.Context) *lingerSet {
	l := &lingerSet{}
	st.inParallel(ctx, st.cfg.Idle, func(i int) {
		c, err := st.dialFrom(ctx, abuseAddr(st.cfg.BurstAddrs+i/50))
		if err != nil {
			st.count("idle keep-alives", "error", 0)
			return
		}
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: footfall\r\n\r\n"); err != nil {
			c.Close()
			return
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			st.count("idle keep-alives", "error", 0)
			c.Close()
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		st.count("idle keep-alives", strconv.Itoa(resp.StatusCode), resp.StatusCode)
		idx := l.add(c)
		go l.watch(idx, br)
	})
	return l
}

// inParallel calls f(0..n-1), 32 at a time, until ctx ends.
func (st *abuseState) inParallel(ctx context.Context, n int, f func(i int)) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// slowloris opens --slowloris connections that send a WebSocket upgrade
// one header line every 3 s and never finish it: the server's header
// timeout must close them.
func (st *abuseState) slowloris(ctx context.Context) *lingerSet {
	l := &lingerSet{}
	type slowConn struct {
		c net.Conn
		i int
	}
	var mu sync.Mutex
	var open []slowConn
	st.inParallel(ctx, st.cfg.Slow, func(i int) {
		c, err := st.dialFrom(ctx, abuseAddr(st.cfg.BurstAddrs+st.cfg.Idle/50+1+i/50))
		if err != nil {
			st.count("slowloris upgrades", "error", 0)
			return
		}
		req := "GET /ws/communities/" + st.community + "/visitors/ HTTP/1.1\r\nHost: footfall\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			c.Close()
			return
		}
		st.count("slowloris upgrades", "started", 0)
		idx := l.add(c)
		go l.watch(idx, c)
		mu.Lock()
		open = append(open, slowConn{c, idx})
		mu.Unlock()
	})
	// A header line every 3 s while the attack lasts (and until the
	// server closes the connection).
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return l
		case <-tick.C:
		}
		for _, s := range open {
			if _, err := fmt.Fprintf(s.c, "X-Slow-%d: %d\r\n", n, n); err == nil {
				l.sent(s.i)
			}
		}
	}
}

// bogus sends --bogus bad credentials a second, each from the next
// attacking address: WebSocket with a bad signature, a malformed token and
// an expired one, SSE and REST with a bad token, the service API with a
// wrong key.
func (st *abuseState) bogus(ctx context.Context) {
	if st.cfg.Bogus <= 0 {
		return
	}
	wrong, _, _ := auth.Mint([]byte("not-the-secret-not-the-secret-xx"), auth.Claims{Subject: "forger", TTL: time.Hour,
		Communities: map[string]auth.Role{st.community: auth.RoleAdmin}}, time.Now())
	expired, _, _ := st.tg.tokenAt("expired", st.community, time.Now().Add(-2*time.Hour))
	kinds := []struct {
		name string
		run  func(ctx context.Context, local net.IP)
	}{
		{"bogus: WebSocket, bad signature", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, bad signature", local, http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: WebSocket, malformed", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, malformed", local, http.Header{"Authorization": {"Bearer not.a.jwt"}})
		}},
		{"bogus: WebSocket, expired", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, expired", local, http.Header{"Authorization": {"Bearer " + expired}})
		}},
		{"bogus: SSE, bad signature", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: SSE, bad signature", st.tg.ssePath("visitors", st.community), http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: REST, bad signature", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: REST, bad signature", "/api/v1/communities/"+st.community+"/visitors/count", http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: service API, wrong key", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: service API, wrong key", "/api/v1/communities/"+st.community+"/stats", http.Header{"Authorization": {"Bearer wrong-key-wrong-key-wrong-key-xx"}})
		}},
	}
	st.paced(ctx, st.cfg.Bogus, func(ctx context.Context, n int) {
		kinds[n%len(kinds)].run(ctx, abuseAddr(n%max(st.cfg.BurstAddrs, 1)))
	})
}

// resumes sends --resumes SSE resumes a second with a member's token and a
// Last-Event-ID that is unknown, ancient or over 128 bytes: each must get a
// fresh snapshot, not an error.
func (st *abuseState) resumes(ctx context.Context) {
	if st.cfg.Resumes <= 0 {
		return
	}
	tok, err := st.tg.token("resumer", st.community, auth.RoleMember, time.Hour)
	if err != nil {
		return
	}
	ids := []string{"0-1", "1-1", strings.Repeat("9", 200), "ffffffff-99999999"}
	st.paced(ctx, st.cfg.Resumes, func(ctx context.Context, n int) {
		st.get(ctx, st.httpFrom(abuseAddr(n%max(st.cfg.BurstAddrs, 1))), "long-gap resumes", st.tg.ssePath("visitors", st.community),
			http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-ID": {ids[n%len(ids)]}})
	})
}

// paced calls f rate times a second, each on its own goroutine, until ctx
// ends, and waits for them.
func (st *abuseState) paced(ctx context.Context, rate float64, f func(ctx context.Context, n int)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	every := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for n := 0; ; n++ {
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(n)*every))); err != nil {
			return
		}
		wg.Go(func() { f(ctx, n) })
	}
}

// tokenAt mints a member token issued at iat (an hour long): expired when
// iat is over an hour ago.
func (t *target) tokenAt(sub, community string, iat time.Time) (string, time.Time, error) {
	return auth.Mint(t.secret, auth.Claims{
		Subject: sub, Communities: map[string]auth.Role{community: auth.RoleMember}, TTL: time.Hour,
		Audience: t.aud, Issuer: t.iss,
	}, iat)
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
