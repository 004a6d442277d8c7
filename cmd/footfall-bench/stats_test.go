package main

import (
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1)
	}
	for _, tc := range []struct {
		xs   []int64
		p    float64
		want int64
	}{
		{nil, 50, 0},
		{[]int64{7}, 50, 7},
		{[]int64{7}, 99, 7},
		{[]int64{1, 2}, 50, 1},
		{[]int64{1, 2, 3}, 50, 2},
		{[]int64{1, 2, 3, 4}, 99, 4},
		{hundred, 50, 50},
		{hundred, 99, 99},
		{hundred, 100, 100},
		{hundred, 0, 1},
		{hundred, 99.5, 100},
	} {
		if got := percentile(tc.xs, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %g) = %d, want %d", tc.xs, tc.p, got, tc.want)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	ns := []int64{5e6, 1e6, 3e6, 2e6, 4e6}
	s := summarize(ns)
	if s.N != 5 || s.P50 != 3*time.Millisecond || s.P99 != 5*time.Millisecond || s.Max != 5*time.Millisecond {
		t.Fatalf("summary = %+v", s)
	}
	if z := summarize(nil); z != (summary{}) {
		t.Fatalf("empty summary = %+v", z)
	}
}

func TestExtractInt(t *testing.T) {
	key := []byte(`"t":`)
	for _, tc := range []struct {
		msg  string
		want int64
		ok   bool
	}{
		{`{"type":"visitor_count","count":0,"t":1700000000123456789}`, 1700000000123456789, true},
		{`{"t":42,"x":1}`, 42, true},
		{`{"t": 42}`, 42, true},
		{`{"t":-5}`, -5, true},
		{`{"t":0}`, 0, true},
		{`{"t":"42"}`, 0, false},
		{`{"t":}`, 0, false},
		{`{"t":`, 0, false},
		{`{"timestamp":"2025-01-01T00:00:00Z","count":3}`, 0, false},
		{`{"t":99999999999999999999}`, 0, false},
		{`{"t":` + strconv.FormatInt(math.MaxInt64, 10) + `}`, math.MaxInt64, true},
		{``, 0, false},
	} {
		got, ok := extractInt([]byte(tc.msg), key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("extractInt(%s) = %d, %v; want %d, %v", tc.msg, got, ok, tc.want, tc.ok)
		}
	}
	// The count of a footfall message, and the SSE data line form.
	if n, ok := extractInt([]byte(` {"type":"visitor_joined","community_id":"ab","count":43,"timestamp":"x"}`+"\n"), countKey); !ok || n != 43 {
		t.Errorf("count = %d, %v", n, ok)
	}
}

func TestProbeMessageRoundTrip(t *testing.T) {
	for _, stream := range []string{"visitors", "dashboard"} {
		msg := probeMessage(stream, "00000000-0000-4000-8000-000000000001", 1234567890123)
		got, ok := extractInt(msg, probeKey(stream))
		if !ok || got != 1234567890123 {
			t.Errorf("%s: probe %s gives %d, %v", stream, msg, got, ok)
		}
	}
	// A footfall message that is not a probe has no probe field.
	for _, m := range []string{
		`{"type":"visitor_count","community_id":"c","count":42,"timestamp":"2025-10-10T14:31:00Z"}`,
		`{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":2,"total_unique_visitors":3},"realtime_count":4,"community_id":"c"},"timestamp":"2025-10-10T14:31:00Z"}`,
	} {
		for _, stream := range []string{"visitors", "dashboard"} {
			if _, ok := extractInt([]byte(m), probeKey(stream)); ok {
				t.Errorf("%s key found in %s", stream, m)
			}
		}
	}
}

