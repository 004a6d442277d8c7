package api

import "time"

// SetKeepaliveForTest shortens the WebSocket keepalive and write wait for
// a test; the returned function restores them. Tests that use it must not
// run in parallel with others.
func SetKeepaliveForTest(ping, write time.Duration) (restore func()) {
	oldPing, oldWrite := pingEvery, writeWait
	pingEvery, writeWait = ping, write
	return func() { pingEvery, writeWait = oldPing, oldWrite }
}

// SetSSELingerForTest shortens how long an idle SSE session stays up before
// it parks; the returned function restores it. Register it with t.Cleanup
// before the gateway, so that it is restored after the gateway closed.
func SetSSELingerForTest(d time.Duration) (restore func()) {
	old := sseLinger
	sseLinger = d
	return func() { sseLinger = old }
}

// SSESessionsForTest reports the node's open SSE connections, how many of
// them are parked (no r3labs session), and the r3labs sessions they have
// started in all.
func (s *Server) SSESessionsForTest() (open, parked int, started int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		t, ok := c.tr.(*sseTransport)
		if !ok {
			continue
		}
		open++
		t.mu.Lock()
		if t.state == sseParked && !t.running {
			parked++
		}
		started += t.started
		t.mu.Unlock()
	}
	return open, parked, started
}

// DropHangupWatcherForTest makes the node notice SSE clients going with a
// reader goroutine per connection, as on a platform without a hangup
// watcher. Call it before any SSE connection opens.
func (s *Server) DropHangupWatcherForTest() {
	if s.hangups != nil {
		s.hangups.Close()
		s.hangups = nil
	}
}
