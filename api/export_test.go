package api

import (
	"time"

	"github.com/footfall/footfall/api/internal/transport"
)

// SetKeepaliveForTest shortens the WebSocket keepalive and write wait for
// a test; the returned function restores them. Tests that use it must not
// run in parallel with others.
func SetKeepaliveForTest(ping, write time.Duration) (restore func()) {
	oldPing, oldWrite := transport.PingEvery, transport.WriteWait
	transport.PingEvery, transport.WriteWait = ping, write
	return func() { transport.PingEvery, transport.WriteWait = oldPing, oldWrite }
}

// SetSSELingerForTest shortens how long an idle SSE session stays up before
// it parks; the returned function restores it. Register it with t.Cleanup
// before the gateway, so that it is restored after the gateway closed.
func SetSSELingerForTest(d time.Duration) (restore func()) {
	old := transport.SSELinger
	transport.SSELinger = d
	return func() { transport.SSELinger = old }
}

// SSESessionsForTest reports the node's open SSE connections, how many of
// them are parked (no r3labs session), and the r3labs sessions they have
// started in all.
func (s *Server) SSESessionsForTest() (open, parked int, started int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		t, ok := c.tr.(*transport.SSE)
		if !ok {
			continue
		}
		open++
		p, n := t.Sessions()
		if p {
			parked++
		}
		started += n
	}
	return open, parked, started
}

// DropHangupWatcherForTest makes the node notice SSE clients going with a
// reader goroutine per connection, as on a platform without a hangup
// watcher. Call it before any SSE connection opens.
func (s *Server) DropHangupWatcherForTest() { s.sse.DropHangupWatcher() }
