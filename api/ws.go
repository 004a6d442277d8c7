package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
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
		return m.shared.Get(func() any { return wsTextFrame(m.data) }).([]byte)
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

// newClient returns a client of one stream; the caller sets its transport.
func (s *Server) newClient(transport, community string, stream streams.Stream, ident *auth.Identity) *client {
	c := &client{
		srv:       s,
		transport: transport,
		sent:      s.metrics.sent.WithLabelValues(transport),
		id:        s.connSeq.Add(1),
		community: community,
		stream:    stream,
		sessionID: ident.SessionID,
		ident:     ident,
	}
	c.alarm = streams.NewAlarm(c.ring)
	if stream == streams.StreamVisitors {
		c.visitor = ident.Visitor()
	}
	return c
}

// attach subscribes c to its community and, on the visitors stream, makes
// its visitor present. The returned cleanup undoes both.
func (s *Server) attach(ctx context.Context, c *client) (streams.Snapshot, func(), error) {
	leave, snap, err := s.hub.Join(ctx, c.community, c)
	if err != nil {
		return snap, nil, err
	}
	var sourceID string
	if c.stream == streams.StreamVisitors {
		sourceID = s.nodeID + "-" + strconv.FormatUint(c.id, 10)
		res, err := s.bus.Touch(ctx, streams.Source{Community: c.community, Visitor: c.visitor, ID: sourceID})
		if err != nil {
			leave()
			return snap, nil, err
		}
		s.hub.Observe(c.community, res, s.now())
		if res.Seq >= snap.Seq {
			snap.Seq, snap.LastID, snap.Count, snap.Today = res.Seq, res.ID, res.Count, res.Today
		}
	}
	c.memo = s.hub.Memo(c.community)
	s.register(c)
	cleanup := func() {
		// Unregistered last: OpenClients counts the connection until its
		// presence is settled on the bus (shutdown waits for it).
		defer s.unregister(c)
		leave()
		if sourceID != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.mu.Lock()
			handover := c.handover
			c.mu.Unlock()
			// The source outlives the connection by the leave grace (by
			// the presence TTL when the node stops, at least the grace):
			// a reload, or a client moving to another node, that comes
			// back within it is the same presence and nobody hears of it.
			// Turning the held source into one with a TTL costs the bus
			// what a leave does; the bus ends it, and publishes the
			// visitor_left if it was the last, when the time runs out,
			// whichever node is still up.
			linger := s.opts.LeaveGrace
			if handover {
				linger = max(linger, s.opts.PresenceTTL)
			}
			var res streams.PresenceResult
			var err error
			if linger > 0 {
				res, err = s.bus.Touch(ctx, streams.Source{Community: c.community, Visitor: c.visitor, ID: sourceID, TTL: linger})
			} else {
				res, err = s.bus.Leave(ctx, c.community, c.visitor, sourceID)
			}
			if err != nil {
				s.log.Warn("presence leave failed", "community", c.community, "err", err)
				return
			}
			s.hub.Observe(c.community, res, s.now())
		}
	}
	return snap, cleanup, nil
}

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
	if ident.Subject != cur.Subject || !ident.Allows(c.community, c.stream) {
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
