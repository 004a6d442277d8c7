package api_test

import (
	"io"
	"net"
	"net/http"
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
