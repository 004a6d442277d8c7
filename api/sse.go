package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// SSE streams. The connection itself (r3labs/sse sessions, the hijacked
// response written in chunks, parking, hang-up detection) is
// api/internal/transport's; what is api's:
//
//   - Fanout: the Hub and the client do it, and counts are per-client state
//     (coalesced, with `change` relative to what that client was sent); the
//     transport only carries one client's already-decided messages.
//   - Replay and ids: event ids come from the bus; Last-Event-ID (or
//     ?last_event_id=) is answered from the bus history before the stream
//     starts, and never reaches r3labs (it answers 400 to a non-numeric one).
//   - Auth runs before the stream starts, with the contract's JSON errors.
//   - Heartbeats are comment events booked as the client's alarm.

// sseShutdownRetry is the reconnection delay sent when a node stops
// (reconnect at once, elsewhere).
const sseShutdownRetry = "250"

// maxLastEventIDBytes bounds a Last-Event-ID; a longer one is unknown.
const maxLastEventIDBytes = 128

// serveSSE serves one of a community's SSE streams.
//
// An HTTP/1.1 connection is hijacked once the client is authenticated and
// attached, and the handler returns ("hijack and return", as for
// WebSockets): net/http's buffers, background reader, request and contexts
// are freed, and the transport runs the stream on goroutines of its own.
// Other connections (HTTP/2, HTTP/1.0) are served inside the handler, in
// one session.
func (s *Server) serveSSE(stream streams.Stream) echo.HandlerFunc {
	return func(ec echo.Context) error {
		community, err := community(ec)
		if err != nil {
			return err
		}
		if err := s.refuseWhileDraining(ec); err != nil {
			return err
		}
		r := ec.Request()
		reqID := requestID(ec)
		who, err := s.identify(r, ec.Response().Header(), ec.RealIP(), auth.Extract(r), community, stream, "sse")
		ident := who.ident
		if err != nil {
			code, reason := closeFor(err)
			s.log.Info("connection refused", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "code", code, "reason", reason)
			s.metrics.refusedWith("sse", code)
			return err
		}
		lastID := r.Header.Get("Last-Event-ID")
		if lastID == "" {
			lastID = r.URL.Query().Get("last_event_id")
		}

		c := s.newClient("sse", community, stream, ident)
		c.reqID = reqID
		c.hook = who.grant
		tr := s.sse.NewConn(c.id, sseGoodbye)
		c.tr = tr
		c.keepaliveEvery = s.opts.SSEHeartbeat

		snap, cleanup, err := s.attach(r.Context(), c)
		if err != nil {
			s.log.Warn("attach failed", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "err", err)
			return err
		}
		var missed []streams.Event
		resumed := false
		// A resume replays the missed events only when they fit in what
		// the stream can take at once; a longer gap, or an id too long to
		// be one of ours, gets a fresh snapshot instead (docs/protocol.md,
		// SSE resume).
		if lastID != "" && len(lastID) <= maxLastEventIDBytes {
			m, ok, err := s.bus.History(r.Context(), community, lastID, transport.SSEMaxReplay)
			if err != nil {
				s.log.Warn("history failed", "request_id", reqID, "community", community, "err", err)
			}
			if ok && err == nil {
				missed, resumed = m, true
			}
		}

		// The response: the hijacked connection, or (HTTP/2, HTTP/1.0) the
		// handler's own ResponseWriter, which cannot park (the handler has
		// to stay up for it anyway).
		hijacked := false
		if r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 {
			if tr.Hijack(ec.Response(), ec.Response().Header().Clone()) {
				hijacked = true
				ec.Response().Committed, ec.Response().Status = true, http.StatusOK // for the access log
				c.releaseSlot = takeConnSlot(ec)
			}
		}
		if !hijacked {
			tr.Respond(r.Context(), ec.Response())
		}

		done := make(chan struct{})
		start := time.Now()
		tr.Start(func() {
			s.endSSE(c, tr, cleanup, start)
			close(done)
		})
		// r3labs flushes the headers once the subscriber is attached; the
		// stream's first message waits for that flush (events meanwhile
		// wait in early).
		select {
		case <-tr.Attached():
			if resumed {
				c.resume(missed, snap)
			} else {
				c.begin(snap)
			}
			s.log.Info("connection open", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "conn", c.id, "sub", ident.Subject, "resumed", resumed)
		case <-done:
		}
		if !hijacked {
			<-done // the handler's ResponseWriter is only valid until it returns
		}
		return nil
	}
}

// endSSE ends a connection whose last session has ended: it runs on the
// connection's stream goroutine.
func (s *Server) endSSE(c *client, t *transport.SSE, cleanup func(), start time.Time) {
	c.finish()
	t.Stop()
	c.writers.Wait()
	t.Finish()
	c.mu.Lock()
	code := c.code
	c.mu.Unlock()
	s.metrics.ended(c, code, time.Since(start))
	s.log.Info("connection closed", "request_id", c.reqID, "community", c.community, "stream", string(c.stream), "transport", "sse",
		"conn", c.id, "code", code, "duration_ms", time.Since(start).Milliseconds())
	if c.releaseSlot != nil {
		c.releaseSlot()
	}
	cleanup()
}

// sseGoodbye is the last event of a stream the server ends: an `error`
// event on expiry or revocation, a `shutdown` event with a short retry hint
// when the node stops (docs/protocol.md, streams and shutdown).
func sseGoodbye(code int, reason string) (transport.Message, bool) {
	switch code {
	case int(auth.CodeExpired):
		data, _ := json.Marshal(errorMessage{Type: "error", Code: "expired", Message: reason})
		return transport.Message{Type: "error", Data: data}, true
	case closeGoingAway:
		data, _ := json.Marshal(struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}{"shutdown", "node shutting down; reconnect"})
		return transport.Message{Type: "shutdown", Data: data, Retry: sseShutdownRetry}, true
	}
	return transport.Message{}, false
}
