package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// poll: throughput of authenticated REST count polls
// (GET /api/v1/communities/{id}/visitors/count with a Bearer token) against
// the same process's GET /healthz, with wrk when it is installed (or a Go
// load loop), 50 connections.

type pollConfig struct {
	Connections int
	Duration    time.Duration
	Tool        string // wrk | go
	WrkThreads  int
}

type pollPhase struct {
	Path         string  `json:"path"`
	RPS          float64 `json:"requests_per_s"`
	Non2xx       int64   `json:"non_2xx"`
	Errors       int64   `json:"errors"`
	ServerCPUS   float64 `json:"server_cpu_s"`
	CPUPerReqUS  float64 `json:"server_cpu_per_request_us"`
	LatencyP99MS float64 `json:"latency_p99_ms,omitempty"` // wrk only
}

type pollReport struct {
	Target      string    `json:"target"`
	Tool        string    `json:"tool"`
	Connections int       `json:"connections"`
	DurationS   float64   `json:"duration_s"`
	Runs        int       `json:"runs"`
	Healthz     pollPhase `json:"healthz"`
	Count       pollPhase `json:"count"`
	Ratio       float64   `json:"count_to_healthz"`
}

type pollResult = medianOf[pollReport]

func cmdPoll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, sf := newCommand("poll", stderr)
	var cfg pollConfig
	fs.IntVar(&cfg.Connections, "connections", 50, "concurrent keep-alive connections")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each of the two phases")
	fs.StringVar(&cfg.Tool, "tool", "auto", "wrk, go (a Go load loop) or auto (wrk if installed)")
	fs.IntVar(&cfg.WrkThreads, "wrk-threads", 1, "wrk -t")
	repeat := fs.Int("repeat", 1, "runs (fresh server each, the phase order alternates); the report gives the medians")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch cfg.Tool {
	case "auto":
		cfg.Tool = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			cfg.Tool = "wrk"
		}
	case "wrk", "go":
	default:
		return usagef("--tool must be wrk, go or auto")
	}
	if cfg.Connections < 1 || cfg.Duration <= 0 || *repeat < 1 {
		return usagef("--connections, --duration and --repeat must be positive")
	}
	kind := kindOf(sf.target)
	if kind == kindBaseline {
		return usagef("poll needs footfall (the baseline has no REST count)")
	}
	bin, cleanup, err := sf.prepare(ctx, kind, cfg.Connections, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	// Every poll comes from one loopback address: lift the per-address
	// request limit, which would otherwise answer most of them 429.
	sf = sf.withEnv("FOOTFALL_REQUEST_RATE_PER_IP=1e9")
	var runs []pollReport
	for i := 0; i < *repeat; i++ {
		fmt.Fprintf(stderr, "poll run %d/%d: %s, %d connections, 2 x %s...\n", i+1, *repeat, cfg.Tool, cfg.Connections, cfg.Duration)
		rep, err := onFresh(ctx, sf, kind, bin, stderr, func(tg *target) (pollReport, error) {
			return pollOnce(ctx, tg, cfg, uint32(0x200+i), i%2 == 1)
		})
		if err != nil {
			return err
		}
		runs = append(runs, rep)
	}
	return emit(stdout, *asJSON, pollResult{Median: medianPoll(runs), Runs: runs}, writePollText)
}

func pollOnce(ctx context.Context, tg *target, cfg pollConfig, tag uint32, countFirst bool) (pollReport, error) {
	rep := pollReport{Target: tg.kind, Tool: cfg.Tool, Connections: cfg.Connections, DurationS: cfg.Duration.Seconds(), Runs: 1}
	if tg.kind == kindURL {
		rep.Target = tg.base
	}
	community := communityIDs(1, tag)[0]
	tok, err := tg.token(fmt.Sprintf("poller-%d", tag), community, roleFor("visitors"), 6*time.Hour)
	if err != nil {
		return rep, err
	}
	countURL := tg.base + "/api/v1/communities/" + community + "/visitors/count"
	auth := "Bearer " + tok
	// One poll first: it subscribes the node to the community (the
	// steady state of a polled community).
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, countURL, nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rep, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("GET count: HTTP %d", resp.StatusCode)
	}
	phase := func(path, url, auth string) (pollPhase, error) {
		before, have := tg.stats()
		var p pollPhase
		var err error
		if cfg.Tool == "wrk" {
			p, err = runWrk(ctx, url, auth, cfg)
		} else {
			p, err = goLoad(ctx, url, auth, cfg)
		}
		p.Path = path
		if after, _ := tg.stats(); have && err == nil {
			p.ServerCPUS = round((after.CPU - before.CPU).Seconds(), 2)
			if p.RPS > 0 {
				p.CPUPerReqUS = round(float64(after.CPU-before.CPU)/float64(time.Microsecond)/(p.RPS*cfg.Duration.Seconds()), 2)
			}
		}
		return p, err
	}
	order := []string{"healthz", "count"}
	if countFirst {
		order = []string{"count", "healthz"}
	}
	for _, o := range order {
		if o == "healthz" {
			rep.Healthz, err = phase("/healthz", tg.base+"/healthz", "")
		} else {
			rep.Count, err = phase("/api/v1/communities/{id}/visitors/count", countURL, auth)
		}
		if err != nil {
			return rep, err
		}
		time.Sleep(time.Second)
	}
	rep.Ratio = ratio(rep.Count.RPS, rep.Healthz.RPS)
	return rep, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkP99     = regexp.MustCompile(`\n\s+99%\s+([0-9.]+)(us|ms|s)`)
)

