package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/r3labs/sse/v2"
)

// SSE: how footfall uses github.com/r3labs/sse/v2.
//
// r3labs/sse serves the HTTP response and writes the wire format (`id:`,
// `data:`, `event:`, `retry:`, comments) of each connection. Everything
// else is footfall's, because the library's own versions have sharp edges:
//
//   - Fanout: one r3labs stream per connection, never per community. An
//     r3labs stream's Publish waits for its slowest subscriber, and counts
//     are per-client state (coalesced, with `change` relative to what that
//     client was sent), so the Hub and the client do the fanout and the
//     r3labs stream only carries one client's already-decided messages.
//     The client feeds it with TryPublish, which never blocks, right where a
//     message becomes ready (no footfall writer goroutine): a full buffer
//     means a slow consumer, and only that connection ends.
//   - Replay and ids: AutoReplay is off (its log grows without bound and
//     replays everything). Event ids come from the bus; Last-Event-ID (or
//     ?last_event_id=) is answered from the bus history before the stream
//     starts, and the header is removed from the request r3labs sees (it
//     answers 400 to a non-numeric one).
//   - Auth runs before ServeHTTP, with the contract's JSON errors.
//   - Lifetimes: a stream is removed only after its ServeHTTP returned (an
//     r3labs RemoveStream with a subscriber still attached leaks goroutines),
//     and ServeHTTP is ended by cancelling the request context it sees.
//     Events always carry data or a comment (an empty one would close the
//     stream's connections).
//   - Headers, heartbeats, deadlines: X-Accel-Buffering: no is set through
//     the server's Headers, heartbeats are comment events booked as the
//     client's alarm, and the ResponseWriter r3labs gets keeps a write
//     deadline on the connection, moved forward every few seconds.
//   - Memory: an HTTP/1.1 stream is hijacked and ServeHTTP runs in a
//     goroutine of its own against a writer of the raw connection
//     (sseConnWriter), so that net/http's per-connection state is freed; see
//     serveSSE.

// sseRetry is the reconnection delay hinted to EventSource clients;
// sseShutdownRetry the one sent when a node stops (reconnect at once,
// elsewhere).
const (
	sseRetry         = "2000"
	sseShutdownRetry = "250"
)

func newSSEServer() *sse.Server {
	srv := sse.New()
	srv.AutoReplay = false
	srv.AutoStream = false
	// A stream's queue in front of its subscriber's (64 events, fixed by
	// r3labs): past both, TryPublish fails and the client is a slow
	// consumer.
	srv.BufferSize = 16
	srv.Headers = map[string]string{"X-Accel-Buffering": "no"}
	return srv
}

// serveSSE serves one of a community's SSE streams.
//
// An HTTP/1.1 connection is hijacked once the client is authenticated and
// attached, and the handler returns ("hijack and return", as for
// WebSockets): net/http's buffers, background reader, request and contexts
// are freed. r3labs' ServeHTTP then runs in a goroutine of its own against
// sseConnWriter, which writes the chunked response straight to the
// connection, and a small reader goroutine notices when the client goes.
// Other connections (HTTP/2, HTTP/1.0) are served inside the handler.
func (s *Server) serveSSE(stream streams.Stream) echo.HandlerFunc {
	return func(ec echo.Context) error {
		community, err := community(ec)
		if err != nil {
			return err
		}
		r := ec.Request()
		reqID := requestID(ec)
		ident, err := s.verifier.Authorize(r.Context(), auth.Extract(r), s.bus, community, stream)
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
		streamID := strconv.FormatUint(c.id, 10)
		tr := &sseTransport{srv: s.sse, stream: streamID, flushed: make(chan struct{}, 1)}
		c.tr = tr
		c.keepaliveEvery = s.opts.SSEHeartbeat

		snap, cleanup, err := s.attach(r.Context(), c)
		if err != nil {
			s.log.Warn("attach failed", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "err", err)
			return err
		}
		var missed []streams.Event
		resumed := false
		if lastID != "" {
			m, ok, err := s.bus.History(r.Context(), community, lastID)
			if err != nil {
				s.log.Warn("history failed", "request_id", reqID, "community", community, "err", err)
			}
			if ok && err == nil {
				missed, resumed = m, true
			}
		}

		// The response: the hijacked connection, or (HTTP/2, HTTP/1.0) the
		// handler's own ResponseWriter.
		var (
			w      sseResponse
			ctx    context.Context
			cancel context.CancelFunc
		)
		if r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 {
			if conn, _, err := http.NewResponseController(ec.Response()).Hijack(); err == nil {
				ctx, cancel = context.WithCancel(context.Background())
				hdr := ec.Response().Header().Clone()
				w = &sseConnWriter{conn: conn, header: hdr, tr: tr, cancel: cancel, readerDone: make(chan struct{})}
				ec.Response().Committed, ec.Response().Status = true, http.StatusOK // for the access log
				c.releaseSlot = takeConnSlot(ec)
			}
		}
		if w == nil {
			ctx, cancel = context.WithCancel(r.Context())
			w = &sseWriter{ResponseWriter: ec.Response(), rc: http.NewResponseController(ec.Response()), tr: tr}
		}
		tr.w, tr.cancel = w, cancel

		s.sse.CreateStream(streamID)
		// r3labs sees only what it needs: the stream, and no Last-Event-ID
		// (it answers 400 to a non-numeric one) and no ?token=.
		req := (&http.Request{Method: http.MethodGet, URL: &url.URL{RawQuery: "stream=" + streamID}, Header: http.Header{}}).WithContext(ctx)

		done := make(chan struct{})
		go s.runSSE(c, w, req, cancel, cleanup, done)
		// r3labs flushes the headers once the subscriber is attached; an
		// event published before that would be lost, so the stream's first
		// message waits for that flush (events meanwhile wait in early).
		select {
		case <-tr.flushed:
			if resumed {
				c.resume(missed, snap)
			} else {
				c.begin(snap)
			}
			s.log.Info("connection open", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "conn", c.id, "sub", ident.Subject, "resumed", resumed)
		case <-done:
		}
		if _, hijacked := w.(*sseConnWriter); !hijacked {
			<-done // the handler's ResponseWriter is only valid until it returns
		}
		return nil
	}
}

