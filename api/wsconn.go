package api

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
)

// The WebSocket connection itself: the hijacked socket gorilla gets, deadlines kept lazily,
// and frames written by footfall without blocking (the writer hand-off).

// wsHijacker hands gorilla the hijacked connection wrapped in a
// lazyDeadlineConn, and a small read buffer of footfall's own, which the
// connection's reader watches (wsIdle).
//
// gorilla sets the connection's write deadline before every frame it
// writes; footfall moves it only every few seconds (wsTransport.write), so
// through lazyDeadlineConn most frames cost no runtime timer update.
type wsHijacker struct {
	*echo.Response
	br *bufio.Reader // the connection's read buffer; nil if gorilla was not given one
}

func (h *wsHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := h.Response.Hijack()
	if err != nil {
		return nil, nil, err
	}
	lc := &lazyDeadlineConn{Conn: conn}
	if brw.Reader.Buffered() > 0 {
		// The client sent data before the handshake ended: gorilla
		// refuses that, seeing it in net/http's reader.
		return lc, brw, nil
	}
	h.br = bufio.NewReaderSize(lc, wsReadBufferSize)
	return lc, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// lazyDeadlineConn is the net.Conn gorilla gets. Its write deadline is
// only passed on when it changes; its writes (gorilla's: the handshake and
// control frames) take wmu, the connection's write lock, so that they never
// land inside a data frame that footfall is writing; and it notes when
// gorilla has written a close frame, after which footfall writes no data.
type lazyDeadlineConn struct {
	net.Conn

	wmu       sync.Mutex // held while writing, and across a half-written frame
	framed    bool       // the handshake is done: writes are frames
	closeSent bool       // a close frame went out (guarded by wmu)

	dmu sync.Mutex
	wd  time.Time
}

func (c *lazyDeadlineConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return 0, websocket.ErrCloseSent
	}
	n, err := c.Conn.Write(p)
	if c.framed && len(p) > 0 && p[0]&0x0f == websocket.CloseMessage {
		c.closeSent = true
	}
	return n, err
}

func (c *lazyDeadlineConn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if t.Equal(c.wd) {
		return nil
	}
	c.wd = t
	return c.Conn.SetWriteDeadline(t)
}

// keepDeadline moves the write deadline to now+writeWait when it is unset
// or less than writeWait/2 away: every frame gets at least writeWait/2 to
// go out, and the deadline (a runtime timer) is touched once every few
// seconds, not once per frame.
func (c *lazyDeadlineConn) keepDeadline(now time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.wd.IsZero() && c.wd.Sub(now) >= writeWait/2 {
		return
	}
	c.wd = now.Add(writeWait)
	_ = c.Conn.SetWriteDeadline(c.wd)
}

func (c *lazyDeadlineConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.wd = t
	return c.Conn.SetDeadline(t)
}

// wsTransport writes a client's messages to a WebSocket.
//
// Data frames are footfall's own (a text frame, unmasked, uncompressed: the
// same bytes for every client, so a broadcast is framed once per node) and
// bypass gorilla, which only writes control frames (ping, pong, close).
// On a plain TCP connection a frame is first tried without blocking, right
// where the message became ready (writeNow, under the client's lock): the
// common case needs no goroutine at all. Only a client whose socket is
// full gets a writer goroutine, which finishes the frame (blocking, with a
// write deadline) and whatever follows, so a slow client holds up no one
// else.
//
// lc.wmu is held by whoever writes to the connection, and across a frame
// left half-written: the inline writer hands it to the writer goroutine
// (held), which writes the rest before anything else.
type wsTransport struct {
	conn *websocket.Conn
	lc   *lazyDeadlineConn
	raw  syscall.RawConn // nil unless a plain TCP connection (TLS: no inline writes)

	held bool   // lc.wmu was handed over by an inline write with rest unwritten
	rest []byte // the unwritten tail of that frame

	// rawWrite's arguments and results, kept here so that a non-blocking
	// write allocates nothing.
	rawFn  func(fd uintptr) bool
	rawBuf []byte
	rawN   int
	rawErr error
}

