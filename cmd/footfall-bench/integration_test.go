package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestRunAgainstBaseline runs the whole `run` path (connect, publish,
// receive, report) against the baseline server in-process.
func TestRunAgainstBaseline(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			b := newBaseline()
			srv := httptest.NewServer(b.handler())
			defer srv.Close()
			defer b.close() // before srv.Close: ends the SSE streams
			tg := &target{kind: kindBaseline, base: srv.URL}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rep, err := runOnce(ctx, tg, runConfig{
				Transport: transport, Stream: "dashboard", Clients: 20, Communities: 2, Broadcasts: 20,
				Rate: 200, ConnectRate: 0, InFlight: 8, Settle: 10 * time.Millisecond, Drain: 5 * time.Second,
			}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Connected != 20 || rep.Expected != 400 || rep.Received != 400 || rep.DeliveryRatio != 1 {
				t.Fatalf("connected %d, delivery %d/%d = %g; errors %v", rep.Connected, rep.Received, rep.Expected, rep.DeliveryRatio, rep.ConnectErrors)
			}
			if rep.LatencyP50MS <= 0 || rep.LatencyP99MS < rep.LatencyP50MS || rep.LatencyMaxMS < rep.LatencyP99MS {
				t.Fatalf("latencies p50 %g p99 %g max %g", rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencyMaxMS)
			}
			if rep.ServerStats {
				t.Fatal("server stats without a pid")
			}
		})
	}
}

func TestRunConfigValidate(t *testing.T) {
	ok := runConfig{Transport: "ws", Stream: "visitors", Clients: 10, Communities: 2, Broadcasts: 1, Rate: 1, InFlight: 1}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*runConfig){
		func(c *runConfig) { c.Transport = "tcp" },
		func(c *runConfig) { c.Stream = "x" },
		func(c *runConfig) { c.Clients = 0 },
		func(c *runConfig) { c.Communities = 11 },
		func(c *runConfig) { c.Rate = 0 },
	} {
		c := ok
		bad(&c)
		if c.validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestSoakValkeyRestart runs `soak --valkey-restart` for real, briefly:
// two footfall nodes (built from this module) on a redis-server the
// harness starts, a small pool and the whole mix, and one Valkey restart
// halfway. The clients must come through it: no unexpected disconnect,
// /readyz 503 and back on both nodes, every count converged again.
func TestSoakValkeyRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts footfall")
	}
	server := valkeytest.Binary(t) // skips without redis-server, unless FOOTFALL_TEST_REQUIRE_VALKEY=1
	var rep soakReport
	runJSON(t, &rep, "soak",
		"--valkey-restart", "--valkey-server", server, "--nodes", "2", "--valkey-down", "1s",
		"--duration", "8s", "--sample-every", "2s", "--clients", "40", "--communities", "4",
		"--rate", "5", "--reconnect-rate", "2", "--churn-every", "1s", "--churn-size", "10")
	if !rep.Valkey || rep.Nodes != 2 || len(rep.Outages) != 1 {
		t.Fatalf("report: valkey %v, nodes %d, restarts %d; want true, 2, 1", rep.Valkey, rep.Nodes, len(rep.Outages))
	}
	o := rep.Outages[0]
	if rep.Disconnected != 0 || rep.ConnectFailed != 0 || o.Disconnects != 0 {
		t.Errorf("unexpected disconnects %d (during the outage %d), connect failures %d %v; want none", rep.Disconnected, o.Disconnects, rep.ConnectFailed, rep.ConnectErrors)
	}
	if o.LeftWhileDown == 0 || o.ConvergedAfterRestartS < 0 {
		t.Errorf("restart: %d visitors left while down, converged after %v s; want some leaving and convergence", o.LeftWhileDown, o.ConvergedAfterRestartS)
	}
	for i := range 2 {
		if o.Ready503AfterKillS[i] < 0 || o.Ready200AfterRestartS[i] < 0 {
			t.Errorf("node %d: /readyz 503 after %v s, 200 after %v s; want both seen", i+1, o.Ready503AfterKillS[i], o.Ready200AfterRestartS[i])
		}
	}
	if !rep.RestartsSurvived {
		t.Errorf("restarts_survived false: %+v", o)
	}
	if rep.PublishErrors != 0 || rep.ChurnErrors != 0 {
		t.Errorf("publish errors %d, churn errors %d; want 0 (the mix is held still during the outage)", rep.PublishErrors, rep.ChurnErrors)
	}
	if len(rep.BusMetrics) != 2 {
		t.Fatalf("bus metrics of %d nodes; want 2", len(rep.BusMetrics))
	}
	for i, m := range rep.BusMetrics {
		if m["footfall_bus_reconnects_total"] < 1 || m["footfall_bus_server_restarts_total"] < 1 {
			t.Errorf("node %d bus metrics %v; want a reconnect and a server restart", i+1, m)
		}
	}
}

// runJSON runs a subcommand for real (it builds and starts footfall from
// this module: skipped with -short) with --json, decodes its report into
// v and logs its progress and report.
func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts footfall")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	argv := append([]string{args[0], "--json"}, args[1:]...)
	if err := dispatch(ctx, argv, &out, &progress); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, progress.String())
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		t.Fatalf("%s --json: %v\n%s", args[0], err, out.String())
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), out.String())
}
