package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/internal/hangup"
	"github.com/r3labs/sse/v2"
)

// The SSE connection itself: the response r3labs writes to (the hijacked
// connection, chunked by footfall, or the handler's own), sessions, parking and
// the hang-up watcher.

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
	w.tr.onFlush()
}

func (w *sseWriter) start() {}

func (w *sseWriter) abort() { _ = w.rc.SetWriteDeadline(time.Now()) }

func (w *sseWriter) finish() {}

// sseConnWriter writes a stream's response to a hijacked HTTP/1.1
// connection with chunked encoding, one chunk (one write) per flush: per
// event, as r3labs flushes each. Between flushes it holds no buffer.
type sseConnWriter struct {
	conn   net.Conn
	header http.Header
	tr     *sseTransport

	spare http.Header // what later sessions' ServeHTTP sets: written nowhere
	head  []byte      // status line and headers until the first flush; then empty, not nil
	body  *[]byte     // the chunk being written, from sseBufPool
	err   error       // the first write error: later writes are dropped
	renew time.Time

	// hangups notices the client going, if the platform has one; else a
	// reader goroutine does (watch).
	hangups    *hangup.Watcher
	unwatch    func()
	readerDone chan struct{}
}

// sseChunkRoom is the room kept at the head of a chunk buffer for its size
// line.
const sseChunkRoom = 10

var sseBufPool = sync.Pool{New: func() any { b := make([]byte, sseChunkRoom, 512); return &b }}

// start has the client's going noticed: an SSE client sends nothing after
// its request, so the connection's end means it is gone. The node's hangup
// watcher does that without a goroutine of the connection's own; without
// one (not Linux, TLS), a reader goroutine does.
func (w *sseConnWriter) start() {
	if sc, ok := w.conn.(syscall.Conn); ok && w.hangups != nil {
		if unwatch, err := w.hangups.Watch(sc, w.tr.stop); err == nil {
			w.unwatch = unwatch
			close(w.readerDone)
			return
		}
	}
	go w.watch()
}

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
	w.tr.stop()
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
		if w.spare == nil {
			w.spare = http.Header{}
		}
		return w.spare // every later session sets the same few keys
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
			w.tr.stop() // the client is gone or stalled: end the connection
		}
	}
	if w.body != nil {
		*w.body = (*w.body)[:sseChunkRoom]
		if cap(*w.body) <= 64<<10 {
			sseBufPool.Put(w.body)
		}
		w.body = nil
	}
	w.tr.onFlush()
}

func (w *sseConnWriter) abort() { _ = w.conn.SetWriteDeadline(time.Now()) }

// finish ends the chunked response and the connection, and waits for the
// reader.
func (w *sseConnWriter) finish() {
	if w.err == nil && w.head != nil {
		_ = w.conn.SetWriteDeadline(time.Now().Add(closeWait))
		_, _ = w.conn.Write([]byte("0\r\n\r\n"))
	}
	if w.unwatch != nil {
		w.unwatch() // before Close: the descriptor's number may be reused
	}
	_ = w.conn.Close()
	<-w.readerDone
}

// sseTransport hands a client's messages to r3labs, and runs the
// connection's r3labs sessions.
//
// A session is an r3labs stream (named base.gen) with ServeHTTP running on
// the connection's stream goroutine. Messages go to the session with
// TryPublish, which never blocks; while no session is attached (starting,
// ending or parked) they wait in pending, and a parked connection gets its
// stream goroutine back to start a session. A session of a hijacked
// connection parks once everything it was given is flushed and no message
// came for sseLinger: its context is cancelled, ServeHTTP returns, and the
// stream goroutine ends unless something is pending again. The stream
// goroutine also ends the connection (endSSE) once stop was called.
//
// write and keepalive never block, so they run inline under the client's
// lock; end runs on the client's writer goroutine. Lock order: the
// client's, then t.mu, then the Hub's alarms.
type sseTransport struct {
	srv      *sse.Server
	alarms   *alarm.Wheel
	base     string // the client's id; session streams are base.gen
	w        sseResponse
	parkable bool          // a hijacked connection: sessions may park
	alarm    *alarm.Alarm  // rings to check whether the session can park
	serve    func()        // the stream goroutine: sessions, then endSSE
	attached chan struct{} // cap 1: the first session is attached
	flushSig chan struct{} // cap 1: an event was flushed

	// ctx is the connection's; cancel (stop) ends it and every session.
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	state      sseState
	running    bool // the stream goroutine runs (or ends the connection)
	stopped    bool // the connection is ending
	gen        uint64
	stream     string             // the session's r3labs stream; "" when none
	endSession context.CancelFunc // cancels the session's ServeHTTP
	pending    []*sse.Event
	published  int64     // events handed on: to r3labs or to pending
	flushed    int64     // events r3labs wrote and flushed
	lastData   time.Time // when the last message (not a heartbeat) was handed on
	// lastID is the id of the last message handed on: the stream's
	// terminal event repeats it, because r3labs writes an `id:` line with
	// every message and an empty one would reset the client's resume point.
	lastID  []byte
	booked  bool  // the alarm is booked
	started int64 // sessions started
}

type sseState uint8

const (
	sseParked   sseState = iota // no session
	sseStarting                 // a session is created; its subscriber is not attached yet
	sseActive                   // events go straight to the session
	sseEnding                   // the session is being parked
)

var errSSEEnded = errors.New("sse connection ended")