func newWSTransport(conn *websocket.Conn) *wsTransport {
	t := &wsTransport{conn: conn}
	t.lc, _ = conn.NetConn().(*lazyDeadlineConn)
	if t.lc != nil {
		if tc, ok := t.lc.Conn.(*net.TCPConn); ok && rawWriteSupported {
			if rc, err := tc.SyscallConn(); err == nil {
				t.raw = rc
				t.rawFn = t.rawWrite
			}
		}
	}
	return t
}

// wsTextFrame frames data as a final, unmasked text frame.
func wsTextFrame(data []byte) []byte {
	n := len(data)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xffff:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | websocket.TextMessage
	return append(b, data...)
}

// frame is m as a WebSocket frame, built once per node for shared messages.
func (m outMsg) frame() []byte {
	if m.shared != nil {
		return m.shared.get(m.data)
	}
	return wsTextFrame(m.data)
}

// tryLock takes the connection's write lock if inline writes are possible
// and no one else is writing.
func (t *wsTransport) tryLock() bool { return t.raw != nil && t.lc.wmu.TryLock() }

func (t *wsTransport) unlock() { t.lc.wmu.Unlock() }

// writeNow writes m's frame without blocking and returns what did not fit
// in the socket (nil: all of it). The caller holds lc.wmu.
func (t *wsTransport) writeNow(m outMsg) ([]byte, error) {
	if t.lc.closeSent {
		return nil, websocket.ErrCloseSent
	}
	b := m.frame()
	// A raw write fails once the connection's write deadline has passed,
	// and gorilla's control frames (the keepalive ping, pongs) set it too:
	// keep it ahead of every write, not only the blocking ones.
	t.lc.keepDeadline(time.Now())
	t.rawBuf = b
	err := t.raw.Write(t.rawFn)
	n, werr := t.rawN, t.rawErr
	t.rawBuf, t.rawErr = nil, nil
	if err != nil {
		return nil, err
	}
	if werr != nil {
		if !rawWouldBlock(werr) {
			return nil, werr
		}
		n = 0
	}
	if n >= len(b) {
		return nil, nil
	}
	return b[max(n, 0):], nil
}

func (t *wsTransport) rawWrite(fd uintptr) bool {
	t.rawN, t.rawErr = rawWriteFD(fd, t.rawBuf)
	return true // one attempt: never wait here
}

// hand gives the connection's write lock, with the unwritten rest of a
// frame, to the writer goroutine about to start.
func (t *wsTransport) hand(rest []byte) { t.held, t.rest = true, rest }

// resume writes what an inline write left and releases the write lock it
// handed over. The writer goroutine calls it first.
func (t *wsTransport) resume() error {
	if !t.held {
		return nil
	}
	rest := t.rest
	t.held, t.rest = false, nil
	defer t.lc.wmu.Unlock()
	return t.writeLocked(rest)
}

// writeLocked writes b, blocking, with the write deadline. The caller
// holds lc.wmu.
func (t *wsTransport) writeLocked(b []byte) error {
	if t.lc.closeSent {
		return websocket.ErrCloseSent
	}
	t.lc.keepDeadline(time.Now())
	_, err := t.lc.Conn.Write(b)
	return err
}

func (t *wsTransport) write(m outMsg) error {
	if err := t.resume(); err != nil {
		return err
	}
	if t.lc == nil { // not hijacked by wsHijacker (never in footfall)
		_ = t.conn.SetWriteDeadline(time.Now().Add(writeWait))
		return t.conn.WriteMessage(websocket.TextMessage, m.data)
	}
	b := m.frame()
	t.lc.wmu.Lock()
	defer t.lc.wmu.Unlock()
	return t.writeLocked(b)
}

func (t *wsTransport) keepalive() error {
	if err := t.resume(); err != nil {
		return err
	}
	return t.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
}

func (t *wsTransport) end(code int, reason string) {
	if err := t.resume(); err == nil {
		_ = t.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(writeWait))
	}
	// The reader ends when the peer answers, or at this deadline.
	_ = t.conn.SetReadDeadline(time.Now().Add(closeWait))
}

func (t *wsTransport) abort() {
	// The reader must not wait for a silent peer for long.
	_ = t.conn.SetReadDeadline(time.Now().Add(closeWait))
}

func (t *wsTransport) inline() bool { return false }
