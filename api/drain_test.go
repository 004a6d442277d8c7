package api_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestNewStreamsRefusedWhileDraining: once the node drains, a new stream
// is refused with 503 and Retry-After before any upgrade (it used to be
// accepted and cut at once without a goodbye); REST snapshots still work.
func TestNewStreamsRefusedWhileDraining(t *testing.T) {
	g := newGateway(t, nil)
	g.srv.Drain()

	_, resp, err := (&websocket.Dialer{Subprotocols: []string{"bearer", member(t, "late")}}).Dial(g.wsURL(visitorsPath(community1)), nil)
	if err == nil {
		t.Fatalf("WebSocket dial during the drain succeeded; want HTTP 503")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("WebSocket dial during the drain = %v, %v; want 503 with Retry-After", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	req, _ := http.NewRequest("GET", g.ts.URL+visitorsPath(community1), nil)
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, body); err != nil {
		t.Errorf("%v", err)
	}

	code, h, m := g.get(ssePath(community1)+"?token="+member(t, "late"), nil)
	if code != http.StatusServiceUnavailable || m.str("error") != "shutting_down" || h.Get("Retry-After") == "" {
		t.Fatalf("SSE during the drain = %d %v %v; want 503 shutting_down with Retry-After", code, h, m)
	}
	if code, _, m := g.get(countPath(community1)+"?token="+member(t, "poller"), nil); code != 200 {
		t.Fatalf("count poll during the drain = %d %v; want 200", code, m)
	}
}

// TestDrainOverSpreadsCloses: DrainOver tells the streams to go spread
// over the given time, not all in the same moment, each with 1001.
func TestDrainOverSpreadsCloses(t *testing.T) {
	g := newGateway(t, nil)
	const n = 20
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		c := g.dial(visitorsPath(community1), member(t, "drained-"+strconv.Itoa(i)))
		c.readType("visitor_count")
		clients[i] = c.conn
	}
	const spread = time.Second
	start := time.Now()
	closedAt := make([]time.Duration, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i, conn := range clients {
		wg.Go(func() {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					closedAt[i] = time.Since(start)
					if ce, ok := err.(*websocket.CloseError); ok {
						codes[i] = ce.Code
					}
					return
				}
			}
		})
	}
	g.srv.DrainOver(context.Background(), spread)
	wg.Wait()
	first, last := closedAt[0], closedAt[0]
	for i, d := range closedAt {
		if codes[i] != 1001 {
			t.Errorf("client %d closed with %d; want 1001", i, codes[i])
		}
		first, last = min(first, d), max(last, d)
	}
	if last-first < spread/2 {
		t.Fatalf("closes spread over %v (from %v to %v); want about %v", last-first, first, last, spread)
	}
}

// TestReadyGauge: footfall_ready follows /readyz: 1, then 0 once draining.
func TestReadyGauge(t *testing.T) {
	g := newGateway(t, nil)
	metric := func() string {
		resp, err := http.Get(g.ts.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "footfall_ready ") {
				return line
			}
		}
		return ""
	}
	if got := metric(); got != "footfall_ready 1" {
		t.Fatalf("before the drain: %q; want footfall_ready 1", got)
	}
	g.srv.Drain()
	if got := metric(); got != "footfall_ready 0" {
		t.Fatalf("draining: %q; want footfall_ready 0", got)
	}
}
