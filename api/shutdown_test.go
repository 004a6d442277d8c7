package api_test

import (
	"context"
	"errors"
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

// TestShutdownWaitsForStreams: Shutdown returns once every stream has
// gone, with nothing open behind it; a second call returns at once.
func TestShutdownWaitsForStreams(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	for _, sub := range []string{"a", "b", "c"} {
		c := g.dial(visitorsPath(community1), member(t, sub))
		c.readType("visitor_count")
		go func() { _, _, _ = c.conn.ReadMessage() }() // answers the close
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v; want nil", err)
	}
	if n := g.srv.OpenClients(); n != 0 {
		t.Fatalf("%d streams open after Shutdown; want 0", n)
	}
	if code, _, _ := g.getRaw("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Shutdown = %d; want 503", code)
	}
	if err := g.srv.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown = %v; want nil", err)
	}
}

// TestShutdownDeadline: a stream whose client never answers the goodbye
// makes Shutdown return ctx.Err() at the deadline, and it is cut then.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "silent"))
	c.readType("visitor_count") // and nothing more: the close is never answered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown took %v past a 200 ms deadline", d)
	}
	deadline := time.Now().Add(time.Second) // well within the 2 s a goodbye waits
	for g.srv.OpenClients() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream still open at the deadline was not cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