// sessions runs sessions on the stream goroutine until the connection
// parks (false: the goroutine is released) or ends (true: the caller ends
// the connection).
func (t *sseTransport) sessions() (ended bool) {
	for {
		req, next := t.nextSession()
		switch next {
		case sseEnd:
			return true
		case ssePark:
			return false
		}
		t.srv.ServeHTTP(t.w, req)
		t.mu.Lock()
		id := t.stream
		t.endSession()
		t.state, t.stream, t.endSession = sseParked, "", nil
		t.mu.Unlock()
		// After ServeHTTP returned: no subscriber is left on it.
		t.srv.RemoveStream(id)
	}
}

// What the stream goroutine does next.
const (
	sseServe = iota // serve a session
	ssePark         // release the goroutine: the connection is parked
	sseEnd          // end the connection
)

// nextSession decides what the stream goroutine does next and, to serve a
// session (when the connection starts, and when messages wait), creates
// its stream and the request r3labs serves it for.
func (t *sseTransport) nextSession() (*http.Request, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || t.ctx.Err() != nil {
		// Stopped, or (a handler's response) the client went.
		t.stopped = true
		t.cancel()
		return nil, sseEnd
	}
	if t.gen > 0 && len(t.pending) == 0 {
		t.running = false // under t.mu: a later publish starts it again
		return nil, ssePark
	}
	t.gen++
	t.started++
	t.stream = t.base + "." + strconv.FormatUint(t.gen, 10)
	ctx, cancel := context.WithCancel(t.ctx)
	t.state, t.endSession = sseStarting, cancel
	t.srv.CreateStream(t.stream)
	// r3labs sees only what it needs: the stream, and no Last-Event-ID (it
	// answers 400 to a non-numeric one) and no ?token=.
	req := (&http.Request{Method: http.MethodGet, URL: &url.URL{RawQuery: "stream=" + t.stream}, Header: http.Header{}}).WithContext(ctx)
	return req, sseServe
}

// onFlush is called by the response on every flush r3labs makes: the
// first of a session means its subscriber is attached, the others that an
// event is on the wire.
func (t *sseTransport) onFlush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case sseStarting:
		t.state = sseActive
		for i, ev := range t.pending {
			if !t.srv.TryPublish(t.stream, ev) {
				// Cannot happen: the stream's buffer holds sseMaxPending.
				t.pending = t.pending[i:]
				t.stopLocked()
				return
			}
		}
		t.pending = nil
		select {
		case t.attached <- struct{}{}:
		default:
		}
	case sseActive, sseEnding:
		t.flushed++
		select {
		case t.flushSig <- struct{}{}:
		default:
		}
	}
	t.parkLocked()
}

// ring is the transport's alarm: the session may have been idle long
// enough.
func (t *sseTransport) ring() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.booked = false
	t.parkLocked()
}

// parkLocked parks an active session that has written all it was given and
// carried no message for sseLinger, or books the alarm for when it might.
func (t *sseTransport) parkLocked() {
	if !t.parkable || t.stopped || t.state != sseActive || t.flushed < t.published {
		return // not parkable, or something is still in flight: asked again at its flush
	}
	if at := t.lastData.Add(sseLinger); time.Now().Before(at) {
		if !t.booked {
			t.booked = true
			t.alarms.Set(t.alarm, at)
		}
		return
	}
	t.state = sseEnding
	t.endSession()
}

// stop ends the connection: its session ends, and the stream goroutine
// (started here if the connection is parked) ends the connection.
func (t *sseTransport) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
}

func (t *sseTransport) stopLocked() {
	if t.stopped {
		return
	}
	t.stopped = true
	t.cancel()
	if !t.running {
		t.running = true
		go t.serve()
	}
}

// publish hands ev on: to the attached session, or to pending (starting a
// session if the connection is parked). data marks a message, as opposed
// to a heartbeat.
func (t *sseTransport) publish(ev *sse.Event, data bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return errSSEEnded
	}
	if data && t.published == 0 {
		ev.Retry = []byte(sseRetry)
	}
	if t.state == sseActive {
		if !t.srv.TryPublish(t.stream, ev) {
			return errSlowConsumer
		}
	} else {
		if len(t.pending) >= sseMaxPending {
			return errSlowConsumer
		}
		t.pending = append(t.pending, ev)
		if !t.running {
			t.running = true
			go t.serve()
		}
	}
	t.published++
	if data {
		t.lastData = time.Now()
		t.lastID = ev.ID
	}
	return nil
}

// caughtUp reports whether every event handed on is flushed.
func (t *sseTransport) caughtUp() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushed >= t.published
}

func (t *sseTransport) write(m outMsg) error {
	return t.publish(&sse.Event{ID: []byte(m.id), Event: []byte(m.typ), Data: m.data}, true)
}

func (t *sseTransport) keepalive() error {
	return t.publish(&sse.Event{Comment: []byte("heartbeat")}, false)
}

func (t *sseTransport) inline() bool { return true }

func (t *sseTransport) abort() {
	t.w.abort()
	t.stop()
}

// end tells an SSE client why its stream ends (an `error` event on expiry
// or revocation, a `shutdown` event with a short retry hint when the node
// stops), waits until that is on the wire, and ends the connection.
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
	if last != nil {
		t.mu.Lock()
		last.ID = t.lastID
		t.mu.Unlock()
	}
	if last != nil && t.publish(last, true) == nil {
		deadline := time.Now().Add(closeWait)
		for !t.caughtUp() && time.Now().Before(deadline) {
			select {
			case <-t.flushSig:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	t.stop()
}

type slowConsumerError struct{}

func (slowConsumerError) Error() string { return "slow consumer" }

var errSlowConsumer error = slowConsumerError{}