// runSSE is a stream's goroutine: it serves the response until the client
// goes, the client's writer ends the stream (cancel) or the stream is
// closed, then ends the connection. It closes done when it is finished.
func (s *Server) runSSE(c *client, w sseResponse, req *http.Request, cancel context.CancelFunc, cleanup func(), done chan struct{}) {
	defer close(done)
	start := time.Now()
	w.start()
	s.sse.ServeHTTP(w, req)
	s.endSSE(c, w, cancel, cleanup, start)
}

// endSSE ends a stream whose ServeHTTP returned.
func (s *Server) endSSE(c *client, w sseResponse, cancel context.CancelFunc, cleanup func(), start time.Time) {
	c.finish()
	cancel()
	c.writers.Wait()
	s.sse.RemoveStream(c.tr.(*sseTransport).stream) // after ServeHTTP returned: no subscriber left
	w.finish()
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

// sseResponse is the http.ResponseWriter r3labs writes a stream to.
type sseResponse interface {
	http.ResponseWriter
	http.Flusher
	// start runs on the stream's goroutine before ServeHTTP.
	start()
	// abort makes a write that waits for a stalled client fail at once.
	abort()
	// finish ends the response after ServeHTTP returned.
	finish()
}

// sseWriter is the response of a stream served inside its handler. It
// moves the write deadline forward every few seconds (not on every write)
// and tells the transport about each flush.
type sseWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	tr    *sseTransport
	renew time.Time
}

func (w *sseWriter) deadline() {
	if now := time.Now(); now.After(w.renew) {
		_ = w.rc.SetWriteDeadline(now.Add(writeWait))
		w.renew = now.Add(writeWait / 2)
	}
}

func (w *sseWriter) Write(p []byte) (int, error) {
	w.deadline()
	return w.ResponseWriter.Write(p)
}

func (w *sseWriter) Flush() {
	w.deadline()
	_ = w.rc.Flush()
	w.tr.flushedOne()
}

func (w *sseWriter) start()  {}
func (w *sseWriter) abort()  { _ = w.rc.SetWriteDeadline(time.Now()) }
func (w *sseWriter) finish() {}

// sseConnWriter writes a stream's response to a hijacked HTTP/1.1
// connection with chunked encoding, one chunk (one write) per flush: per
// event, as r3labs flushes each. Between flushes it holds no buffer.
type sseConnWriter struct {
	conn   net.Conn
	header http.Header
	tr     *sseTransport
	cancel context.CancelFunc

	head  []byte  // status line and headers until the first flush; then empty, not nil
	body  *[]byte // the chunk being written, from sseBufPool
	err   error   // the first write error: later writes are dropped
	renew time.Time

	readerDone chan struct{}
}

// sseChunkRoom is the room kept at the head of a chunk buffer for its size
// line.
const sseChunkRoom = 10

var sseBufPool = sync.Pool{New: func() any { b := make([]byte, sseChunkRoom, 512); return &b }}

// start runs the reader that notices the client going: an SSE client
// sends nothing after its request, so any read that ends means it is gone.
func (w *sseConnWriter) start() { go w.watch() }

// watch is the connection's reader goroutine. It waits for the connection
// to turn readable in few, small frames (like a WebSocket's wsIdle), so that
// it keeps the smallest stack.
func (w *sseConnWriter) watch() {
	defer close(w.readerDone)
	for {
		if err := waitConnReadable(w.conn); err != nil {
			break
		}
		if !w.drain() {
			break
		}
	}
	w.cancel()
}

// drain reads what the client sent; false when the connection ended.
//
//go:noinline
func (w *sseConnWriter) drain() bool {
	var b [64]byte
	_, err := w.conn.Read(b[:])
	return err == nil
}

func (w *sseConnWriter) Header() http.Header {
	if w.header == nil { // after WriteHeader: changes no longer matter
		return http.Header{}
	}
	return w.header
}

