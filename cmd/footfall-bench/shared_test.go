package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedianInto(t *testing.T) {
	type fig struct {
		Name string
		N    int
		I    int64
		F    float64
		Kept float64
	}
	rs := []fig{{"a", 1, 10, 0.5, 7}, {"b", 2, 30, 1.5, 8}, {"c", 4, 20, 0.25, 9}, {"d", 3, 40, 1, 10}}
	m := rs[0]
	medianInto(&m, rs, func(f *fig) []any { return []any{&f.N, &f.I, &f.F} })
	// Even counts: the mean of the middle two, whole numbers rounded half up.
	if m.N != 3 || m.I != 25 || m.F != 0.75 || m.Name != "a" || m.Kept != 7 {
		t.Fatalf("medianInto = %+v", m)
	}
	if rs[1].N != 2 || rs[2].I != 20 {
		t.Fatalf("medianInto changed its input: %+v", rs)
	}
	defer func() {
		if recover() == nil {
			t.Error("a string field was taken for a figure")
		}
	}()
	medianInto(&m, rs, func(f *fig) []any { return []any{&f.Name} })
}

func TestPhaseAt(t *testing.T) {
	rs := [][]string{{"join", "leave"}, {"join"}, {"join", "leave2"}}
	got := phaseAt(rs, 1, func(r []string) []string { return r })
	if len(got) != 2 || got[0] != "leave" || got[1] != "leave2" {
		t.Fatalf("phaseAt = %v", got)
	}
}

func TestMedianChurnAndPoll(t *testing.T) {
	c := func(after float64, msgs int) churnReport {
		return churnReport{Target: "footfall", Runs: 1, Phases: []churnPhase{{Phase: "join", StartCount: 50, FinalCount: 1050, ConvergeAfterLastMS: after, MaxMsgsPerSecond: msgs, Converged: 50}}}
	}
	m := medianChurn([]churnReport{c(100, 2), c(300, 9), c(200, 3)})
	if p := m.Phases[0]; m.Runs != 3 || p.ConvergeAfterLastMS != 200 || p.MaxMsgsPerSecond != 3 || p.FinalCount != 1050 || p.Converged != 50 {
		t.Fatalf("medianChurn = %+v", m)
	}
	p := func(h, c float64, errs int64) pollReport {
		return pollReport{Healthz: pollPhase{RPS: h, Errors: errs}, Count: pollPhase{RPS: c, Non2xx: errs}, Ratio: ratio(c, h)}
	}
	pm := medianPoll([]pollReport{p(100, 90, 1), p(200, 150, 2), p(150, 160, 0)})
	if pm.Runs != 3 || pm.Healthz.RPS != 150 || pm.Count.RPS != 150 || pm.Ratio != 0.9 || pm.Healthz.Errors != 3 || pm.Count.Non2xx != 3 {
		t.Fatalf("medianPoll = %+v", pm)
	}
}

func TestErrCounts(t *testing.T) {
	var e errCounts
	e.add(errors.New("boom"))
	e.add(errors.New("boom"))
	e.add(errors.New(strings.Repeat("x", 300)))
	if e["boom"] != 2 || e[strings.Repeat("x", 160)] != 1 || len(e) != 2 {
		t.Fatalf("errCounts = %v", e)
	}
}

func TestSummaryMS(t *testing.T) {
	p50, p99, mx := summarize([]int64{3_000_000, 1_234_567, 2_000_000}).ms()
	if p50 != 2 || p99 != 3 || mx != 3 {
		t.Fatalf("ms = %g %g %g", p50, p99, mx)
	}
}

func TestUnderTaskset(t *testing.T) {
	argv, err := underTaskset("", "--server-cpu", []string{"/bin/true", "-x"})
	if err != nil || len(argv) != 2 || argv[0] != "/bin/true" {
		t.Fatalf("no CPU: %v, %v", argv, err)
	}
	argv, err = underTaskset("0", "--server-cpu", []string{"/bin/true"})
	if err != nil {
		if !strings.Contains(err.Error(), "--server-cpu needs taskset") {
			t.Fatalf("error %v does not name the flag", err)
		}
		return
	}
	if len(argv) != 4 || !strings.HasSuffix(argv[0], "taskset") || argv[1] != "-c" || argv[2] != "0" || argv[3] != "/bin/true" {
		t.Fatalf("pinned argv = %v", argv)
	}
}

