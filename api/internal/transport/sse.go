package transport

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/internal/hangup"
	"github.com/r3labs/sse/v2"
)

// SSE: how footfall uses github.com/r3labs/sse/v2 on a connection.
//
// r3labs/sse writes the wire format (`id:`, `data:`, `event:`, `retry:`,
// comments) of each connection. One r3labs stream per connection, never per
// community: an r3labs stream's Publish waits for its slowest subscriber, so
// api does the fanout and the stream only carries one client's
// already-decided messages, fed with TryPublish, which never blocks. A full
// buffer means a slow consumer, and only that connection ends.
//
//   - Replay: AutoReplay is off (its log grows without bound and replays
//     everything); api answers a Last-Event-ID from the bus history before
//     the stream starts.
//   - Lifetimes: a stream is removed only after its ServeHTTP returned (an
//     r3labs RemoveStream with a subscriber still attached leaks goroutines),
//     and ServeHTTP is ended by cancelling the request context it sees.
//     Events always carry data or a comment (an empty one would close the
//     stream's connections).
//   - Headers, deadlines: X-Accel-Buffering: no is set through the server's
//     Headers, and the ResponseWriter r3labs gets keeps a write deadline on
//     the connection, moved forward every few seconds.
//   - Memory: an HTTP/1.1 stream is hijacked (Hijack) and ServeHTTP runs in
//     a goroutine of its own against a writer of the raw connection
//     (sseConnWriter), so that net/http's per-connection state is freed.
//   - Parking: an r3labs stream costs three goroutines (its run loop,
//     ServeHTTP, and ServeHTTP's context watcher), more than everything else
//     an idle connection holds. So a hijacked connection runs its r3labs
//     stream in sessions: one starts when a message is ready, and once all
//     it was given is on the wire and no message came for Timings.SSELinger, it is
//     parked (ServeHTTP is ended, the stream removed) while the connection
//     stays open. The next message starts a new session on the same
//     connection; r3labs writes its events exactly as before, and the
//     response's headers went out once, with the first. A parked connection
//     holds no goroutine: the node's hangup watcher (internal/hangup, one
//     epoll set) notices its client going. Where there is none (not Linux,
//     or TLS), a small reader goroutine per connection does.

// sseRetry is the reconnection delay hinted to EventSource clients with
// their first message.
const sseRetry = "2000"

// sseMaxPending bounds the events that wait while a session starts; it is
// the r3labs stream's buffer too, so that all of them fit into it at once.
const sseMaxPending = 64

// SSEMaxReplay bounds the events a resume replays: below sseMaxPending, so
// that a replay handed over in one go never overruns the stream's buffer
// (which would end the stream and make the client retry the same resume).
const SSEMaxReplay = 48

// SSENode is what a node's SSE connections share: the r3labs server their
// sessions run in, the alarm wheel that parks them, and the hangup watcher
// that notices parked clients going.
type SSENode struct {
	tm      Timings
	srv     *sse.Server
	alarms  *alarm.Wheel
	hangups *hangup.Watcher // nil where unsupported: reader goroutines instead
}

// NewSSENode returns an SSENode with timings tm whose parking alarms are
// booked with alarms. An error says that the platform should have a hangup watcher and
// it could not be made: each SSE connection then gets a reader goroutine.
func NewSSENode(alarms *alarm.Wheel, tm Timings) (*SSENode, error) {
	srv := sse.New()
	srv.AutoReplay = false
	srv.AutoStream = false
	// A stream's queue in front of its subscriber's (64 events, fixed by
	// r3labs): past both, TryPublish fails and the client is a slow
	// consumer. It holds sseMaxPending, so that what waited for a session
	// to start is handed over in one go.
	srv.BufferSize = sseMaxPending
	srv.Headers = map[string]string{"X-Accel-Buffering": "no"}
	n := &SSENode{tm: tm, srv: srv, alarms: alarms}
	w, err := hangup.New()
	if err == nil {
		n.hangups = w
	} else if !hangup.Supported {
		err = nil
	}
	return n, err
}

// Close stops the hangup watcher.
func (n *SSENode) Close() {
	if n.hangups != nil {
		n.hangups.Close()
	}
}

