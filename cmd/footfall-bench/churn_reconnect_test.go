package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestReconnectConfigValidate(t *testing.T) {
	ok := reconnectConfig{
		Visitors: 10, Watchers: 2, Transport: "ws", Graces: []time.Duration{5 * time.Second, 0},
		Within: time.Second, Paced: 5, PacedRate: 2, Duration: time.Second, InFlight: 4,
	}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]func(*reconnectConfig){
		"no visitors":           func(c *reconnectConfig) { c.Visitors = 0 },
		"transport":             func(c *reconnectConfig) { c.Transport = "tcp" },
		"no grace":              func(c *reconnectConfig) { c.Graces = nil },
		"negative grace":        func(c *reconnectConfig) { c.Graces = []time.Duration{-time.Second} },
		"away as long as grace": func(c *reconnectConfig) { c.Within = 5 * time.Second },
		"no away":               func(c *reconnectConfig) { c.Within = 0 },
		"paced > visitors":      func(c *reconnectConfig) { c.Paced = 11 },
		"paced rate":            func(c *reconnectConfig) { c.PacedRate = 0 },
		"nothing to do":         func(c *reconnectConfig) { c.Paced, c.Duration = 0, 0 },
		"in flight":             func(c *reconnectConfig) { c.InFlight = 0 },
	} {
		c := ok
		bad(&c)
		if c.validate() == nil {
			t.Errorf("%s: %+v accepted", name, c)
		}
	}
	// The grace off takes any away time.
	off := ok
	off.Graces, off.Within = []time.Duration{0}, time.Minute
	if err := off.validate(); err != nil {
		t.Errorf("grace off: %v", err)
	}
}

func TestParseGraces(t *testing.T) {
	gs, err := parseGraces(" 5s, 0s ,250ms")
	if err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{5 * time.Second, 0, 250 * time.Millisecond}; len(gs) != 3 || gs[0] != want[0] || gs[1] != want[1] || gs[2] != want[2] {
		t.Fatalf("got %v, want %v", gs, want)
	}
	if _, err := parseGraces("5s,soon"); err == nil {
		t.Fatal("soon accepted")
	}
}

func TestChurnReconnectFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"churn", "--mode", "sideways"},
		{"churn", "--mode", "reconnect", "--leave-grace", "1s", "--reconnect-within", "2s"},
		{"churn", "--mode", "reconnect", "--visitors", "5", "--paced-reconnects", "6"},
		{"churn", "--mode", "reconnect", "--target", "baseline"},
		{"churn", "--mode", "reconnect", "--target", "http://127.0.0.1:1", "--api-key", "k", "--secret", "s", "--leave-grace", "5s,0s"},
	} {
		err := dispatch(context.Background(), args, &out, &errOut)
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v; want a usage error", args, err)
		}
	}
}

func TestMedianReconnectAndRatios(t *testing.T) {
	run := func(jps, cpu, msgs float64) reconnectReport {
		return reconnectReport{Watchers: 2, Runs: 1, Phases: []reconnectPhase{
			{Phase: "paced", Reconnects: 10, MsgsPerReconnect: msgs},
			{Phase: "load", Reconnects: int(jps * 10), JoinsPerS: jps, ServerStats: true, ServerCPUPerJoinUS: cpu, JoinsPerServerCPUS: 1e6 / cpu, MsgsPerReconnect: msgs / 10},
		}}
	}
	on := medianReconnect([]reconnectReport{run(900, 300, 0), run(1000, 250, 0), run(1100, 200, 0)})
	off := medianReconnect([]reconnectReport{run(700, 400, 2), run(500, 500, 1.5), run(600, 450, 1.8)})
	if on.Runs != 3 || on.Phases[1].JoinsPerS != 1000 || on.Phases[1].ServerCPUPerJoinUS != 250 || off.Phases[0].MsgsPerReconnect != 1.8 {
		t.Fatalf("medians: on %+v, off %+v", on, off)
	}
	sets := []reconnectSet{{GraceMS: 5000, Median: on}, {GraceMS: 0, Median: off}}
	r := reconnectRatios(sets)
	if r["load_joins_per_s"] != ratio(1000, 600) || r["load_server_cpu_per_join"] != ratio(250, 450) {
		t.Fatalf("ratios %v", r)
	}
	if _, ok := r["paced_joins_per_s"]; ok {
		t.Errorf("paced phase has no server figures, yet a joins/s ratio: %v", r)
	}
	var out bytes.Buffer
	writeReconnectText(&out, reconnectResult{Sets: sets, Ratios: r})
	for _, want := range []string{"5s     load", "0s     paced", "grace 5s, load: messages per reconnect", "MET", "load_joins_per_s=1.667"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestChurnReconnect runs `churn --mode reconnect` for real, briefly,
// against footfall built from this module: a few visitors reload (over
// WebSocket and SSE at random) well within a 1 s grace, and then with the
// grace off. Behaviour, not timing: with the grace on the watchers hear
// nothing, with it off they hear every paced reconnect, and both end on
// the count they started with.
func TestChurnReconnect(t *testing.T) {
	var res reconnectResult
	runJSON(t, &res, "churn", "--mode", "reconnect",
		"--visitors", "8", "--watchers", "3", "--visitor-transport", "mixed",
		"--leave-grace", "1s,0s", "--reconnect-within", "250ms", "--tail", "1500ms",
		"--paced-reconnects", "4", "--paced-rate", "4", "--duration", "1s")
	if len(res.Sets) != 2 || res.Sets[0].GraceMS != 1000 || res.Sets[1].GraceMS != 0 {
		t.Fatalf("graces %+v; want 1s then 0s", res.Sets)
	}
	for _, s := range res.Sets {
		m := s.Median
		if m.BaseCount != 8+3 || len(m.Phases) != 2 || m.Disconnected != 0 || len(m.ConnectErrs) != 0 {
			t.Fatalf("grace %v ms: base count %d (want 11), %d phases, %d disconnected, errors %v", s.GraceMS, m.BaseCount, len(m.Phases), m.Disconnected, m.ConnectErrs)
		}
		for _, p := range m.Phases {
			if p.Reconnects == 0 || p.Failed != 0 || p.FinalOK != 3 {
				t.Errorf("grace %v ms, %s: %d reconnects, %d failed, %d/3 watchers back on 11", s.GraceMS, p.Phase, p.Reconnects, p.Failed, p.FinalOK)
			}
			if s.GraceMS > 0 && p.WatcherMsgs != 0 {
				t.Errorf("grace on, %s: watchers got %d messages for %d reconnects; want none", p.Phase, p.WatcherMsgs, p.Reconnects)
			}
		}
		if paced := m.Phases[0]; s.GraceMS == 0 && paced.MsgsPerReconnect < 0.5 {
			// Each paced reconnect comes after a quiet spell, so its
			// visitor_left goes out at once: at least one message each.
			t.Errorf("grace off, paced: %.3f messages per reconnect per watcher; want about 1 to 2", paced.MsgsPerReconnect)
		}
		if load := m.Phases[1]; load.Phase != "load" || !load.ServerStats || load.ServerCPUPerJoinUS <= 0 {
			t.Errorf("grace %v ms, load phase without server figures: %+v", s.GraceMS, load)
		}
	}
}
