package transport

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/footfall/footfall/internal/hangup"
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
	tr    *SSE
	renew time.Time
}

func (w *sseWriter) deadline() {
	if now := time.Now(); now.After(w.renew) {
		wait := w.tr.node.tm.WriteWait
		_ = w.rc.SetWriteDeadline(now.Add(wait))
		w.renew = now.Add(wait / 2)
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
	tr     *SSE

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
		if unwatch, err := w.hangups.Watch(sc, w.tr.Stop); err == nil {
			w.unwatch = unwatch
			close(w.readerDone)
			return
		}
	}
	go w.watch()
}

// watch is the connection's reader goroutine. It waits for the connection
// to turn readable in few, small frames (like a WebSocket's WS.Idle), so that
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
	w.tr.Stop()
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
			wait := w.tr.node.tm.WriteWait
			_ = w.conn.SetWriteDeadline(now.Add(wait))
			w.renew = now.Add(wait / 2)
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
			w.tr.Stop() // the client is gone or stalled: end the connection
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
		_ = w.conn.SetWriteDeadline(time.Now().Add(CloseWait))
		_, _ = w.conn.Write([]byte("0\r\n\r\n"))
	}
	if w.unwatch != nil {
		w.unwatch() // before Close: the descriptor's number may be reused
	}
	_ = w.conn.Close()
	<-w.readerDone
}