// DropHangupWatcher makes the node notice SSE clients going with a reader
// goroutine per connection, as on a platform without a hangup watcher (for
// tests). Call it before any SSE connection opens.
func (n *SSENode) DropHangupWatcher() {
	if n.hangups != nil {
		n.hangups.Close()
		n.hangups = nil
	}
}

// Goodbye makes the last event of a stream that the server ends with code
// and reason (ok false: none).
type Goodbye func(code int, reason string) (m Message, ok bool)

// NewConn returns the SSE transport of connection id (unique on the node).
// Give it its response with Hijack or Respond, then Start it.
func (n *SSENode) NewConn(id uint64, goodbye Goodbye) *SSE {
	t := &SSE{node: n, goodbye: goodbye, base: strconv.FormatUint(id, 10),
		attached: make(chan struct{}, 1), flushSig: make(chan struct{}, 1)}
	t.alarm = alarm.New(t.ring)
	return t
}

// Hijack takes over w's HTTP/1.1 connection, whose response then carries
// header: the stream outlives the handler, and its sessions may park. False
// if the connection cannot be hijacked (then call Respond).
func (t *SSE) Hijack(w http.ResponseWriter, header http.Header) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.w = &sseConnWriter{conn: conn, header: header, tr: t, hangups: t.node.hangups, readerDone: make(chan struct{})}
	t.parkable = true
	return true
}

// Respond serves the stream on the handler's own ResponseWriter, which
// cannot park (the handler has to stay up for it anyway) and ends with ctx.
func (t *SSE) Respond(ctx context.Context, w http.ResponseWriter) {
	t.ctx, t.cancel = context.WithCancel(ctx)
	t.w = &sseWriter{ResponseWriter: w, rc: http.NewResponseController(w), tr: t}
}

// Start runs the stream's first session on a goroutine of its own. ended
// runs on the stream goroutine once the connection ends: it calls Stop,
// then Finish, in between it waits for whatever still writes to t.
func (t *SSE) Start(ended func()) {
	t.serve = func() {
		if t.sessions() {
			ended()
		}
	}
	// running before the response starts watching for the client going: a
	// Stop from the hangup watcher or the reader goroutine, which may come
	// at once, must find the stream goroutine on its way and not start a
	// second one (both would end the connection).
	t.mu.Lock()
	t.running = true
	t.mu.Unlock()
	t.w.start()
	go t.serve()
}

// Attached is ready once the first session's subscriber is attached and
// the response's headers are flushed: from then on, messages flow.
func (t *SSE) Attached() <-chan struct{} { return t.attached }

// Finish cancels the parking alarm and ends the response (the hijacked
// connection is closed). It runs after Stop, when nothing writes to t.
func (t *SSE) Finish() {
	t.node.alarms.Set(t.alarm, time.Time{})
	t.w.finish()
}

// Sessions reports whether the connection is parked (no session, no
// goroutine) and how many sessions it has started, for tests.
func (t *SSE) Sessions() (parked bool, started int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state == sseParked && !t.running, t.started
}

