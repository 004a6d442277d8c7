package api_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/gorilla/websocket"
)

// TestConnectionLimits: per-IP open connections and connection rate are
// refused with 429 before the upgrade; X-Forwarded-For is believed only
// from trusted proxies.
func TestConnectionLimits(t *testing.T) {
	t.Run("open connections per IP", func(t *testing.T) {
		g := newGateway(t, func(o *api.Options) { o.Limits = api.Limits{ConnRatePerIP: 1000, MaxConnsPerIP: 3} })
		for i := range 3 {
			g.dial(visitorsPath(community1), member(t, "u"+string(rune('a'+i)))).readType("visitor_count")
		}
		d := websocket.Dialer{Subprotocols: []string{"bearer", member(t, "late")}}
		_, resp, err := d.Dial(g.wsURL(visitorsPath(community1)), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("4th connection from one IP: %v; want HTTP 429", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if err := g.spec.Response(resp.Request, resp.StatusCode, resp.Header, body); err != nil {
			t.Error(err)
		}
		// SSE counts against the same limit.
		g.openSSE(ssePath(community1)+"?token="+member(t, "late"), nil, http.StatusTooManyRequests)
	})
	t.Run("new connections per second", func(t *testing.T) {
		g := newGateway(t, func(o *api.Options) { o.Limits = api.Limits{ConnRatePerIP: 2, MaxConnsPerIP: 100} })
		refused := 0
		for range 10 { // burst is twice the rate: 4 pass at once
			code, _, _ := g.get(countlessSSE(), nil)
			if code == http.StatusTooManyRequests {
				refused++
			}
		}
		if refused < 5 {
			t.Fatalf("%d of 10 immediate connections refused; want at least 5 over a rate of 2/s", refused)
		}
	})
	t.Run("X-Forwarded-For only from trusted proxies", func(t *testing.T) {
		untrusted := newGateway(t, func(o *api.Options) { o.Limits = api.Limits{ConnRatePerIP: 1000, MaxConnsPerIP: 1} })
		c := untrusted.dialWith(visitorsPath(community1), &websocket.Dialer{Subprotocols: []string{"bearer", member(t, "a")}}, http.Header{"X-Forwarded-For": {"203.0.113.1"}})
		c.readType("visitor_count")
		// A different X-Forwarded-For does not make a new address.
		_, resp, err := (&websocket.Dialer{Subprotocols: []string{"bearer", member(t, "b")}}).Dial(untrusted.wsURL(visitorsPath(community1)), http.Header{"X-Forwarded-For": {"203.0.113.2"}})
		if err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("spoofed X-Forwarded-For from an untrusted peer: %v; want 429", err)
		}

		_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
		trusted := newGateway(t, func(o *api.Options) {
			o.Limits = api.Limits{ConnRatePerIP: 1000, MaxConnsPerIP: 1, TrustedProxies: []*net.IPNet{loopback}}
		})
		for i, ip := range []string{"203.0.113.1", "203.0.113.2"} {
			trusted.dialWith(visitorsPath(community1), &websocket.Dialer{Subprotocols: []string{"bearer", member(t, "p"+string(rune('a'+i)))}}, http.Header{"X-Forwarded-For": {ip}}).readType("visitor_count")
		}
	})
}

// countlessSSE is a stream path whose request is refused without a
// credential once admitted (401) or by the limit (429), so no stream stays
// open.
func countlessSSE() string { return ssePath(community1) }

// TestInboundRateLimitCloses: a connection that keeps exceeding the
// message rate is closed with 1008 after 10 s of it.
func TestInboundRateLimitCloses(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "flood"))
	c.readType("visitor_count")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			if c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // 50 a second, over 10
		}
	}()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	limited := 0
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != websocket.ClosePolicyViolation {
				t.Fatalf("connection ended with %v; want close 1008", err)
			}
			break
		}
		if strings.Contains(string(data), `"rate_limited"`) {
			limited++
		}
	}
	c.conn.Close()
	<-done
	if limited == 0 {
		t.Fatalf("closed with 1008 without rate_limited errors first")
	}
}

// TestRESTRequestLimit: the REST snapshots are limited per client address
// (they had no limit); over it, 429 with the JSON error body and
// Retry-After, while another address is still served.
func TestRESTRequestLimit(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	g := newGateway(t, func(o *api.Options) {
		o.Limits = api.Limits{ConnRatePerIP: 1e6, MaxConnsPerIP: 1e6, RequestRatePerIP: 2, TrustedProxies: []*net.IPNet{loopback}}
	})
	tok := member(t, "poller")
	poll := func(path, from string) (int, http.Header, string) {
		req, _ := http.NewRequest(http.MethodGet, g.ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(body)
	}
	for _, path := range []string{"/api/v1/communities/" + community1 + "/visitors/count", "/api/v1/communities/" + community1 + "/visitor-dashboard"} {
		from := "203.0.113." + strconv.Itoa(len(path)) // an address of its own per route
		limited := 0
		for range 10 { // burst is twice the rate: 4 pass at once
			code, hdr, body := poll(path, from)
			if code != http.StatusTooManyRequests {
				continue
			}
			limited++
			var e struct{ Error, Message string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "rate_limited" || e.Message == "" || hdr.Get("Retry-After") == "" {
				t.Fatalf("GET %s over the limit = 429 %s (Retry-After %q); want {\"error\":\"rate_limited\",\"message\":…} and Retry-After", path, body, hdr.Get("Retry-After"))
			}
		}
		if limited < 5 {
			t.Fatalf("GET %s: %d of 10 immediate requests refused; want at least 5 over a rate of 2/s", path, limited)
		}
		if code, _, body := poll(path, "198.51.100.1"); code == http.StatusTooManyRequests {
			t.Fatalf("GET %s from another address = 429 %s; want it served", path, body)
		}
	}
}

// TestIPv6LimitsPer64: per-address limits key an IPv6 client by its /64
// (per /128, so one client had billions of addresses).
func TestIPv6LimitsPer64(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	g := newGateway(t, func(o *api.Options) {
		o.Limits = api.Limits{ConnRatePerIP: 1000, MaxConnsPerIP: 1, TrustedProxies: []*net.IPNet{loopback}}
	})
	dial := func(sub, from string) (*http.Response, error) {
		c, resp, err := (&websocket.Dialer{Subprotocols: []string{"bearer", member(t, sub)}}).Dial(g.wsURL(visitorsPath(community1)), http.Header{"X-Forwarded-For": {from}})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return resp, err
	}
	if _, err := dial("a", "2001:db8:1:2::1"); err != nil {
		t.Fatal(err)
	}
	if resp, err := dial("b", "2001:db8:1:2:ffff::2"); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a second connection from the same /64: %v; want 429", err)
	}
	if _, err := dial("c", "2001:db8:1:3::1"); err != nil {
		t.Fatalf("a connection from another /64: %v; want it admitted", err)
	}
}