func (w *sseConnWriter) WriteHeader(code int) {
	if w.head != nil {
		return
	}
	// The connection carries this one response: say so, so that clients
	// do not pool it.
	w.header.Set("Connection", "close")
	w.header.Set("Transfer-Encoding", "chunked")
	w.header.Del("Content-Length")
	b := make([]byte, 0, 320)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nDate: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	for k, vs := range w.header {
		for _, v := range vs {
			// Header values here are footfall's and r3labs' own; no CR or
			// LF can reach them.
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	w.head = append(b, "\r\n"...)
	w.header = nil // r3labs is done with it
}

func (w *sseConnWriter) Write(p []byte) (int, error) {
	if w.head == nil {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.body == nil {
		w.body = sseBufPool.Get().(*[]byte)
	}
	*w.body = append(*w.body, p...)
	return len(p), nil
}

func (w *sseConnWriter) Flush() {
	if w.head == nil {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil {
		if now := time.Now(); now.After(w.renew) {
			_ = w.conn.SetWriteDeadline(now.Add(writeWait))
			w.renew = now.Add(writeWait / 2)
		}
		if len(w.head) > 0 {
			_, w.err = w.conn.Write(w.head)
			w.head = []byte{} // written: keep none of it (not nil: WriteHeader ran)
		}
		if w.body != nil && w.err == nil {
			b := *w.body
			size := strconv.AppendInt(make([]byte, 0, 8), int64(len(b)-sseChunkRoom), 16)
			at := sseChunkRoom - len(size) - 2
			copy(b[at:], size)
			copy(b[sseChunkRoom-2:], "\r\n")
			b = append(b, "\r\n"...)
			_, w.err = w.conn.Write(b[at:])
			*w.body = b
		}
		if w.err != nil {
			w.cancel() // the client is gone or stalled: end the stream
		}
	}
	if w.body != nil {
		*w.body = (*w.body)[:sseChunkRoom]
		if cap(*w.body) <= 64<<10 {
			sseBufPool.Put(w.body)
		}
		w.body = nil
	}
	w.tr.flushedOne()
}

func (w *sseConnWriter) abort() { _ = w.conn.SetWriteDeadline(time.Now()) }

// finish ends the chunked response and the connection, and waits for the
// reader.
func (w *sseConnWriter) finish() {
	if w.err == nil && w.head != nil {
		_ = w.conn.SetWriteDeadline(time.Now().Add(closeWait))
		_, _ = w.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = w.conn.Close()
	<-w.readerDone
}

// appendWriter is an io.Writer appending to a byte slice.
type appendWriter struct{ b *[]byte }

func (a appendWriter) Write(p []byte) (int, error) {
	*a.b = append(*a.b, p...)
	return len(p), nil
}

// sseTransport hands a client's messages to its r3labs stream. write and
// keepalive never block (TryPublish), so they run inline under the
// client's lock; end runs on the client's writer goroutine.
type sseTransport struct {
	srv       *sse.Server
	stream    string
	w         sseResponse
	cancel    context.CancelFunc
	published int64
	flushes   atomic.Int64
	flushed   chan struct{} // cap 1: a flush happened
}

func (t *sseTransport) flushedOne() {
	t.flushes.Add(1)
	select {
	case t.flushed <- struct{}{}:
	default:
	}
}

func (t *sseTransport) publish(ev *sse.Event) error {
	if !t.srv.TryPublish(t.stream, ev) {
		return errSlowConsumer
	}
	t.published++
	return nil
}

func (t *sseTransport) write(m outMsg) error {
	ev := &sse.Event{ID: []byte(m.id), Event: []byte(m.typ), Data: m.data}
	if t.published == 0 {
		ev.Retry = []byte(sseRetry)
	}
	return t.publish(ev)
}

func (t *sseTransport) keepalive() error {
	return t.publish(&sse.Event{Comment: []byte("heartbeat")})
}

func (t *sseTransport) inline() bool { return true }

func (t *sseTransport) abort() {
	t.w.abort()
	t.cancel()
}

// end tells an SSE client why its stream ends (an `error` event on expiry
// or revocation, a `shutdown` event with a short retry hint when the node
// stops), waits until that is on the wire, and ends ServeHTTP.
func (t *sseTransport) end(code int, reason string) {
	var last *sse.Event
	switch code {
	case int(auth.CodeExpired):
		data, _ := json.Marshal(errorMessage{Type: "error", Code: "expired", Message: reason})
		last = &sse.Event{Event: []byte("error"), Data: data}
	case closeGoingAway:
		data, _ := json.Marshal(struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}{"shutdown", "node shutting down; reconnect"})
		last = &sse.Event{Event: []byte("shutdown"), Data: data, Retry: []byte(sseShutdownRetry)}
	}
	if last != nil && t.publish(last) == nil {
		// One flush for the headers, one per event.
		deadline := time.Now().Add(closeWait)
		for t.flushes.Load() < t.published+1 && time.Now().Before(deadline) {
			select {
			case <-t.flushed:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	t.cancel()
}

type slowConsumerError struct{}

func (slowConsumerError) Error() string { return "slow consumer" }

var errSlowConsumer error = slowConsumerError{}
