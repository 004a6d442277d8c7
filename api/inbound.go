package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// Inbound WebSocket messages: the reader's idle wait, pings, rate limiting,
// decoding and the answers (ping, request_count, auth).

// prepareReader sets a connection's read limits, deadline and pong handler.
func (s *Server) prepareReader(conn *websocket.Conn, c *client) {
	conn.SetReadLimit(int64(s.limits.MaxFrameBytes))
	_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { extendRead(conn, c); return nil })
}

// extendRead gives a connection that showed a sign of life pongWait more,
// unless it is closing (then the goodbye's deadline stands).
func extendRead(conn *websocket.Conn, c *client) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	}
}

// wsReadState is the inbound rate limiting of one connection, made with its
// first message (most clients send none). Only the reader uses it.
type wsReadState struct {
	lim                       *rate.Limiter
	limitedSince, lastRefused time.Time
}

// wsIdle waits until a client frame is buffered, answering on the way the
// control frames that arrive whole on their own (ping, pong), so that
// gorilla's reader, which handles them in a loop that then waits for the
// next data frame, is only entered when there is a message to read. It
// returns when a frame that gorilla must read (data, close, or anything
// unusual or partial) is at the head of the buffer, or the read failed.
//
// It only ever consumes whole frames at a message boundary, where gorilla
// keeps no state about the stream.
func wsIdle(conn *websocket.Conn, c *client, br *bufio.Reader) error {
	for {
		if br.Buffered() == 0 {
			if err := waitReadable(conn); err != nil {
				return err
			}
			if _, err := br.Peek(1); err != nil {
				return err
			}
		}
		p, _ := br.Peek(br.Buffered())
		// A final, unextended, masked ping or pong of at most 125 bytes,
		// wholly buffered.
		if len(p) < 2 || (p[0] != 0x80|websocket.PingMessage && p[0] != 0x80|websocket.PongMessage) || p[1]&0x80 == 0 {
			return nil
		}
		n := int(p[1] & 0x7f)
		size := 2 + 4 + n
		if n > 125 || len(p) < size {
			return nil
		}
		if p[0]&0x0f == websocket.PongMessage {
			_, _ = br.Discard(size)
			extendRead(conn, c)
			continue
		}
		if err := answerPing(conn, br, p[:size]); err != nil {
			return err
		}
	}
}

// waitReadable waits until the connection has something to read, in as
// few and as small frames as the runtime allows (a TCP connection's
// RawConn). Other connections (TLS) return at once: reading waits then.
//
//go:noinline
func waitReadable(conn *websocket.Conn) error {
	lc, ok := conn.NetConn().(*lazyDeadlineConn)
	if !ok {
		return nil
	}
	return waitConnReadable(lc.Conn)
}

// waitConnReadable waits until a TCP connection has something to read (or
// its read deadline passes); for any other connection it returns at once.
//
//go:noinline
func waitConnReadable(conn net.Conn) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok || !rawWriteSupported {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	// The runtime forgets a readiness it saw before the wait starts, so
	// the socket is asked first (without reading) whether input is there.
	return rc.Read(rawReadable)
}

// answerPing consumes a client's ping frame and answers it with a pong of
// the same payload, as gorilla's default ping handler does, with footfall's
// write wait.
//
//go:noinline
func answerPing(conn *websocket.Conn, br *bufio.Reader, frame []byte) error {
	data := make([]byte, len(frame)-6)
	for i := range data {
		data[i] = frame[6+i] ^ frame[2+i&3]
	}
	_, _ = br.Discard(len(frame))
	err := conn.WriteControl(websocket.PongMessage, data, time.Now().Add(writeWait))
	if err != nil && err != websocket.ErrCloseSent {
		if _, ok := err.(net.Error); !ok {
			return err
		}
	}
	return nil
}