// SSE hands a client's messages to r3labs, and runs the
// connection's r3labs sessions.
//
// A session is an r3labs stream (named base.gen) with ServeHTTP running on
// the connection's stream goroutine. Messages go to the session with
// TryPublish, which never blocks; while no session is attached (starting,
// ending or parked) they wait in pending, and a parked connection gets its
// stream goroutine back to start a session. A session of a hijacked
// connection parks once everything it was given is flushed and no message
// came for Timings.SSELinger: its context is cancelled, ServeHTTP returns, and the
// stream goroutine ends unless something is pending again. The stream
// goroutine also ends the connection (Start's ended) once Stop was called.
//
// Send and Keepalive never block, so they run inline under the client's
// lock; Close runs on the client's writer goroutine. Lock order: the
// client's, then t.mu, then the alarm wheel's.
type SSE struct {
	node     *SSENode
	goodbye  Goodbye
	base     string // the client's id; session streams are base.gen
	w        sseResponse
	parkable bool          // a hijacked connection: sessions may park
	alarm    *alarm.Alarm  // rings to check whether the session can park
	serve    func()        // the stream goroutine: sessions, then Start's ended
	attached chan struct{} // cap 1: the first session is attached
	flushSig chan struct{} // cap 1: an event was flushed

	// ctx is the connection's; cancel (Stop) ends it and every session.
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
func (t *SSE) sessions() (ended bool) {
	for {
		req, next := t.nextSession()
		switch next {
		case sseEnd:
			return true
		case ssePark:
			return false
		}
		t.node.srv.ServeHTTP(t.w, req)
		t.mu.Lock()
		id := t.stream
		t.endSession()
		t.state, t.stream, t.endSession = sseParked, "", nil
		t.mu.Unlock()
		// After ServeHTTP returned: no subscriber is left on it.
		t.node.srv.RemoveStream(id)
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
func (t *SSE) nextSession() (*http.Request, int) {
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
	t.node.srv.CreateStream(t.stream)
	// r3labs sees only what it needs: the stream, and no Last-Event-ID (it
	// answers 400 to a non-numeric one) and no ?token=.
	req := (&http.Request{Method: http.MethodGet, URL: &url.URL{RawQuery: "stream=" + t.stream}, Header: http.Header{}}).WithContext(ctx)
	return req, sseServe
}

// onFlush is called by the response on every flush r3labs makes: the
// first of a session means its subscriber is attached, the others that an
// event is on the wire.
func (t *SSE) onFlush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case sseStarting:
		t.state = sseActive
		for i, ev := range t.pending {
			if !t.node.srv.TryPublish(t.stream, ev) {
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
func (t *SSE) ring() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.booked = false
	t.parkLocked()
}

// parkLocked parks an active session that has written all it was given and
// carried no message for Timings.SSELinger, or books the alarm for when it might.
func (t *SSE) parkLocked() {
	if !t.parkable || t.stopped || t.state != sseActive || t.flushed < t.published {
		return // not parkable, or something is still in flight: asked again at its flush
	}
	if at := t.lastData.Add(t.node.tm.SSELinger); time.Now().Before(at) {
		if !t.booked {
			t.booked = true
			t.node.alarms.Set(t.alarm, at)
		}
		return
	}
	t.state = sseEnding
	t.endSession()
}

// Stop ends the connection: its session ends, and the stream goroutine
// (started here if the connection is parked) ends the connection.
func (t *SSE) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
}

func (t *SSE) stopLocked() {
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
func (t *SSE) publish(ev *sse.Event, data bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return errSSEEnded
	}
	if data && t.published == 0 {
		ev.Retry = []byte(sseRetry)
	}
	if t.state == sseActive {
		if !t.node.srv.TryPublish(t.stream, ev) {
			return ErrSlowConsumer
		}
	} else {
		if len(t.pending) >= sseMaxPending {
			return ErrSlowConsumer
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
func (t *SSE) caughtUp() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushed >= t.published
}

// Send hands m to the session (never blocking).
func (t *SSE) Send(m Message) error {
	ev := &sse.Event{ID: []byte(m.ID), Event: []byte(m.Type), Data: m.Data}
	if m.Retry != "" {
		ev.Retry = []byte(m.Retry)
	}
	return t.publish(ev, true)
}

// Keepalive hands on a heartbeat comment.
func (t *SSE) Keepalive() error {
	return t.publish(&sse.Event{Comment: []byte("heartbeat")}, false)
}

// Inline is true: Send and Keepalive never block.
func (t *SSE) Inline() bool { return true }

// Abort makes a write that waits for a stalled client fail at once, and
// ends the connection.
func (t *SSE) Abort() {
	t.w.abort()
	t.Stop()
}

// Close tells an SSE client why its stream ends (the event Goodbye makes of
// code and reason, if any), waits until that is on the wire, and ends the
// connection.
func (t *SSE) Close(code int, reason string) {
	var last *sse.Event
	if t.goodbye != nil {
		if m, ok := t.goodbye(code, reason); ok {
			last = &sse.Event{Event: []byte(m.Type), Data: m.Data}
			if m.Retry != "" {
				last.Retry = []byte(m.Retry)
			}
		}
	}
	if last != nil {
		t.mu.Lock()
		last.ID = t.lastID
		t.mu.Unlock()
	}
	if last != nil && t.publish(last, true) == nil {
		deadline := time.Now().Add(CloseWait)
		for !t.caughtUp() && time.Now().Before(deadline) {
			select {
			case <-t.flushSig:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	t.Stop()
}
