package transport

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// A WebSocket's read side: the idle wait, pings and pongs, read deadlines
// and the peer's close.

// StartReading sets the connection's read limit, its read deadline and its
// pong handler; p says when signs of life stop counting.
func (t *WS) StartReading(limit int64, p Peer) {
	t.peer = p
	t.conn.SetReadLimit(limit)
	_ = t.conn.SetReadDeadline(time.Now().Add(t.tm.PongWait))
	t.conn.SetPongHandler(func(string) error { t.extendRead(); return nil })
}

// extendRead gives a connection that showed a sign of life PongWait more,
// unless it is closing (then the goodbye's deadline stands).
func (t *WS) extendRead() {
	if t.peer == nil || !t.peer.Closing() {
		_ = t.conn.SetReadDeadline(time.Now().Add(t.tm.PongWait))
	}
}

// Idle waits until a client frame is buffered, answering on the way the
// control frames that arrive whole on their own (ping, pong), so that
// gorilla's reader, which handles them in a loop that then waits for the
// next data frame, is only entered when there is a message to read. It
// returns true when a frame that gorilla must read (data, close, or
// anything unusual or partial) is at the head of the buffer, and false
// with the close code to report (1006 for a peer gone without a close
// frame, as gorilla says; else 0) when the connection ended or stayed
// silent past its read deadline.
//
// While the client is silent the reader waits here, a few calls deep, and
// not inside gorilla's frame reader: an idle connection's goroutine then
// keeps the smallest stack (2 KiB instead of 4), which is a third of what
// an idle connection costs.
//
// It only ever consumes whole frames at a message boundary, where gorilla
// keeps no state about the stream.
func (t *WS) Idle() (code int, ok bool) {
	if t.br == nil {
		return 0, true // wait in gorilla
	}
	if err := t.idle(); err != nil {
		if errors.Is(err, io.EOF) {
			return CloseAbnormal, false
		}
		return 0, false
	}
	return 0, true
}

func (t *WS) idle() error {
	br := t.br
	for {
		if br.Buffered() == 0 {
			if err := t.waitReadable(); err != nil {
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
			t.extendRead()
			continue
		}
		if err := t.answerPing(p[:size]); err != nil {
			return err
		}
	}
}

// waitReadable waits until the connection has something to read, in as
// few and as small frames as the runtime allows (a TCP connection's
// RawConn). Other connections (TLS) return at once: reading waits then.
//
//go:noinline
func (t *WS) waitReadable() error {
	if t.lc == nil {
		return nil
	}
	return waitConnReadable(t.lc.Conn)
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
func (t *WS) answerPing(frame []byte) error {
	data := make([]byte, len(frame)-6)
	for i := range data {
		data[i] = frame[6+i] ^ frame[2+i&3]
	}
	_, _ = t.br.Discard(len(frame))
	err := t.conn.WriteControl(websocket.PongMessage, data, time.Now().Add(t.tm.WriteWait))
	if err != nil && err != websocket.ErrCloseSent {
		if _, ok := err.(net.Error); !ok {
			return err
		}
	}
	return nil
}

// Read reads one client message: text says whether it came in a text
// frame. done says the connection ended, with the close code the peer sent
// (or 0; 1009 for a message over the read limit, which gorilla answered).
func (t *WS) Read() (text bool, data []byte, code int, done bool) {
	mt, data, err := t.conn.ReadMessage()
	if errors.Is(err, websocket.ErrReadLimit) {
		// gorilla has sent close 1009. Discard the rest of the frame for
		// a moment, so that closing does not reset the connection and
		// lose that close frame before the peer reads it.
		_ = t.conn.SetReadDeadline(time.Now().Add(CloseWait))
		_, _ = io.Copy(io.Discard, t.conn.NetConn())
		return false, nil, CloseTooBig, true
	}
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return false, nil, ce.Code, true
		}
		return false, nil, 0, true
	}
	t.extendRead()
	return mt == websocket.TextMessage, data, 0, false
}