// readOne reads and handles one client message. done says the connection
// ended, with the close code the peer sent (or 0).
func (s *Server) readOne(conn *websocket.Conn, c *client) (code int, done bool) {
	defer func() {
		// A panic while handling one client's message ends that
		// connection only.
		if p := recover(); p != nil {
			s.log.Error("panic in connection reader", "conn", c.id, "community", c.community, "panic", p, "stack", string(debug.Stack()))
			c.closeWith(websocket.CloseInternalServerErr, "internal error")
			code, done = websocket.CloseInternalServerErr, true
		}
	}()
	mt, data, err := conn.ReadMessage()
	if errors.Is(err, websocket.ErrReadLimit) {
		// gorilla has sent close 1009. Discard the rest of the frame for
		// a moment, so that closing does not reset the connection and
		// lose that close frame before the peer reads it.
		_ = conn.SetReadDeadline(time.Now().Add(closeWait))
		_, _ = io.Copy(io.Discard, conn.NetConn())
		return websocket.CloseMessageTooBig, true
	}
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, true
		}
		return 0, true
	}
	extendRead(conn, c)
	now := time.Now()
	rs := c.rs
	if rs == nil {
		rs = &wsReadState{lim: rate.NewLimiter(rate.Limit(s.limits.MessageRate), s.limits.MessageBurst)}
		c.rs = rs
	}
	if !rs.lim.AllowN(now, 1) {
		if rs.limitedSince.IsZero() || now.Sub(rs.lastRefused) > time.Second {
			rs.limitedSince = now
		}
		rs.lastRefused = now
		if now.Sub(rs.limitedSince) >= rateLimitClose {
			c.closeWith(websocket.ClosePolicyViolation, "rate limit exceeded")
			return 0, false
		}
		c.send("error", encodeError("rate_limited", "too many messages: slow down"))
		return 0, false
	}
	if mt != websocket.TextMessage {
		c.send("error", encodeError("invalid_message", "binary frames are not supported; send JSON text"))
		return 0, false
	}
	msg, ierr := decodeInbound(data, s.limits.MaxMessageBytes)
	if ierr != nil {
		c.send("error", encodeError(ierr.code, ierr.message))
		return 0, false
	}
	s.handleInbound(c, msg)
	return 0, false
}

// inbound is a decoded client message.
type inbound struct {
	Type  string
	Token string
}

type inboundError struct {
	code, message string
}

// decodeInbound parses one client message (docs/protocol.md, streams) of at most
// maxBytes.
func decodeInbound(data []byte, maxBytes int) (inbound, *inboundError) {
	if len(data) > maxBytes {
		return inbound{}, &inboundError{"message_too_large", "messages are limited to " + strconv.Itoa(maxBytes) + " bytes"}
	}
	if !json.Valid(data) {
		return inbound{}, &inboundError{"invalid_json", "message is not valid JSON"}
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return inbound{}, &inboundError{"invalid_message", "a message is a JSON object with a \"type\""}
	}
	var raw struct {
		Type  json.RawMessage `json:"type"`
		Token json.RawMessage `json:"token"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return inbound{}, &inboundError{"invalid_message", "a message is a JSON object with a \"type\""}
	}
	var m inbound
	if raw.Type == nil || json.Unmarshal(raw.Type, &m.Type) != nil {
		return inbound{}, &inboundError{"invalid_message", "\"type\" must be a string"}
	}
	switch m.Type {
	case "ping", "request_count":
	case "auth":
		if raw.Token == nil || json.Unmarshal(raw.Token, &m.Token) != nil || m.Token == "" {
			return inbound{}, &inboundError{"invalid_message", "\"token\" must be a non-empty string"}
		}
	default:
		return inbound{}, &inboundError{"unknown_type", "unknown message type; expected ping, request_count or auth"}
	}
	return m, nil
}

func (s *Server) handleInbound(c *client, m inbound) {
	now := s.now()
	switch m.Type {
	case "ping":
		b, _ := json.Marshal(struct {
			Type      string `json:"type"`
			Timestamp string `json:"timestamp"`
		}{"pong", rfc3339(now)})
		c.send("pong", b)
	case "request_count":
		c.requestCount(now)
	case "auth":
		s.refreshAuth(c, m.Token)
	}
}

// refreshAuth applies {"type":"auth"} (docs/protocol.md, fine print): a token for the
// same sub that still grants the stream extends the connection's life.
func (s *Server) refreshAuth(c *client, token string) {
	ident, err := s.verifier.Verify(token)
	if err != nil {
		var ae *auth.Error
		code := "invalid_token"
		if errors.As(err, &ae) && ae.Code == auth.CodeExpired {
			code = "expired"
		}
		c.send("error", encodeError(code, "token refused: the connection keeps its current credential"))
		return
	}
	cur := c.identity()
	// The same visitor: the same sub, and anonymous or not as before (the
	// anonymous x and the user x are two visitors).
	if ident.Subject != cur.Subject || ident.Anonymous != cur.Anonymous || !ident.Allows(c.community, c.stream) {
		c.send("error", encodeError("forbidden", "token is for another user or does not grant this stream"))
		return
	}
	ident.SessionID = cur.SessionID
	c.mu.Lock()
	c.ident = ident
	c.mu.Unlock()
	b, _ := json.Marshal(struct {
		Type      string `json:"type"`
		ExpiresAt string `json:"expires_at"`
	}{"auth_ok", rfc3339(ident.ExpiresAt)})
	c.send("auth_ok", b)
}
