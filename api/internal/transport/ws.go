package transport

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The WebSocket connection itself: the hijacked socket gorilla gets,
// deadlines kept lazily, and frames written by footfall without blocking
// (the writer hand-off).

var writeBufferPool = &sync.Pool{}

// wsReadBufferSize is a connection's read buffer: client messages are
// small (ping, request_count, auth), and a larger frame is read in several
// calls. footfall makes the buffer itself (hijacker) so that the reader
// can see what it holds; gorilla adopts a hijacked reader of more than 256
// bytes, which also holds any control frame whole (at most 131 bytes).
const wsReadBufferSize = 288

var upgrader = &websocket.Upgrader{
	// 0: gorilla reads through the buffer hijacker returns.
	ReadBufferSize:  0,
	WriteBufferPool: writeBufferPool,
	// Origins are checked by api before the upgrade, with an HTTP 403
	// (docs/protocol.md, fine print).
	CheckOrigin: func(*http.Request) bool { return true },
}

// WS is one WebSocket connection: it writes a client's messages and reads
// what the client sends.
//
// Data frames are footfall's own (a text frame, unmasked, uncompressed: the
// same bytes for every client, so a broadcast is framed once per node) and
// bypass gorilla, which only writes control frames (ping, pong, close).
// On a plain TCP connection a frame is first tried without blocking, right
// where the message became ready (SendNow, under the client's lock): the
// common case needs no goroutine at all. Only a client whose socket is
// full gets a writer goroutine, which finishes the frame (blocking, with a
// write deadline) and whatever follows, so a slow client holds up no one
// else.
//
// lc.wmu is held by whoever writes to the connection, and across a frame
// left half-written: the inline writer hands it to the writer goroutine
// (held), which writes the rest before anything else.
type WS struct {
	tm   *Timings // the node's, shared by its connections
	conn *websocket.Conn
	lc   *lazyDeadlineConn
	raw  syscall.RawConn // nil unless a plain TCP connection (TLS: no inline writes)
	br   *bufio.Reader   // the connection's read buffer; nil if gorilla was not given one
	peer Peer            // set by StartReading

	held bool   // lc.wmu was handed over by an inline write with rest unwritten
	rest []byte // the unwritten tail of that frame

	// rawWrite's arguments and results, kept here so that a non-blocking
	// write allocates nothing.
	rawFn  func(fd uintptr) bool
	rawBuf []byte
	rawN   int
	rawErr error
}

// Peer is what a WebSocket's reader asks of the connection's client.
type Peer interface {
	// Closing reports whether the client is saying goodbye: a sign of life
	// then no longer extends the read deadline.
	Closing() bool
}

// Upgrade answers a WebSocket handshake and takes over the connection,
// which then keeps the timings tm (the node's: they must not change while
// it lives). On an error the upgrader has answered with an HTTP error
// already.
func Upgrade(w http.ResponseWriter, r *http.Request, hdr http.Header, tm *Timings) (*WS, error) {
	h := &hijacker{ResponseWriter: w}
	conn, err := upgrader.Upgrade(h, r, hdr)
	if err != nil {
		return nil, err
	}
	if lc, ok := conn.NetConn().(*lazyDeadlineConn); ok {
		lc.wmu.Lock()
		lc.framed = true
		lc.wmu.Unlock()
	}
	return newWS(conn, h.br, tm), nil
}

