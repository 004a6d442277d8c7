package api_test

import (
	"io"
	"net/http"
	"testing"

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
