package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// rateLimitClose: a connection that stays over its inbound rate limit
// (Limits.MessageRate) this long is closed with 1008.
const rateLimitClose = 10 * time.Second

// serveWS serves one of a community's WebSocket streams. The upgrade is
// always accepted once the route, community id and Origin are fine;
// authentication outcomes are close codes 4001-4004 (docs/protocol.md, outcomes).
//
// The handler returns as soon as the connection is authenticated and
// attached ("hijack and return"): net/http's buffers, the request and its
// contexts are freed, and the connection lives on in one reader goroutine
// (wsReader), which the Server owns through its registered clients. A
// writer goroutine runs only while something is being written. The socket
// itself is api/internal/transport's.
func (s *Server) serveWS(stream streams.Stream) echo.HandlerFunc {
	return func(c echo.Context) error {
		community, err := community(c)
		if err != nil {
			return err
		}
		if err := s.refuseWhileDraining(c); err != nil {
			return err
		}
		r := c.Request()
		cred := auth.Extract(r)
		hdr := http.Header{}
		if cred.Subprotocol != "" {
			hdr.Set("Sec-WebSocket-Protocol", cred.Subprotocol)
		}
		// Without a footfall credential the request is decided before the
		// upgrade (the auth hook, then a guest, whose cookie goes out on
		// the handshake's answer); its outcome is a close code after it.
		var who identified
		var whoErr error
		if cred.Source == auth.SourceNone {
			who, whoErr = s.withoutCredential(r, hdr, c.RealIP(), community, stream, "websocket")
		}
		ws, err := transport.Upgrade(c.Response(), r, hdr, &s.tm)
		if err != nil {
			// The upgrader has answered with an HTTP error already.
			return nil
		}
		reqID := requestID(c)
		if cred.Source != auth.SourceNone {
			who.ident, whoErr = s.verifier.Authorize(r.Context(), cred, s.bus, community, stream)
		}
		ident, err := who.ident, whoErr
		if err != nil {
			code, reason := closeFor(err)
			s.log.Info("connection refused", "request_id", reqID, "community", community, "stream", string(stream), "transport", "websocket", "code", code, "reason", reason)
			s.metrics.refusedWith("websocket", code)
			ws.Refuse(code, reason)
			return nil
		}
		s.startWS(c, ws, community, stream, ident, who.grant, reqID)
		return nil
	}
}

// closeFor maps an authentication error to a close code and a reason.
func closeFor(err error) (int, string) {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return int(ae.Code), ae.Reason
	}
	return transport.CloseInternalError, "internal error"
}

// startWS attaches an authenticated connection and starts its reader
// goroutine, which runs the connection until it ends.
func (s *Server) startWS(ec echo.Context, ws *transport.WS, community string, stream streams.Stream, ident *auth.Identity, grant *hookGrant, reqID string) {
	ctx := ec.Request().Context()
	start := time.Now()
	c := s.newClient("websocket", community, stream, ident)
	c.reqID = reqID
	c.hook = grant
	c.tr = ws
	c.keepaliveEvery = s.tm.PingEvery

	snap, cleanup, err := s.attach(ctx, c)
	if err != nil {
		s.log.Warn("attach failed", "request_id", reqID, "community", community, "stream", string(stream), "transport", "websocket", "err", err)
		ws.Drop(transport.CloseInternalError, "temporarily unavailable")
		return
	}
	c.begin(snap)
	c.releaseSlot = takeConnSlot(ec)
	s.log.Info("connection open", "request_id", reqID, "community", community, "stream", string(stream), "transport", "websocket", "conn", c.id, "sub", ident.Subject)
	// The reader goroutine owns the connection from here: it ends when the
	// peer goes or closes, or when the writer said goodbye (closeWith:
	// expiry, revocation, Drain) or failed, both of which bound its wait
	// with a read deadline. The Server counts it in OpenClients until its
	// very end (cleanup unregisters last).
	go s.wsReader(ws, c, cleanup, start)
}

// wsReader is a WebSocket connection's only permanent goroutine: it reads
// client messages, then ends the connection.
//
// While the client is silent it waits in ws.Idle, a few calls deep and not
// inside gorilla's frame reader, so that its stack stays the smallest.
func (s *Server) wsReader(ws *transport.WS, c *client, cleanup func(), start time.Time) {
	ws.StartReading(int64(s.limits.MaxFrameBytes), c)
	var code int
	for {
		var ok bool
		if code, ok = ws.Idle(); !ok {
			break // gone, or silent past the read deadline
		}
		var done bool
		if code, done = s.readOne(ws, c); done {
			break
		}
	}
	s.endWS(ws, c, code, cleanup, start)
}

// endWS ends a connection whose reader returned with the peer's close code
// (or 0).
func (s *Server) endWS(ws *transport.WS, c *client, code int, cleanup func(), start time.Time) {
	c.finish()
	ws.Shut() // a writer blocked on a dead peer returns now
	c.writers.Wait()
	c.mu.Lock()
	if c.code != 0 {
		code = c.code
	}
	c.mu.Unlock()
	s.metrics.ended(c, code, time.Since(start))
	s.log.Info("connection closed", "request_id", c.reqID, "community", c.community, "stream", string(c.stream), "transport", c.transport,
		"conn", c.id, "code", code, "duration_ms", time.Since(start).Milliseconds())
	c.releaseSlot()
	cleanup()
}