func newWS(conn *websocket.Conn, br *bufio.Reader, tm *Timings) *WS {
	t := &WS{tm: tm, conn: conn, br: br}
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

// hijacker hands gorilla the hijacked connection wrapped in a
// lazyDeadlineConn, and a small read buffer of footfall's own, which the
// connection's reader watches (WS.Idle).
//
// gorilla sets the connection's write deadline before every frame it
// writes; footfall moves it only every few seconds (WS.Send), so through
// lazyDeadlineConn most frames cost no runtime timer update.
type hijacker struct {
	http.ResponseWriter
	br *bufio.Reader // the connection's read buffer; nil if gorilla was not given one
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
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

// keepDeadline moves the write deadline to now+wait (the write wait) when
// it is unset or less than wait/2 away: every frame gets at least wait/2 to
// go out, and the deadline (a runtime timer) is touched once every few
// seconds, not once per frame.
func (c *lazyDeadlineConn) keepDeadline(now time.Time, wait time.Duration) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.wd.IsZero() && c.wd.Sub(now) >= wait/2 {
		return
	}
	c.wd = now.Add(wait)
	_ = c.Conn.SetWriteDeadline(c.wd)
}

func (c *lazyDeadlineConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.wd = t
	return c.Conn.SetDeadline(t)
}

// TextFrame frames data as a final, unmasked text frame.
func TextFrame(data []byte) []byte {
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
func frame(m *Message) []byte {
	if m.Frame != nil {
		return m.Frame.Get(m.Data)
	}
	return TextFrame(m.Data)
}

// TryLock takes the connection's write lock if inline writes are possible
// and no one else is writing.
func (t *WS) TryLock() bool { return t.raw != nil && t.lc.wmu.TryLock() }

// Unlock releases the write lock TryLock took.
func (t *WS) Unlock() { t.lc.wmu.Unlock() }

// SendNow writes m's frame without blocking. If the socket takes only a
// part of it, the rest is kept with the write lock for the writer goroutine
// (handed): Resume finishes it, before anything else is written. The
// caller holds the write lock.
func (t *WS) SendNow(m Message) (handed bool, err error) {
	rest, err := t.sendNow(m)
	if rest != nil {
		t.held, t.rest = true, rest
		return true, nil
	}
	return false, err
}

// sendNow writes m's frame without blocking and returns what did not fit in
// the socket (nil: all of it).
func (t *WS) sendNow(m Message) ([]byte, error) {
	if t.lc.closeSent {
		return nil, websocket.ErrCloseSent
	}
	b := frame(&m)
	// A raw write fails once the connection's write deadline has passed,
	// and gorilla's control frames (the keepalive ping, pongs) set it too:
	// keep it ahead of every write, not only the blocking ones.
	t.lc.keepDeadline(time.Now(), t.tm.WriteWait)
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

func (t *WS) rawWrite(fd uintptr) bool {
	t.rawN, t.rawErr = rawWriteFD(fd, t.rawBuf)
	return true // one attempt: never wait here
}

// Resume writes what SendNow left and releases the write lock it kept.
// The writer goroutine calls it first.
func (t *WS) Resume() error {
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
func (t *WS) writeLocked(b []byte) error {
	if t.lc.closeSent {
		return websocket.ErrCloseSent
	}
	t.lc.keepDeadline(time.Now(), t.tm.WriteWait)
	_, err := t.lc.Conn.Write(b)
	return err
}

// Send writes m, blocking, with the write deadline.
func (t *WS) Send(m Message) error {
	if err := t.Resume(); err != nil {
		return err
	}
	if t.lc == nil { // not hijacked by hijacker (never in footfall)
		_ = t.conn.SetWriteDeadline(time.Now().Add(t.tm.WriteWait))
		return t.conn.WriteMessage(websocket.TextMessage, m.Data)
	}
	b := frame(&m)
	t.lc.wmu.Lock()
	defer t.lc.wmu.Unlock()
	return t.writeLocked(b)
}

// Keepalive sends a ping frame.
func (t *WS) Keepalive() error {
	if err := t.Resume(); err != nil {
		return err
	}
	return t.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(t.tm.WriteWait))
}

// Close sends a close frame; the reader ends when the peer answers, or
// CloseWait later.
func (t *WS) Close(code int, reason string) {
	if err := t.Resume(); err == nil {
		_ = t.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(t.tm.WriteWait))
	}
	// The reader ends when the peer answers, or at this deadline.
	_ = t.conn.SetReadDeadline(time.Now().Add(CloseWait))
}

// Abort bounds the reader's wait for a silent peer.
func (t *WS) Abort() {
	// The reader must not wait for a silent peer for long.
	_ = t.conn.SetReadDeadline(time.Now().Add(CloseWait))
}

// Inline is false: a WebSocket's blocking writes are the writer goroutine's.
func (t *WS) Inline() bool { return false }

// Refuse closes a just-upgraded connection with code, waiting briefly for
// the peer's answer so that browsers see the code.
func (t *WS) Refuse(code int, reason string) {
	conn := t.conn
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(t.tm.WriteWait))
	_ = conn.SetReadDeadline(time.Now().Add(CloseWait))
	for {
		if _, _, err := conn.NextReader(); err != nil {
			break
		}
	}
	_ = conn.Close()
}

// Drop sends a close frame and closes the connection at once, without
// waiting for the peer.
func (t *WS) Drop(code int, reason string) {
	_ = t.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(t.tm.WriteWait))
	_ = t.conn.Close()
}

// Shut closes the connection: a writer blocked on a dead peer returns now.
func (t *WS) Shut() { _ = t.conn.Close() }
