package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
	"golang.org/x/time/rate"
)

// Inbound WebSocket messages: rate limiting, decoding and the answers (ping,
// request_count, auth). Reading them off the socket is
// api/internal/transport's.

// wsReadState is the inbound rate limiting of one connection, made with its
// first message (most clients send none). Only the reader uses it.
type wsReadState struct {
	lim                       *rate.Limiter
	limitedSince, lastRefused time.Time
}

// readOne reads and handles one client message. done says the connection
// ended, with the close code the peer sent (or 0).
func (s *Server) readOne(ws *transport.WS, c *client) (code int, done bool) {
	defer func() {
		// A panic while handling one client's message ends that
		// connection only.
		if p := recover(); p != nil {
			s.log.Error("panic in connection reader", "conn", c.id, "community", c.community, "panic", p, "stack", string(debug.Stack()))
			c.closeWith(transport.CloseInternalError, "internal error")
			code, done = transport.CloseInternalError, true
		}
	}()
	text, data, code, done := ws.Read()
	if done {
		return code, true
	}
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
			c.closeWith(transport.ClosePolicy, "rate limit exceeded")
			return 0, false
		}
		c.send("error", encodeError("rate_limited", "too many messages: slow down"))
		return 0, false
	}
	if !text {
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