func TestWithEnv(t *testing.T) {
	sf := &serverFlags{serverEnv: multiFlag{"A=1"}}
	a := sf.withEnv("B=2")
	b := sf.withEnv("C=3")
	if len(sf.serverEnv) != 1 || strings.Join(a.serverEnv, ",") != "A=1,B=2" || strings.Join(b.serverEnv, ",") != "A=1,C=3" {
		t.Fatalf("withEnv: %v %v %v", sf.serverEnv, a.serverEnv, b.serverEnv)
	}
}

func TestNewCommandFlags(t *testing.T) {
	fs, sf := newCommand("x", io.Discard)
	if err := fs.Parse([]string{"--server-cpu", "0", "--server-env", "A=1", "--server-env", "B=2", "--quiet", "2s"}); err != nil {
		t.Fatal(err)
	}
	if sf.target != kindFootfall || sf.serverCPU != "0" || len(sf.serverEnv) != 2 || sf.quiet != 2*time.Second || sf.quietMax != 10*time.Minute {
		t.Fatalf("server flags = %+v", sf)
	}
}

func TestEmit(t *testing.T) {
	var buf bytes.Buffer
	text := func(w io.Writer, v map[string]int) { fmt.Fprintf(w, "n=%d\n", v["n"]) }
	if err := emit(&buf, false, map[string]int{"n": 3}, text); err != nil || buf.String() != "n=3\n" {
		t.Fatalf("text: %q %v", buf.String(), err)
	}
	buf.Reset()
	if err := emit(&buf, true, map[string]int{"n": 3}, text); err != nil || !strings.Contains(buf.String(), `"n": 3`) {
		t.Fatalf("json: %q %v", buf.String(), err)
	}
}

func TestTickEvery(t *testing.T) {
	var got []int
	tickEvery(context.Background(), time.Millisecond, func(n int) bool {
		got = append(got, n)
		return n < 2
	})
	if len(got) != 3 || got[2] != 2 {
		t.Fatalf("ticks %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tickEvery(ctx, time.Millisecond, func(int) bool { t.Error("ticked after the end"); return false })
}

// TestTakeSnapshot sums /proc and /metrics over nodes: two "nodes" that
// are this process, with a /metrics each.
func TestTakeSnapshot(t *testing.T) {
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "go_goroutines 10\ngo_memstats_heap_inuse_bytes 2048\nfootfall_connections_open 3\n")
	}))
	defer metrics.Close()
	self := &target{pid: os.Getpid(), base: metrics.URL}
	one := takeSnapshot(context.Background(), self)
	if !one.procOK {
		t.Skip("no /proc")
	}
	two := takeSnapshot(context.Background(), self, self)
	if !two.procOK || !two.metricsOK || two.metrics.Goroutines != 20 || two.metrics.HeapInuseKiB != 4 || two.metrics.OpenConns != 6 {
		t.Fatalf("snapshot of two = %+v", two)
	}
	if two.proc.Threads < 2*one.proc.Threads-4 || two.proc.RSSKiB < one.proc.RSSKiB {
		t.Fatalf("proc figures not summed: one %+v, two %+v", one.proc, two.proc)
	}
	// No pid: no /proc figures; no /metrics: none of those either.
	none := takeSnapshot(context.Background(), &target{base: "http://127.0.0.1:1"})
	if none.procOK || none.metricsOK {
		t.Fatalf("snapshot without pid or /metrics = %+v", none)
	}
}

func TestCPUWatch(t *testing.T) {
	w := startCPUWatch()
	for i := 0; i < 3e6; i++ { // a little CPU of our own
		_ = fmt.Sprint(i)[0]
	}
	if w.clientUsed() <= 0 {
		t.Errorf("clientUsed = %v after some work", w.clientUsed())
	}
	if other, ok := w.otherCPU(0); ok && other < 0 {
		t.Errorf("otherCPU = %g", other)
	}
}

