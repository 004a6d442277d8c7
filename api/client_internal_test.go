package api

import (
	"strings"

	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
	"log/slog"
	"testing"
	"time"
)

// panicky is a transport whose writes panic.
type panicky struct{ ended chan struct{} }

func (panicky) Send(transport.Message) error { panic("boom") }
func (panicky) Keepalive() error             { return nil }
func (p panicky) Close(code int, _ string)   { close(p.ended) }
func (panicky) Abort()                       {}
func (panicky) Inline() bool                 { return false }

// TestWriterPanicEndsOnlyItsConnection: a panic in a connection's writer
// is recovered and marks that client closed; the process lives on.
func TestWriterPanicEndsOnlyItsConnection(t *testing.T) {
	env := &clientEnv{log: slog.New(slog.DiscardHandler), now: time.Now}
	c := &client{env: env, keepaliveEvery: time.Hour, ident: nil}
	c.tr = panicky{ended: make(chan struct{})}
	c.queue = []outMsg{{typ: "pong", data: []byte(`{}`)}}
	finished := make(chan struct{})
	go func() { defer close(finished); c.runWriter() }()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("runWriter did not return after a panic")
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		t.Fatal("after a writer panic the client is not closing")
	}
}

// TestRefreshConverges: a refresh that finds another count than the one a
// visitors client was sent (after a bus reconnect) sends it a visitor_count
// with the change; one that finds the same sends nothing.
func TestRefreshConverges(t *testing.T) {
	env := &clientEnv{log: slog.New(slog.DiscardHandler), now: time.Now}
	// writing: as if a writer were running, so that Deliver only records
	// and collect below takes what it recorded.
	c := &client{env: env, stream: streams.StreamVisitors, community: "c1", begun: true, writing: true}
	c.count, c.sentCount, c.seq = 5, 5, 10
	c.Deliver(&streams.Event{Type: streams.TypeRefresh, Seq: 10, Count: 5})
	if msgs := c.collect(time.Now()).msgs; len(msgs) != 0 {
		t.Fatalf("refresh with the same count sent %d messages; want none", len(msgs))
	}
	c.Deliver(&streams.Event{Type: streams.TypeRefresh, Seq: 10, Count: 3})
	msgs := c.collect(time.Now()).msgs
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].data), `"type":"visitor_count"`) || !strings.Contains(string(msgs[0].data), `"count":3,"change":-2`) {
		t.Fatalf("refresh with another count sent %v; want one visitor_count with count 3 change -2", msgs)
	}
}
