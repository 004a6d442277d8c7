package api_test

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
