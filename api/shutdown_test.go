package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/gorilla/websocket"
)

// TestShutdownHandover: a node that stops closes WebSockets with 1001, ends
// SSE streams with a shutdown event and a short retry hint, and keeps its
// visitors present for the TTL, so that a client moving to another node
// causes no leave/join flicker.
func TestShutdownHandover(t *testing.T) {
	b := newGateway(t, func(o *api.Options) { o.PresenceTTL = time.Second })
	a := newGateway(t, func(o *api.Options) { o.Bus = b.bus; o.PresenceTTL = time.Second })

	watcher := b.dial(visitorsPath(community1), member(t, "watcher"))
	watcher.readType("visitor_count")
	alice := a.dial(visitorsPath(community1), member(t, "alice"))
	alice.readType("visitor_count")
	watcher.readType("visitor_joined")
	sse := a.openSSE(ssePath(community1)+"?token="+member(t, "bob"), nil, http.StatusOK)
	sse.nextType("visitor_count")
	watcher.readType("visitor_joined")
	dave := a.dial(visitorsPath(community1), member(t, "dave"))
	dave.readType("visitor_count")
	watcher.readType("visitor_joined")

	drained := time.Now()
	a.srv.Drain()
	alice.expectClose(websocket.CloseGoingAway)
	dave.expectClose(websocket.CloseGoingAway)
	rest := sse.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "shutdown" || rest[len(rest)-1].Retry == "" {
		t.Fatalf("SSE stream ended with %+v; want a shutdown event with a retry hint", rest)
	}
	if code, _, _ := a.getRaw("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d; want 503", code)
	}

	// Alice and bob come back on node b within the TTL; dave does not. The
	// watcher's next message is dave's leave, after the TTL: no flicker for
	// the others.
	b.dial(visitorsPath(community1), member(t, "alice")).readType("visitor_count")
	b.openSSE(ssePath(community1)+"?token="+member(t, "bob"), nil, http.StatusOK).nextType("visitor_count")
	if m := watcher.readTypeWithin("visitor_left", 4*time.Second); m.num("count") != 3 {
		t.Fatalf("after the handover: %v; want dave's visitor_left with count 3", m)
	}
	// Had anyone left at once, a visitor_left would have come right away.
	if d := time.Since(drained); d < 900*time.Millisecond {
		t.Fatalf("the first visitor_left came %v after the drain; want it after the 1s TTL", d)
	}
	watcher.quiet()
}