func TestJoinLogWithin(t *testing.T) {
	var l joinLog
	t0 := time.Now()
	l.add(t0, time.Millisecond)
	l.add(t0.Add(time.Second), time.Millisecond)
	l.fail(errors.New("refused"))
	if n := l.within(t0.Add(500 * time.Millisecond)); n != 1 {
		t.Fatalf("within = %d", n)
	}
	if l.failed != 1 || l.errs["refused"] != 1 {
		t.Fatalf("failures %d %v", l.failed, l.errs)
	}
}

func TestWatcherModes(t *testing.T) {
	joined := []byte(`{"type":"visitor_joined","community_id":"c","count":7}`)
	snapshot := []byte(`{"type":"snapshot","count":5}`)
	counts := &watcher{}
	counts.onMsg(snapshot, 1)
	counts.onMsg(joined, 2)
	if counts.last.Load() != 7 || len(counts.events) != 1 || counts.events[0] != (countEvent{2, 7}) || len(counts.at) != 0 {
		t.Fatalf("count watcher: last %d, events %v, at %v", counts.last.Load(), counts.events, counts.at)
	}
	every := &watcher{everyMsg: true}
	every.onMsg(snapshot, 1)
	every.onMsg([]byte(`{"type":"pong"}`), 2)
	every.onMsg(joined, 3)
	if every.last.Load() != 7 || len(every.events) != 0 || len(every.since(2)) != 2 {
		t.Fatalf("every-message watcher: last %d, events %v, since(2) %v", every.last.Load(), every.events, every.since(2))
	}
	ws := []*watcher{counts, every}
	if !allHold(ws, 7) || allHold(ws, 5) {
		t.Fatal("allHold")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := waitAgree(ctx, ws, 3*time.Second); err != nil || n != 7 {
		t.Fatalf("waitAgree = %d, %v", n, err)
	}
	every.last.Store(8)
	if _, err := waitAgree(ctx, ws, 100*time.Millisecond); err == nil {
		t.Fatal("watchers on 7 and 8 agreed")
	}
}

// TestClientPool runs a pool against the baseline server: every client
// connects, receives a broadcast and is stopped and waited for.
func TestClientPool(t *testing.T) {
	b := newBaseline()
	srv := httptest.NewServer(b.handler())
	defer srv.Close()
	defer b.close()
	tg := &target{kind: kindBaseline, base: srv.URL}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool := newPool(ctx)
	ctr := newCounters()
	sem := make(chan struct{}, 2)
	comm := communityIDs(1, 9)[0]
	for i, transport := range []string{"ws", "sse", "ws", "sse"} {
		c, err := tg.newClient(fmt.Sprintf("p-%d", i), comm, "visitors", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := pool.start(tg, c, transport, ctr, sem); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitReady(ctx, ctr, 4, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	status, err := tg.publish(ctx, http.DefaultClient, comm, "visitors", probeMessage("visitors", comm, time.Now().UnixNano()))
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("publish: %d, %v", status, err)
	}
	for ctr.received.Load() < 4 {
		if sleepCtx(ctx, 5*time.Millisecond) != nil {
			t.Fatalf("received %d of 4", ctr.received.Load())
		}
	}
	cs := pool.stop()
	if len(cs) != 4 || len(latencies(cs)) != 4 || ctr.disconnected.Load() != 0 {
		t.Fatalf("stopped %d clients, %d latencies, %d disconnected", len(cs), len(latencies(cs)), ctr.disconnected.Load())
	}
	for _, c := range cs {
		select {
		case <-c.done:
		default:
			t.Fatal("a client still runs after stop")
		}
	}
	cancelled, stop := context.WithCancel(ctx)
	stop()
	full := make(chan struct{}) // no room: start must give up with the context
	if err := newPool(cancelled).start(tg, newBenchClient(comm, "visitors", ""), "ws", ctr, full); err == nil {
		t.Fatal("started a client on an ended context with no room in sem")
	}
}
