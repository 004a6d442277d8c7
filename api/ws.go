package api

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
)

// Timings (variables so that a test can shorten them).
var (
	// writeWait bounds every write: a client that does not take a frame in
	// this time is gone.
	writeWait = 10 * time.Second
	// pingEvery is the WebSocket keepalive; pongWait is how long a silent
	// peer is kept.
	pingEvery = 25 * time.Second
	pongWait  = 60 * time.Second
)

const (
	// closeWait is how long a server-initiated close waits for the peer's
	// answer before dropping the TCP connection.
	closeWait = 2 * time.Second

	// rateLimitClose: a connection that stays over its inbound rate limit
	// (Limits.MessageRate) this long is closed with 1008.
	rateLimitClose = 10 * time.Second
)

var writeBufferPool = &sync.Pool{}

// wsReadBufferSize is a connection's read buffer: client messages are
// small (ping, request_count, auth), and a larger frame is read in several
// calls. footfall makes the buffer itself (wsHijacker) so that the reader
// can see what it holds; gorilla adopts a hijacked reader of more than 256
// bytes, which also holds any control frame whole (at most 131 bytes).
const wsReadBufferSize = 288

func (s *Server) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		// 0: gorilla reads through the buffer wsHijacker returns.
		ReadBufferSize:  0,
		WriteBufferPool: writeBufferPool,
		// Origins are checked by checkOrigin before the upgrade, with an
		// HTTP 403 (docs/protocol.md, fine print).
		CheckOrigin: func(*http.Request) bool { return true },
	}
}

// serveWS serves one of a community's WebSocket streams. The upgrade is
// always accepted once the route, community id and Origin are fine;
// authentication outcomes are close codes 4001-4004 (docs/protocol.md, outcomes).
//
// The handler returns as soon as the connection is authenticated and
// attached ("hijack and return"): net/http's buffers, the request and its
// contexts are freed, and the connection lives on in one reader goroutine
// (wsReader), which the Server owns through its registered clients. A
// writer goroutine runs only while something is being written.
func (s *Server) serveWS(stream streams.Stream) echo.HandlerFunc {
	up := s.upgrader()
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
		h := &wsHijacker{Response: c.Response()}
		conn, err := up.Upgrade(h, r, hdr)
		if err != nil {
			// The upgrader has answered with an HTTP error already.
			return nil
		}
		if lc, ok := conn.NetConn().(*lazyDeadlineConn); ok {
			lc.wmu.Lock()
			lc.framed = true
			lc.wmu.Unlock()
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
			refuse(conn, code, reason)
			return nil
		}
		s.startWS(c, conn, h.br, community, stream, ident, who.grant, reqID)
		return nil
	}
}

// closeFor maps an authentication error to a close code and a reason.
func closeFor(err error) (int, string) {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return int(ae.Code), ae.Reason
	}
	return websocket.CloseInternalServerErr, "internal error"
}

// refuse closes a just-upgraded connection with code, waiting briefly for
// the peer's answer so that browsers see the code.
func refuse(conn *websocket.Conn, code int, reason string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(writeWait))
	_ = conn.SetReadDeadline(time.Now().Add(closeWait))
	for {
		if _, _, err := conn.NextReader(); err != nil {
			break
		}
	}
	_ = conn.Close()
}

// startWS attaches an authenticated connection and starts its reader
// goroutine, which runs the connection until it ends.
func (s *Server) startWS(ec echo.Context, conn *websocket.Conn, br *bufio.Reader, community string, stream streams.Stream, ident *auth.Identity, grant *hookGrant, reqID string) {
	ctx := ec.Request().Context()
	start := time.Now()
	c := s.newClient("websocket", community, stream, ident)
	c.reqID = reqID
	c.hook = grant
	c.tr = newWSTransport(conn)
	c.keepaliveEvery = pingEvery

	snap, cleanup, err := s.attach(ctx, c)
	if err != nil {
		s.log.Warn("attach failed", "request_id", reqID, "community", community, "stream", string(stream), "transport", "websocket", "err", err)
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "temporarily unavailable"), time.Now().Add(writeWait))
		_ = conn.Close()
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
	go s.wsReader(conn, c, br, cleanup, start)
}

// wsReader is a WebSocket connection's only permanent goroutine: it reads
// client messages, then ends the connection.
//
// While the client is silent it waits in wsIdle, a few calls deep, and not
// inside gorilla's frame reader: an idle connection's goroutine then keeps
// the smallest stack (2 KiB instead of 4), which is a third of what an idle
// connection costs. br is the connection's read buffer (nil: wait in
// gorilla).
func (s *Server) wsReader(conn *websocket.Conn, c *client, br *bufio.Reader, cleanup func(), start time.Time) {
	s.prepareReader(conn, c)
	var code int
	for {
		if br != nil {
			if err := wsIdle(conn, c, br); err != nil {
				// Gone, or silent past the read deadline. As gorilla: a
				// connection that ends without a close frame is 1006.
				if errors.Is(err, io.EOF) {
					code = websocket.CloseAbnormalClosure
				}
				break
			}
		}
		var done bool
		if code, done = s.readOne(conn, c); done {
			break
		}
	}
	s.endWS(conn, c, code, cleanup, start)
}

// endWS ends a connection whose reader returned with the peer's close code
// (or 0).
func (s *Server) endWS(conn *websocket.Conn, c *client, code int, cleanup func(), start time.Time) {
	c.finish()
	_ = conn.Close() // a writer blocked on a dead peer returns now
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
