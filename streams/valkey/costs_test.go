package valkey

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestCosts measures what the bus costs Valkey: commands (as the client
// sends them, and as scripts run them) and bytes in and out, per visitor
// join and leave, per poll, and per idle minute of a node. It is slow (the
// idle part waits a real minute), so it runs only on request:
//
//	FOOTFALL_VALKEY_MEASURE=1 go test -run TestCosts -v ./streams/valkey/
func TestCosts(t *testing.T) {
	if os.Getenv("FOOTFALL_VALKEY_MEASURE") != "1" {
		t.Skip("set FOOTFALL_VALKEY_MEASURE=1 to measure")
	}
	srv := valkeytest.Start(t)
	const n = 1000
	type scenario struct {
		name  string
		setup func(b *Bus, c string)
		run   func(b *Bus, c string)
		ops   int
	}
	held := func(i int) streams.Source {
		return streams.Source{Visitor: user(fmt.Sprint("visitor-", i)), ID: "conn-" + strconv.Itoa(i)}
	}
	poll := func(i int) streams.Source {
		return streams.Source{Visitor: user(fmt.Sprint("visitor-", i)), ID: "poll", TTL: 30 * time.Second}
	}
	each := func(b *Bus, c string, f func(b *Bus, c string, i int)) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range next {
					f(b, c, i)
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	touch := func(src func(int) streams.Source) func(b *Bus, c string, i int) {
		return func(b *Bus, c string, i int) {
			s := src(i)
			s.Community = c
			if _, err := b.Touch(context.Background(), s); err != nil {
				t.Errorf("Touch error = %v", err)
			}
		}
	}
	leaveHeld := func(b *Bus, c string, i int) {
		s := held(i)
		if _, err := b.Leave(context.Background(), c, s.Visitor, s.ID); err != nil {
			t.Errorf("Leave error = %v", err)
		}
	}
	secondTab := func(i int) streams.Source { s := held(i); s.ID += "-tab2"; return s }
	// The leave grace: a closed connection's held source is touched with
	// the grace as its TTL; the reload's new connection is a new held
	// source of a visitor still present.
	graced := func(i int) streams.Source { s := held(i); s.TTL = 5 * time.Second; return s }
	reconnected := func(i int) streams.Source { s := held(i); s.ID += "-reload"; return s }
	scenarios := []scenario{
		{"join (held source, new visitor)", nil, func(b *Bus, c string) { each(b, c, touch(held)) }, n},
		{"second tab (held, present visitor)", func(b *Bus, c string) { each(b, c, touch(held)) },
			func(b *Bus, c string) { each(b, c, touch(secondTab)) }, n},
		{"leave (last held source)", func(b *Bus, c string) { each(b, c, touch(held)) },
			func(b *Bus, c string) { each(b, c, leaveHeld) }, n},
		{"close into the leave grace (last held source becomes a 5 s TTL source)", func(b *Bus, c string) { each(b, c, touch(held)) },
			func(b *Bus, c string) { each(b, c, touch(graced)) }, n},
		{"reconnect within the grace (new held source, visitor in grace)", func(b *Bus, c string) {
			each(b, c, touch(held))
			each(b, c, touch(graced))
		}, func(b *Bus, c string) { each(b, c, touch(reconnected)) }, n},
		{"poll, first (TTL source, join)", nil, func(b *Bus, c string) { each(b, c, touch(poll)) }, n},
		{"poll, renewal (TTL source)", func(b *Bus, c string) { each(b, c, touch(poll)) },
			func(b *Bus, c string) { each(b, c, touch(poll)) }, n},
		{"publish (analytics_update, 107-byte message)", nil, func(b *Bus, c string) {
			each(b, c, func(b *Bus, c string, i int) {
				e := streams.Event{Type: streams.TypeAnalyticsUpdate, Community: c, Metric: "conversion_rate", Value: json.RawMessage(`{"rate":14.5000}`),
					Message: json.RawMessage(`{"type":"analytics_update","metric":"conversion_rate","value":{"rate":14.5000},"timestamp":"2026-11-26T01:02:03Z"}`)}
				if _, err := b.Publish(context.Background(), e); err != nil {
					t.Errorf("Publish error = %v", err)
				}
			})
		}, n},
		{"history read (SSE resume, 10 events missed)", func(b *Bus, c string) {
			for range 20 {
				_, _ = b.Publish(context.Background(), streams.Event{Type: streams.TypeAnalyticsUpdate, Community: c, Metric: "m", Value: json.RawMessage(`1`)})
			}
		}, func(b *Bus, c string) {
			snap, err := b.Snapshot(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			epoch, _, _ := strings.Cut(snap.LastID, "-")
			after := fmt.Sprintf("%s-%d", epoch, snap.Seq-10)
			each(b, c, func(b *Bus, c string, i int) {
				if evs, ok, err := b.History(context.Background(), c, after, 0); err != nil || !ok || len(evs) != 10 {
					t.Errorf("History = %d events, %v, %v; want 10", len(evs), ok, err)
				}
			})
		}, n},
		{"snapshot", func(b *Bus, c string) { each(b, c, touch(held)) },
			func(b *Bus, c string) {
				each(b, c, func(b *Bus, c string, i int) { _, _ = b.Snapshot(context.Background(), c) })
			}, n},
	}
	for _, subscribed := range []bool{false, true} {
		for _, sc := range scenarios {
			name := sc.name
			if subscribed {
				name += ", 1 node subscribed"
			}
			// Once to count commands (MONITOR), once to count bytes (the
			// monitor's own output would count as traffic).
			for _, monitored := range []bool{true, false} {
				b := newBus(t, Options{URL: srv.URL(), ReapInterval: time.Hour})
				c := newCommunity()
				if subscribed {
					record(t, b, c)
				}
				if sc.setup != nil {
					sc.setup(b, c)
				}
				var mon *monitor
				if monitored {
					mon = startMonitor(t, srv.Addr)
				}
				in0, out0 := netBytes(t, srv)
				us0 := scriptMicros(t, srv)
				sc.run(b, c)
				in1, out1 := netBytes(t, srv)
				us1 := scriptMicros(t, srv)
				if monitored {
					client, lua := mon.stop(t)
					t.Logf("%-52s commands/op: client %s | in scripts %s", name, perOp(client, sc.ops), perOp(lua, sc.ops))
				} else {
					t.Logf("%-52s bytes/op: in %.0f, out %.0f; server time in scripts %.1fµs/op", name,
						float64(in1-in0)/float64(sc.ops), float64(out1-out0)/float64(sc.ops), float64(us1-us0)/float64(sc.ops))
				}
				b.Close()
			}
		}
	}

	// An idle minute of a node holding 10,000 connections in 100
	// communities (default presence TTL 30s, reap interval 1s).
	for _, conns := range []int{0, 10_000} {
		srv := valkeytest.Start(t) // nothing else expiring meanwhile
		b := newBus(t, Options{URL: srv.URL()})
		for i := range conns {
			s := held(i)
			s.Community = fmt.Sprintf("idle-%03d", i%100)
			if _, err := b.Touch(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		for _, monitored := range []bool{true, false} {
			var mon *monitor
			if monitored {
				mon = startMonitor(t, srv.Addr)
			}
			in0, out0 := netBytes(t, srv)
			time.Sleep(time.Minute)
			in1, out1 := netBytes(t, srv)
			if monitored {
				client, lua := mon.stop(t)
				t.Logf("idle minute, node with %5d connections: commands: client %s | in scripts %s", conns, perOp(client, 1), perOp(lua, 1))
			} else {
				t.Logf("idle minute, node with %5d connections: bytes: in %d, out %d", conns, in1-in0, out1-out0)
			}
		}
		b.Close()
	}
}

// scriptMicros is the server time spent in EVAL and EVALSHA so far.
func scriptMicros(t testing.TB, srv *valkeytest.Server) int64 {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.HasPrefix(line, "cmdstat_eval") {
			continue
		}
		for _, f := range strings.Split(line[strings.IndexByte(line, ':')+1:], ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
	}
	return total
}

func perOp(counts map[string]int, ops int) string {
	total := 0
	names := make([]string, 0, len(counts))
	for name, c := range counts {
		total += c
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %.2f", name, float64(counts[name])/float64(ops))
	}
	return fmt.Sprintf("%.2f (%s)", float64(total)/float64(ops), strings.Join(parts, ", "))
}

func netBytes(t testing.TB, srv *valkeytest.Server) (in, out int64) {
	t.Helper()
	info, err := srv.Do("INFO", "stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "total_net_input_bytes":
			in, _ = strconv.ParseInt(v, 10, 64)
		case "total_net_output_bytes":
			out, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return in, out
}

// monitor counts the commands a server runs, through MONITOR: those sent
// by clients and those run by scripts ("[0 lua]").
type monitor struct {
	conn   net.Conn
	done   chan struct{}
	mu     sync.Mutex
	client map[string]int
	lua    map[string]int
}

var monitorLine = regexp.MustCompile(`^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"`)

func startMonitor(t testing.TB, addr string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("MONITOR = %q, %v", line, err)
	}
	m := &monitor{conn: conn, done: make(chan struct{}), client: map[string]int{}, lua: map[string]int{}}
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			g := monitorLine.FindStringSubmatch(line)
			if g == nil {
				continue
			}
			cmd := strings.ToLower(g[2])
			if cmd == "monitor" || (cmd == "info" && strings.Contains(line, "stats")) {
				continue // the measurement's own
			}
			m.mu.Lock()
			if g[1] == "lua" {
				m.lua[cmd]++
			} else {
				m.client[cmd]++
			}
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *monitor) stop(t testing.TB) (client, lua map[string]int) {
	time.Sleep(200 * time.Millisecond) // let the last lines arrive
	m.conn.Close()
	<-m.done
	return m.client, m.lua
}

// TestMemoryCosts measures what Valkey holds per present visitor, per
// history event and per visitor of today (used_memory deltas), for the
// capacity model in the README:
//
//	FOOTFALL_VALKEY_MEASURE=1 go test -run TestMemoryCosts -v ./streams/valkey/
func TestMemoryCosts(t *testing.T) {
	if os.Getenv("FOOTFALL_VALKEY_MEASURE") != "1" {
		t.Skip("set FOOTFALL_VALKEY_MEASURE=1 to measure")
	}
	used := func(srv *valkeytest.Server) int64 {
		t.Helper()
		info, err := srv.Do("INFO", "memory")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory in INFO memory")
		return 0
	}
	const communities, perCommunity = 100, 100
	ctx := context.Background()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL(), ReapInterval: time.Hour})
	// Present visitors (a held source each) also enter today's visitors:
	// measure today alone first, with TTL sources that left again.
	base := used(srv)
	for c := range communities {
		for i := range perCommunity {
			v := streams.Visitor{ID: fmt.Sprintf("user-%06d", c*perCommunity+i), Authenticated: true}
			cid := fmt.Sprintf("mem-%03d", c)
			if _, err := b.Touch(ctx, streams.Source{Community: cid, Visitor: v, ID: "s1", TTL: time.Minute}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Leave(ctx, cid, v, "s1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each join and leave also wrote a history event: their memory is
	// measured per key and taken off, leaving the day sets.
	afterToday := used(srv)
	hist := int64(0)
	for c := range communities {
		n, err := srv.Do("MEMORY", "USAGE", fmt.Sprintf("ff:{mem-%03d}:l", c), "SAMPLES", "0")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseInt(strings.TrimPrefix(n, ":"), 10, 64)
		hist += v
	}
	histLen, _ := srv.Do("XLEN", "ff:{mem-000}:l")
	total := int64(communities * perCommunity)
	t.Logf("today's visitors: %d distinct over %d communities: %.0f B each (history of %s events per community excluded: %.0f B per event)",
		total, communities, float64(afterToday-base-hist)/float64(total), strings.TrimPrefix(histLen, ":"),
		float64(hist)/float64(communities)/mustInt(t, strings.TrimPrefix(histLen, ":")))

	// Present visitors: held sources of new visitors in other communities.
	srv2 := valkeytest.Start(t)
	b2 := newBus(t, Options{URL: srv2.URL(), ReapInterval: time.Hour})
	base = used(srv2)
	hist = 0
	for c := range communities {
		cid := fmt.Sprintf("live-%03d", c)
		for i := range perCommunity {
			v := streams.Visitor{ID: fmt.Sprintf("user-%06d", c*perCommunity+i), Authenticated: true}
			if _, err := b2.Touch(ctx, streams.Source{Community: cid, Visitor: v, ID: fmt.Sprintf("conn-%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		n, _ := srv2.Do("MEMORY", "USAGE", "ff:{"+cid+"}:l", "SAMPLES", "0")
		v, _ := strconv.ParseInt(strings.TrimPrefix(n, ":"), 10, 64)
		hist += v
	}
	after := used(srv2)
	t.Logf("present visitors (a held connection each, also in today's set): %.0f B each, history excluded",
		float64(after-base-hist)/float64(total))
}

func mustInt(t testing.TB, s string) float64 {
	t.Helper()
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n == 0 {
		t.Fatalf("not a positive number: %q", s)
	}
	return n
}
