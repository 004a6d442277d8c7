package api

import (
	"log/slog"
	"testing"
	"time"
)

// panicky is a transport whose writes panic.
type panicky struct{ ended chan struct{} }

func (panicky) write(outMsg) error       { panic("boom") }
func (panicky) keepalive() error         { return nil }
func (p panicky) end(code int, _ string) { close(p.ended) }

// TestWriterPanicEndsOnlyItsConnection: a panic in a connection's writer
// is recovered and marks that client closed; the process lives on.
func TestWriterPanicEndsOnlyItsConnection(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now}
	c := &client{srv: s, wake: make(chan struct{}, 1), done: make(chan struct{}), keepaliveEvery: time.Hour, ident: nil}
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
