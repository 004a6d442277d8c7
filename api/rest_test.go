package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
)

// get performs a GET with optional headers and returns status, headers
// and the decoded body.
func (g *gateway) get(path string, hdr http.Header) (int, http.Header, message) {
	g.t.Helper()
	req, _ := http.NewRequest("GET", g.ts.URL+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, data); err != nil {
		g.t.Errorf("%v", err)
	}
	var m message
	if len(data) > 0 {
		_ = json.Unmarshal(data, &m)
	}
	return resp.StatusCode, resp.Header, m
}

func countPath(c string) string { return "/api/v1/communities/" + c + "/visitors/count" }

func TestRESTCount(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.PresenceTTL = 600 * time.Millisecond })
	ws := g.dial(visitorsPath(community1), member(t, "alice"))
	ws.readType("visitor_count")

	bob := http.Header{"Authorization": {"Bearer " + member(t, "bob")}}
	code, hdr, m := g.get(countPath(community1), bob)
	if code != 200 || m.str("type") != "visitor_count" || m.num("count") != 2 || m.str("community_id") != community1 {
		t.Fatalf("GET count = %d %v; want visitor_count 2 (the poll is presence)", code, m)
	}
	if hdr.Get("ETag") == "" || hdr.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers = %v; want ETag and Cache-Control: no-cache", hdr)
	}
	ws.readType("visitor_joined")

	// Same state: same ETag, 304 on If-None-Match.
	etag := hdr.Get("ETag")
	code, hdr2, _ := g.get(countPath(community1), bob)
	if code != 200 || hdr2.Get("ETag") != etag {
		t.Fatalf("second GET = %d ETag %q; want 200 with the same ETag %q", code, hdr2.Get("ETag"), etag)
	}
	bob.Set("If-None-Match", etag)
	if code, _, _ := g.get(countPath(community1), bob); code != http.StatusNotModified {
		t.Fatalf("GET with If-None-Match = %d; want 304", code)
	}
	// Polling keeps bob present past the TTL; stopping lets him leave.
	for range 6 {
		time.Sleep(200 * time.Millisecond)
		g.get(countPath(community1), bob)
	}
	ws.quiet()
	if m := ws.readTypeWithin("visitor_left", 3*time.Second); m.num("count") != 1 {
		t.Fatalf("after bob stopped polling: %v; want visitor_left count 1", m)
	}
	// The ETag changed with the count.
	bob.Del("If-None-Match")
	_, _, m = g.get(countPath(community1), http.Header{"Authorization": {"Bearer " + member(t, "alice")}})
	if m.num("count") != 1 {
		t.Fatalf("count = %v; want 1 (alice's poll adds nobody: she is connected)", m)
	}
}

// readTypeWithin waits up to d for a message of type typ.
func (c *wsClient) readTypeWithin(typ string, d time.Duration) message {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	var m message
	if err := c.conn.ReadJSON(&m); err != nil {
		c.t.Fatalf("no %s within %v: %v", typ, d, err)
	}
	if m.str("type") != typ {
		c.t.Fatalf("next message = %v; want %s", m, typ)
	}
	return m
}

func TestRESTDashboardAndAuth(t *testing.T) {
	g := newGateway(t, nil)
	code, hdr, m := g.get("/api/v1/communities/"+community1+"/visitor-dashboard", http.Header{"Authorization": {"Bearer " + moderator(t, "mod")}})
	if code != 200 || m.str("type") != "dashboard_update" || hdr.Get("ETag") == "" {
		t.Fatalf("GET dashboard = %d %v; want dashboard_update with an ETag", code, m)
	}
	cases := []struct {
		name, path string
		hdr        http.Header
		status     int
		code       int
	}{
		{"no credential", countPath(community1), nil, 401, 4001},
		{"bad token", countPath(community1) + "?token=x.y.z", nil, 401, 4002},
		{"member on dashboard", "/api/v1/communities/" + community1 + "/visitor-dashboard", http.Header{"Authorization": {"Bearer " + member(t, "u")}}, 403, 4003},
		{"query token", countPath(community1) + "?token=" + member(t, "u"), nil, 200, 0},
		{"bad id", countPath("xyz"), http.Header{"Authorization": {"Bearer " + member(t, "u")}}, 404, 0},
	}
	for _, tc := range cases {
		code, _, m := g.get(tc.path, tc.hdr)
		if code != tc.status || (tc.code != 0 && m.num("code") != tc.code) {
			t.Errorf("%s: GET = %d %v; want %d code %d", tc.name, code, m, tc.status, tc.code)
		}
	}
}

// TestSSESlowClientDoesNotStallOthers holds one SSE client that never
// reads while another receives every broadcast.
func TestSSESlowClientDoesNotStallOthers(t *testing.T) {
	g := newGateway(t, nil)
	// The stalled client: a raw TCP connection that sends its request and
	// never reads.
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(conn, "GET %s?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", ssePath(community1), member(t, "stalled"))
	status, _ := bufio.NewReader(io.LimitReader(conn, 64)).ReadString('\n')
	if !strings.Contains(status, "200") {
		t.Fatalf("stalled client status line = %q", status)
	}

	fast := g.openSSE(ssePath(community1)+"?token="+member(t, "fast"), nil, 200)
	fast.broadcasts = true // its messages carry an extra "pad" field
	fast.nextType("visitor_count")
	pad := strings.Repeat("x", 32<<10)
	const n = 300
	for i := range n {
		code, _ := g.service("POST", "/api/v1/communities/"+community1+"/broadcast", map[string]any{
			"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community1, "count": i, "timestamp": "2025-10-10T14:30:00Z", "pad": pad},
		})
		if code != 202 {
			t.Fatalf("broadcast %d = %d", i, code)
		}
	}
	got := 0
	for got < n {
		ev := fast.next()
		if ev.Event == "visitor_count" && strings.Contains(ev.Data, pad[:100]) {
			got++
		}
	}
	// The stalled client was dropped as a slow consumer.
	deadline := time.Now().Add(15 * time.Second)
	for g.srv.OpenClients() > 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := g.srv.OpenClients(); n != 1 {
		t.Fatalf("OpenClients = %d; want 1 (the stalled client dropped)", n)
	}
}
