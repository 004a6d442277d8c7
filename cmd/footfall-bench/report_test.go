package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func sampleReport(target string, p99, rss float64) Report {
	return Report{
		Target: target, Transport: "ws", Stream: "dashboard", Clients: 5000, Communities: 1, Broadcasts: 50,
		Rate: 5, ConnectRate: 1000, Runs: 1, Connected: 5000, Expected: 250000, Received: 250000, DeliveryRatio: 1,
		LatencyP50MS: p99 / 2, LatencyP99MS: p99, LatencyMaxMS: p99 * 1.2, ServerStats: true,
		RSSBeforeKiB: 10240, RSSConnectedKiB: 10240 + int64(rss*5000), RSSEndKiB: 10240 + int64(rss*5000) + 100,
		RSSPerConnKiB: rss, ServerCPUConnectS: 1, ServerCPUFanoutS: 2, ServerCPUTotalS: 3, ClientCPUS: 4,
	}
}

func TestReportJSONFields(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, runResult{Median: sampleReport("footfall", 80, 9.5), Runs: []Report{sampleReport("footfall", 80, 9.5)}}); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Median map[string]any   `json:"median"`
		Runs   []map[string]any `json:"runs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.Bytes())
	}
	med := m.Median
	if len(m.Runs) != 1 {
		t.Errorf("runs = %d", len(m.Runs))
	}
	for _, k := range []string{"target", "transport", "stream", "clients", "communities", "broadcasts", "rate_per_s",
		"connect_rate_per_s", "connected", "connect_total_ms", "connect_p50_ms", "connect_p99_ms", "expected", "received",
		"delivery_ratio", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "rss_before_kib", "rss_connected_kib",
		"rss_per_conn_kib", "server_cpu_s", "server_cpu_connect_s", "server_cpu_broadcast_s", "client_cpu_s"} {
		if _, ok := med[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
	if med["latency_p99_ms"] != 80.0 || med["delivery_ratio"] != 1.0 {
		t.Errorf("values: p99 %v ratio %v", med["latency_p99_ms"], med["delivery_ratio"])
	}
}

func TestMedianReport(t *testing.T) {
	rs := []Report{sampleReport("footfall", 90, 10), sampleReport("footfall", 70, 12), sampleReport("footfall", 200, 11)}
	rs[2].ConnectErrors = map[string]int{"boom": 2}
	m := medianReport(rs)
	if m.Runs != 3 || m.LatencyP99MS != 90 || m.RSSPerConnKiB != 11 || m.Clients != 5000 {
		t.Fatalf("median = runs %d p99 %g rss %g clients %d", m.Runs, m.LatencyP99MS, m.RSSPerConnKiB, m.Clients)
	}
	if m.ConnectErrors["boom"] != 2 {
		t.Fatalf("connect errors not summed: %v", m.ConnectErrors)
	}
	if one := medianReport(rs[:1]); one.LatencyP99MS != 90 || one.Runs != 1 {
		t.Fatalf("median of one = %+v", one)
	}
}

func TestRunText(t *testing.T) {
	var buf bytes.Buffer
	writeRunText(&buf, runResult{Median: sampleReport("footfall", 80, 14)})
	out := buf.String()
	for _, want := range []string{
		"target=footfall transport=ws stream=dashboard clients=5000",
		"250000/250000 = 1.0000",
		"latency p99", "80.0 ms",
		"RSS per connection", "14.0 KiB",
		"RSS per ws connection", "MISSED",
		"sub-100 ms delivery", "MET",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	noStats := sampleReport("http://x", 80, 0)
	noStats.ServerStats = false
	buf.Reset()
	writeRunText(&buf, runResult{Median: noStats})
	if !strings.Contains(buf.String(), "n/a") {
		t.Errorf("no n/a without server stats:\n%s", buf.String())
	}
}

func TestCompare(t *testing.T) {
	base := runResult{Median: sampleReport("baseline", 100, 7)}
	ff := runResult{Median: sampleReport("footfall", 120, 14)}
	cr := newCompare(base, ff)
	if cr.Ratios["latency_p99"] != 1.2 || cr.Ratios["rss_per_conn"] != 2 {
		t.Fatalf("ratios = %v", cr.Ratios)
	}
	met := map[string]bool{}
	for _, tc := range cr.Targets {
		met[tc.What] = tc.Met
	}
	if !met["broadcast p99 vs bare baseline"] || met["RSS per ws connection"] || met["seed promise: sub-100 ms delivery"] {
		t.Fatalf("targets = %+v", cr.Targets)
	}
	var buf bytes.Buffer
	writeCompareText(&buf, cr)
	out := buf.String()
	for _, want := range []string{"baseline", "footfall", "1.20x", "2.00x", "MISSED"} {
		if !strings.Contains(out, want) {
			t.Errorf("compare text lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := writeJSON(&buf, cr); err != nil {
		t.Fatal(err)
	}
	var back compareResult
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Footfall.Median.LatencyP99MS != 120 || back.Ratios["latency_p99"] != 1.2 {
		t.Fatalf("compare JSON round trip: %v %+v", err, back.Ratios)
	}
}

func TestChurnAndSoakText(t *testing.T) {
	var buf bytes.Buffer
	writeChurnText(&buf, churnResult{Median: churnReport{Target: "footfall", Join: "api", Visitors: 1000, Watchers: 50, Runs: 1,
		Phases: []churnPhase{{Phase: "join", Visitors: 1000, Watchers: 50, Converged: 50, StartCount: 50, FinalCount: 1050, ConvergeAfterLastMS: 120, MaxMsgsPerSecond: 3}}}})
	if out := buf.String(); !strings.Contains(out, "50 -> 1050") || !strings.Contains(out, "MET") {
		t.Errorf("churn text:\n%s", out)
	}
	rep := soakReport{Target: "footfall", Clients: 100, ServerStats: true, Samples: []soakSample{
		{Label: "idle", RSSKiB: 10000, FDs: 10, Threads: 7},
		{Label: "start", RSSKiB: 20000, FDs: 110, Threads: 8},
		{Label: "end", RSSKiB: 21000, FDs: 112, Threads: 9},
		{Label: "closed", RSSKiB: 15000, FDs: 11, Threads: 9},
	}}
	judgeSoak(&rep)
	if !rep.Flat || rep.FDsDelta != 2 || rep.RSSGrowth != 1.05 {
		t.Fatalf("judgeSoak = %+v", rep)
	}
	rep.Samples[2].FDs = 200
	judgeSoak(&rep)
	if rep.Flat {
		t.Fatal("flat with 90 leaked descriptors")
	}
	buf.Reset()
	writeSoakText(&buf, rep)
	if !strings.Contains(buf.String(), "NOT FLAT") {
		t.Errorf("soak text:\n%s", buf.String())
	}
}

func TestSoakRestartJudgeAndText(t *testing.T) {
	rep := soakReport{Target: "footfall", Nodes: 2, Valkey: true, Clients: 100, ServerStats: true,
		Outages: []soakOutage{{AtS: 60, DownS: 3, Ready503AfterKillS: []float64{0.1, 0.2}, Ready200AfterRestartS: []float64{0.3, 0.3},
			LeftWhileDown: 10, Watched: 90, ConvergedBeforeKill: true, ConvergedAfterRestartS: 0.8}},
		BusMetrics: []map[string]float64{{"footfall_bus_reconnects_total": 1}},
	}
	judgeSoak(&rep)
	if !rep.RestartsSurvived {
		t.Fatalf("judgeSoak: restarts not survived: %+v", rep)
	}
	var buf bytes.Buffer
	writeSoakText(&buf, rep)
	for _, want := range []string{"2 node(s)", "converged 0.80 s after it", "reconnects_total 1", ": SURVIVED"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("soak text lacks %q:\n%s", want, buf.String())
		}
	}
	rep.Outages[0].ConvergedAfterRestartS = -1
	judgeSoak(&rep)
	if rep.RestartsSurvived {
		t.Fatal("survived a restart whose counts never converged")
	}
	rep.Outages[0].ConvergedAfterRestartS, rep.Disconnected = 0.8, 1
	judgeSoak(&rep)
	if rep.RestartsSurvived {
		t.Fatal("survived with an unexpected disconnect")
	}
}

func TestWriteTitle(t *testing.T) {
	var buf bytes.Buffer
	writeTitle(&buf, 1, " (errors summed)", "footfall-bench poll: target=%s", "footfall")
	writeTitle(&buf, 3, " per grace", "footfall-bench churn: n=%d", 5)
	want := "footfall-bench poll: target=footfall\nfootfall-bench churn: n=5\nmedian of 3 runs per grace\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
}

// TestMedianTexts checks the "median of" lines of the text reports.
func TestMedianTexts(t *testing.T) {
	var buf bytes.Buffer
	writePollText(&buf, pollResult{Median: pollReport{Target: "footfall", Tool: "go", Runs: 5}})
	writeChurnText(&buf, churnResult{Median: churnReport{Target: "footfall", Join: "ws", Runs: 3}})
	writeRunText(&buf, runResult{Median: Report{Target: "footfall", Runs: 3}})
	for _, want := range []string{"median of 5 runs (errors summed)\n", "footfall-bench churn: target=footfall visitors=0 (via ws) watchers=0\nmedian of 3 runs\n", "footfall-bench run: target=footfall transport="} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
}
