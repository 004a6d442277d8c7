package api

import "github.com/footfall/footfall/api/internal/transport"

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