func TestMaxPerWindow(t *testing.T) {
	ms := func(xs ...int64) []int64 {
		for i := range xs {
			xs[i] *= int64(time.Millisecond)
		}
		return xs
	}
	for _, tc := range []struct {
		times []int64
		want  int
	}{
		{nil, 0},
		{ms(0), 1},
		{ms(0, 100, 200, 300), 4},
		{ms(0, 999, 1000, 1999), 2},
		{ms(0, 100, 200, 1500, 1600, 1700, 1800), 4},
	} {
		if got := maxPerWindow(tc.times, time.Second); got != tc.want {
			t.Errorf("maxPerWindow(%v) = %d, want %d", tc.times, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	if m := median(nil); m != 0 {
		t.Errorf("median(nil) = %g", m)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %g", m)
	}
	xs := []float64{4, 1, 3, 2}
	if m := median(xs); m != 2.5 {
		t.Errorf("median even = %g", m)
	}
	if xs[0] != 4 {
		t.Error("median reordered its input")
	}
}

func TestConvergence(t *testing.T) {
	evs := []countEvent{{10, 50}, {20, 300}, {30, 1050}, {40, 1049}, {50, 1050}, {60, 1050}}
	if at, ok := convergence(evs, 1050); !ok || at != 50 {
		t.Errorf("convergence = %d, %v; want 50", at, ok)
	}
	if _, ok := convergence(evs, 7); ok {
		t.Error("converged on a count never sent last")
	}
	if _, ok := convergence(nil, 7); ok {
		t.Error("converged without messages")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks; comm has a
	// space and a parenthesis.
	stat := []byte("1234 (foot fall)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 100 1000000 300 18446744073709551615\n")
	got, err := parseStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Fatalf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("no error for garbage")
	}
}

func TestReadProcStatsSelf(t *testing.T) {
	s, err := readProcStats(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if s.RSSKiB <= 0 || s.Threads <= 0 || s.FDs <= 0 {
		t.Fatalf("stats of self = %+v", s)
	}
}

func TestParseWrk(t *testing.T) {
	out := []byte(`Running 10s test @ http://127.0.0.1:8080/healthz
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.61ms  512.11us  12.72ms   80.44%
    Req/Sec    31.43k     1.20k   33.71k    74.00%
  Latency Distribution
     50%    1.52ms
     75%    1.81ms
     90%    2.17ms
     99%    3.32ms
  312817 requests in 10.00s, 41.47MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 17
Requests/sec:  31276.52
Transfer/sec:      4.15MB
`)
	p, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.RPS != 31276.52 || p.Non2xx != 17 || p.Errors != 3 || p.LatencyP99MS != 3.32 {
		t.Fatalf("parseWrk = %+v", p)
	}
	if _, err := parseWrk([]byte("wrk: connection refused")); err == nil {
		t.Fatal("no error without Requests/sec")
	}
}

func TestParseMachineCPU(t *testing.T) {
	a, ok := parseMachineCPU("cpu  100 5 50 1000 20 1 2 3 7 0")
	if !ok || a.busy != 161 || a.total != 1181 {
		t.Fatalf("parseMachineCPU = %+v, %v", a, ok)
	}
	b, _ := parseMachineCPU("cpu  200 5 50 1100 20 1 2 3 7 0")
	if f := b.busyFraction(a); f != 0.5 {
		t.Fatalf("busyFraction = %g", f)
	}
	if d := b.busySince(a); d != time.Second {
		t.Fatalf("busySince = %v", d)
	}
	if _, ok := parseMachineCPU("cpu0 1 2 3"); ok {
		t.Fatal("parsed a short per-CPU line")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 2017
go_memstats_heap_inuse_bytes 1.048576e+07
go_memstats_stack_inuse_bytes 2.097152e+06
go_memstats_next_gc_bytes 4.194304e+06
footfall_connections_open{stream="dashboard",transport="websocket"} 1000
footfall_connections_open{stream="visitors",transport="sse"} 5
footfall_connections_accepted_total{stream="visitors",transport="sse"} 99
footfall_socket_full_total 37
`
	m, ok := parseMetrics(strings.NewReader(text))
	if !ok || m.Goroutines != 2017 || m.HeapInuseKiB != 10240 || m.StackKiB != 2048 || m.NextGCKiB != 4096 || m.OpenConns != 1005 || m.SocketFull != 37 {
		t.Fatalf("parseMetrics = %+v, %v", m, ok)
	}
	if _, ok := parseMetrics(strings.NewReader("404 page not found\n")); ok {
		t.Fatal("parsed a 404 page")
	}
}
