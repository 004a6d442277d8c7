package main

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"time"
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

func TestSoakValkeyRestartIsAStub(t *testing.T) {
	err := dispatch(context.Background(), []string{"soak", "--valkey-restart", "--duration", "1s"}, io.Discard, io.Discard)
	if err == nil || !errors.Is(err, errNotYet) {
		t.Fatalf("soak --valkey-restart = %v, want a not-yet error", err)
	}
}