func runWrk(ctx context.Context, url, auth string, cfg pollConfig) (pollPhase, error) {
	args := []string{"-t", strconv.Itoa(cfg.WrkThreads), "-c", strconv.Itoa(cfg.Connections),
		"-d", fmt.Sprintf("%ds", int(cfg.Duration.Seconds()+0.5)), "--latency"}
	if auth != "" {
		args = append(args, "-H", "Authorization: "+auth)
	}
	args = append(args, url)
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return pollPhase{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(out)
}

// parseWrk reads the figures of wrk's report.
func parseWrk(out []byte) (pollPhase, error) {
	var p pollPhase
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return p, fmt.Errorf("wrk: no Requests/sec in %q", out)
	}
	p.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		p.Non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkSockErr.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			p.Errors += n
		}
	}
	if m := wrkP99.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		switch string(m[2]) {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		p.LatencyP99MS = v
	}
	return p, nil
}

// goLoad is the fallback load loop: cfg.Connections goroutines, each with
// its own keep-alive connection, GET in a loop for cfg.Duration.
func goLoad(ctx context.Context, url, auth string, cfg pollConfig) (pollPhase, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Connections, MaxConnsPerHost: cfg.Connections, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var ok, non2xx, errs atomic.Int64
	lctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				req, _ := http.NewRequestWithContext(lctx, http.MethodGet, url, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := hc.Do(req)
				if err != nil {
					if lctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					ok.Add(1)
				} else {
					non2xx.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return pollPhase{}, ctx.Err()
	}
	el := time.Since(start).Seconds()
	p := pollPhase{RPS: round(float64(ok.Load()+non2xx.Load())/el, 1), Non2xx: non2xx.Load(), Errors: errs.Load()}
	if ok.Load() == 0 {
		return p, errors.New("no request succeeded")
	}
	return p, nil
}

func medianPoll(rs []pollReport) pollReport {
	if len(rs) == 0 {
		return pollReport{}
	}
	m := rs[0]
	m.Runs = len(rs)
	medianInto(&m, rs, func(r *pollReport) []any {
		return []any{&r.Healthz.RPS, &r.Count.RPS, &r.Healthz.ServerCPUS, &r.Count.ServerCPUS,
			&r.Healthz.CPUPerReqUS, &r.Count.CPUPerReqUS, &r.Healthz.LatencyP99MS, &r.Count.LatencyP99MS, &r.Ratio}
	})
	var n2h, n2c, eh, ec int64
	for _, r := range rs {
		n2h += r.Healthz.Non2xx
		n2c += r.Count.Non2xx
		eh += r.Healthz.Errors
		ec += r.Count.Errors
	}
	m.Healthz.Non2xx, m.Count.Non2xx, m.Healthz.Errors, m.Count.Errors = n2h, n2c, eh, ec
	return m
}

func writePollText(w io.Writer, res pollResult) {
	m := res.Median
	writeTitle(w, m.Runs, " (errors summed)", "footfall-bench poll: target=%s tool=%s connections=%d duration=%gs per phase", m.Target, m.Tool, m.Connections, m.DurationS)
	for _, p := range []pollPhase{m.Healthz, m.Count} {
		fmt.Fprintf(w, "  %-42s %9.0f req/s  p99 %.2f ms  server CPU %.1f µs/req  non-2xx %d  errors %d\n",
			p.Path, p.RPS, p.LatencyP99MS, p.CPUPerReqUS, p.Non2xx, p.Errors)
	}
	fmt.Fprintf(w, "  count / healthz = %.3f\n", m.Ratio)
	if m.Runs > 1 {
		for i, r := range res.Runs {
			fmt.Fprintf(w, "  run %d: healthz %.0f/s, count %.0f/s, ratio %.3f\n", i+1, r.Healthz.RPS, r.Count.RPS, r.Ratio)
		}
	}
	writeTargets(w, []targetCheck{{What: "REST count polls vs /healthz", Target: ">= 0.75", Measured: m.Ratio, Met: m.Ratio >= 0.75 && m.Count.Non2xx == 0}})
}
