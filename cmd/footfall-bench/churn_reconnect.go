package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
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

func cmdChurnReconnect(ctx context.Context, sf *serverFlags, cfg reconnectConfig, repeat int, asJSON bool, stdout, stderr io.Writer) error {
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
			run := sf
			if kind == kindFootfall {
				run = sf.withEnv("FOOTFALL_LEAVE_GRACE=" + g.String())
			}
			c := cfg
			c.Grace = g
			rep, err := onFresh(ctx, run, kind, bin, stderr, func(tg *target) (reconnectReport, error) {
				return reconnectOnce(ctx, tg, c, uint32(0x200+i*len(cfg.Graces)+gi), stderr)
			})
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
	return emit(stdout, asJSON, res, writeReconnectText)
}
