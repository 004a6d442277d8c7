// Package transport owns a client connection's socket life, for WebSocket
// and SSE alike: the hijack, deadlines, WebSocket frames and SSE chunks,
// writes that never block and the hand-off of a half-written frame to a
// writer goroutine, the idle wait, keepalives, hang-up detection and the
// parking of idle SSE connections.
//
// The rest of api sees a Conn: send a message, send a keepalive, close with
// a code. What is sent, when, and to whom is api's; how the bytes reach the
// socket is this package's (docs/protocol.md, streams and fine print, for
// the wire).
package transport

import (
	"sync"
	"time"
)

// Timings are a node's connection timings. They are values, given to
// Upgrade and NewSSENode (api fills them from its Options), so that each
// node, and each test, has its own.
type Timings struct {
	// WriteWait bounds every write: a client that does not take a frame in
	// this time is gone.
	WriteWait time.Duration
	// PingEvery is the WebSocket keepalive; PongWait is how long a silent
	// peer is kept.
	PingEvery time.Duration
	PongWait  time.Duration
	// SSELinger is how long a session of a hijacked SSE connection stays
	// up after the last message it carried (heartbeats do not count): a
	// stream that is sent something every few seconds keeps its session,
	// an idle one parks.
	SSELinger time.Duration
}

// DefaultTimings are the timings a node runs with unless configured.
func DefaultTimings() Timings {
	return Timings{
		WriteWait: 10 * time.Second,
		PingEvery: 25 * time.Second,
		PongWait:  60 * time.Second,
		SSELinger: 2 * time.Second,
	}
}

// CloseWait is how long a server-initiated close waits for the peer's
// answer (or a goodbye for the wire) before the connection is dropped.
const CloseWait = 2 * time.Second

// Close codes that the transport reports or sends itself (docs/protocol.md,
// outcomes).
const (
	CloseGoingAway     = 1001
	CloseAbnormal      = 1006 // the peer went without a close frame
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseInternalError = 1011
)

// Message is one message on its way to a client: its type (the SSE
// `event:`), the bus event id it reflects (the SSE `id:`, "" for replies)
// and its JSON.
type Message struct {
	Type string
	ID   string
	Data []byte
	// Frame, when set, is shared by the clients that send the same Data,
	// so that a message sent alike to N WebSocket clients is framed once.
	Frame *SharedFrame
	// Retry, when set, is an SSE reconnection hint sent with the message.
	Retry string
}

// Conn is how a client's messages reach the wire: a WebSocket or an SSE
// response. Only one goroutine at a time calls Send, Keepalive and Close
// (the client's writer, or for an Inline transport whoever holds the
// client's lock).
type Conn interface {
	// Send writes one message.
	Send(m Message) error
	// Keepalive sends the transport's heartbeat (a ping frame, an SSE
	// comment).
	Keepalive() error
	// Close says goodbye with a close code and reason and ends the
	// connection. It may block briefly and is always called on the
	// client's writer goroutine.
	Close(code int, reason string)
	// Abort makes the connection end soon after a failed write: the reader
	// side stops waiting for the peer. It must not block.
	Abort()
	// Inline reports whether Send and Keepalive never block (they hand the
	// message on, as the SSE transport does to its r3labs stream): then they
	// run at once under the client's lock and no writer goroutine is needed.
	Inline() bool
}

// NonBlocking is a Conn that can try a message without blocking (a
// WebSocket on plain TCP). The writer goroutine calls Resume first.
type NonBlocking interface {
	Conn
	// TryLock takes the connection's write lock, if no one holds it.
	TryLock() bool
	Unlock()
	// SendNow writes m as far as the socket takes it. The caller holds
	// the write lock. handed: the socket is full and m went only in part;
	// the write lock and the rest of m are kept for the writer goroutine,
	// which the caller must start, and which calls Resume first.
	SendNow(m Message) (handed bool, err error)
	// Resume writes what a SendNow left and releases the write lock it
	// kept; nothing to do if none did.
	Resume() error
}

// SharedFrame holds one lazily built WebSocket frame of a message, shared
// by the clients that send it alike.
type SharedFrame struct {
	once  sync.Once
	frame []byte
}

// Get returns the frame of data, building it the first time. It is safe for
// concurrent use; every caller passes the same data.
func (f *SharedFrame) Get(data []byte) []byte {
	f.once.Do(func() { f.frame = TextFrame(data) })
	return f.frame
}

type slowConsumerError struct{}

func (slowConsumerError) Error() string { return "slow consumer" }

// ErrSlowConsumer is a Send refused because the client does not keep up.
var ErrSlowConsumer error = slowConsumerError{}
