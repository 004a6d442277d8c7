package api_test

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
)

// TestClientControlFrames: pings from a client are answered with a pong of
// the same payload and pongs are taken quietly, whether they arrive alone on
// an idle connection or next to messages, and the connection carries on.
func TestClientControlFrames(t *testing.T) {
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "alice"))
	c.readType("visitor_count")
	pongs := make(chan string, 10)
	c.conn.SetPongHandler(func(s string) error { pongs <- s; return nil })

	deadline := time.Now().Add(time.Second)
	// Alone on an idle connection, then several at once, then one next to
	// a message.
	for _, payload := range []string{"idle", "a", "b"} {
		if err := c.conn.WriteControl(websocket.PingMessage, []byte(payload), deadline); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.conn.WriteControl(websocket.PongMessage, []byte("unsolicited"), deadline); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("with-message"), deadline); err != nil {
		t.Fatal(err)
	}
	c.quiet() // a ping message answered by a pong message: reads the pong frames on the way
	for _, want := range []string{"idle", "a", "b", "with-message"} {
		select {
		case got := <-pongs:
			if got != want {
				t.Fatalf("pong payload = %q; want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no pong for ping %q", want)
		}
	}
	c.quiet()
}

// TestWSSlowClientDoesNotStallOthers holds one WebSocket client that never
// reads while another receives every broadcast intact: large frames that
// fill sockets are finished by writer goroutines, and the stalled client is
// dropped as a slow consumer.
func TestWSSlowClientDoesNotStallOthers(t *testing.T) {
	g := newGateway(t, nil)
	small := &websocket.Dialer{
		Subprotocols: []string{"bearer", member(t, "stalled")},
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	}
	stalled := g.dialWith(visitorsPath(community1), small, nil)
	stalled.readType("visitor_count") // joined; it reads nothing more

	fast := g.dial(visitorsPath(community1), member(t, "fast"))
	if m := fast.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("fast's first message = %v; want count 2", m)
	}
	pad := strings.Repeat("x", 32<<10)
	const n = 300
	got := make(chan error, 1)
	go func() {
		seen := 0
		for seen < n {
			_ = fast.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := fast.conn.ReadMessage()
			if err != nil {
				got <- fmt.Errorf("after %d broadcasts: %v", seen, err)
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				got <- fmt.Errorf("message %d is not JSON (%d bytes): %v", seen, len(data), err)
				return
			}
			if p, _ := m["pad"].(string); p == pad {
				if c, _ := m["count"].(float64); int(c) != seen {
					got <- fmt.Errorf("broadcast %d arrived as number %d", int(c), seen)
					return
				}
				seen++
			}
		}
		got <- nil
	}()
	for i := range n {
		code, _ := g.service("POST", "/api/v1/communities/"+community1+"/broadcast", map[string]any{
			"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community1, "count": i, "timestamp": "2025-10-10T14:30:00Z", "pad": pad},
		})
		if code != 202 {
			t.Fatalf("broadcast %d = %d", i, code)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// Its goodbye waits for the write deadline of the frame it is stuck on.
	deadline := time.Now().Add(30 * time.Second)
	for g.srv.OpenClients() > 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := g.srv.OpenClients(); n != 1 {
		t.Fatalf("OpenClients = %d; want 1 (the stalled client dropped)", n)
	}
	// The full socket shows on /metrics.
	_, _, body := g.getRaw("/metrics")
	line := grepLines(string(body), "footfall_socket_full_total ")
	if v, err := strconv.ParseFloat(strings.TrimPrefix(line, "footfall_socket_full_total "), 64); err != nil || v < 1 {
		t.Fatalf("/metrics: %q; want footfall_socket_full_total of at least 1", line)
	}
}

// TestWSSurvivesKeepaliveUnderBroadcasts: a client receiving a steady
// stream of broadcasts stays connected across several keepalive pings
// (the ping's write deadline once expired under frames written without
// blocking, and every such connection was dropped writeWait after its
// first ping).
func TestWSSurvivesKeepaliveUnderBroadcasts(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *api.Options) {
		// Pings further apart than a write wait, as in production (25 s, 10 s).
		o.Timings.PingEvery, o.Timings.WriteWait = 300*time.Millisecond, 100*time.Millisecond
	})
	d := g.dial(dashboardPath(community1), moderator(t, "mod"))
	d.readType("dashboard_update")
	const n = 40 // 2 s: about 6 pings
	done := make(chan error, 1)
	go func() {
		seen := 0
		for seen < n {
			_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := d.conn.ReadMessage()
			if err != nil {
				done <- fmt.Errorf("after %d of %d broadcasts: %v", seen, n, err)
				return
			}
			if strings.Contains(string(data), `"analytics_update"`) {
				seen++
			}
		}
		done <- nil
	}()
	for i := range n {
		if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "tick", "value": i}); code != 202 {
			t.Fatalf("metric %d = %d", i, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
