package api_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/streams"
)

// stallingBus holds a visitors stream's presence Touch (the last step of a
// connection's set-up) until release is closed, and says when one arrived.
type stallingBus struct {
	streams.Bus
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *stallingBus) Touch(ctx context.Context, s streams.Source) (streams.PresenceResult, error) {
	if s.TTL == 0 {
		b.once.Do(func() { close(b.arrived) })
		<-b.release
	}
	return b.Bus.Touch(ctx, s)
}

// TestRevocationDuringSetUp: a session revoked while one of its
// connections is being set up (authenticated, not yet registered) still
// closes that connection with 4004. The connection used to miss the
// revocation and stay open.
func TestRevocationDuringSetUp(t *testing.T) {
	var bus *stallingBus
	g := newGateway(t, func(o *api.Options) {
		bus = &stallingBus{Bus: o.Bus, arrived: make(chan struct{}), release: make(chan struct{})}
		o.Bus = bus
	})
	code, m := g.service("POST", "/api/v1/sessions", map[string]any{"user_id": "s", "communities": map[string]string{community1: "member"}})
	if code != 201 {
		t.Fatalf("create session = %d %v", code, m)
	}
	sid := m.str("session_id")
	dialed := make(chan *wsClient, 1)
	go func() {
		dialed <- g.dialWith(visitorsPath(community1), &websocket.Dialer{}, http.Header{"Cookie": {"footfall_session=" + sid}})
	}()
	select {
	case <-bus.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection's set-up never reached its presence Touch")
	}
	if code, _ := g.service("DELETE", "/api/v1/sessions/"+sid, nil); code != 204 {
		t.Fatalf("revoke = %d; want 204", code)
	}
	close(bus.release)
	c := <-dialed
	c.expectClose(4004)
}
