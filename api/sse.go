package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/alarm"
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
//   - Parking: an r3labs stream costs three goroutines (its run loop,
//     ServeHTTP, and ServeHTTP's context watcher), more than everything else
//     an idle connection holds. So a hijacked connection runs its r3labs
//     stream in sessions: one starts when a message is ready, and once all
//     it was given is on the wire and no message came for sseLinger, it is
//     parked (ServeHTTP is ended, the stream removed) while the connection
//     stays open. The next message starts a new session on the same
//     connection; r3labs writes its events exactly as before, and the
//     response's headers went out once, with the first. A parked connection
//     holds no goroutine: the node's hangup watcher (internal/hangup, one
//     epoll set) notices its client going. Where there is none (not Linux,
//     or TLS), a small reader goroutine per connection does. See
//     sseTransport.

// sseRetry is the reconnection delay hinted to EventSource clients;
// sseShutdownRetry the one sent when a node stops (reconnect at once,
// elsewhere).
const (
	sseRetry         = "2000"
	sseShutdownRetry = "250"
)

// sseLinger is how long a session of a hijacked SSE connection stays up
// after the last message it carried (heartbeats do not count): a stream that
// is sent something every few seconds keeps its session, an idle one parks.
// A var for tests.
var sseLinger = 2 * time.Second

// sseMaxPending bounds the events that wait while a session starts; it is
// the r3labs stream's buffer too, so that all of them fit into it at once.
const sseMaxPending = 64

// sseMaxReplay bounds the events a resume replays: below sseMaxPending, so
// that a replay handed over in one go never overruns the stream's buffer
// (which would end the stream and make the client retry the same resume).
const sseMaxReplay = 48

// maxLastEventIDBytes bounds a Last-Event-ID; a longer one is unknown.
const maxLastEventIDBytes = 128

func newSSEServer() *sse.Server {
	srv := sse.New()
	srv.AutoReplay = false
	srv.AutoStream = false
	// A stream's queue in front of its subscriber's (64 events, fixed by
	// r3labs): past both, TryPublish fails and the client is a slow
	// consumer. It holds sseMaxPending, so that what waited for a session
	// to start is handed over in one go.
	srv.BufferSize = sseMaxPending
	srv.Headers = map[string]string{"X-Accel-Buffering": "no"}
	return srv
}

// serveSSE serves one of a community's SSE streams.
//
// An HTTP/1.1 connection is hijacked once the client is authenticated and
// attached, and the handler returns ("hijack and return", as for
// WebSockets): net/http's buffers, background reader, request and contexts
// are freed. r3labs' ServeHTTP then runs in sessions on a goroutine of the
// connection's own against sseConnWriter, which writes the chunked response
// straight to the connection, and the hangup watcher notices when the
// client goes. Other connections (HTTP/2, HTTP/1.0) are served inside the
// handler, in one session.
func (s *Server) serveSSE(stream streams.Stream) echo.HandlerFunc {
	return func(ec echo.Context) error {
		community, err := community(ec)
		if err != nil {
			return err
		}
		if err := s.refuseWhileDraining(ec); err != nil {
			return err
		}
		r := ec.Request()
		reqID := requestID(ec)
		who, err := s.identify(r, ec.Response().Header(), ec.RealIP(), auth.Extract(r), community, stream, "sse")
		ident := who.ident
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
		c.hook = who.grant
		tr := &sseTransport{srv: s.sse, alarms: &s.alarms, base: strconv.FormatUint(c.id, 10), attached: make(chan struct{}, 1), flushSig: make(chan struct{}, 1)}
		tr.alarm = alarm.New(tr.ring)
		c.tr = tr
		c.keepaliveEvery = s.opts.SSEHeartbeat

		snap, cleanup, err := s.attach(r.Context(), c)
		if err != nil {
			s.log.Warn("attach failed", "request_id", reqID, "community", community, "stream", string(stream), "transport", "sse", "err", err)
			return err
		}
		var missed []streams.Event
		resumed := false
		// A resume replays the missed events only when they fit in what
		// the stream can take at once; a longer gap, or an id too long to
		// be one of ours, gets a fresh snapshot instead (docs/protocol.md,
		// SSE resume).
		if lastID != "" && len(lastID) <= maxLastEventIDBytes {
			m, ok, err := s.bus.History(r.Context(), community, lastID, sseMaxReplay)
			if err != nil {
				s.log.Warn("history failed", "request_id", reqID, "community", community, "err", err)
			}
			if ok && err == nil {
				missed, resumed = m, true
			}
		}

		// The response: the hijacked connection, or (HTTP/2, HTTP/1.0) the
		// handler's own ResponseWriter, which cannot park (the handler has
		// to stay up for it anyway).
		var w sseResponse
		if r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 {
			if conn, _, err := http.NewResponseController(ec.Response()).Hijack(); err == nil {
				tr.ctx, tr.cancel = context.WithCancel(context.Background())
				hdr := ec.Response().Header().Clone()
				w = &sseConnWriter{conn: conn, header: hdr, tr: tr, hangups: s.hangups, readerDone: make(chan struct{})}
				tr.parkable = true
				ec.Response().Committed, ec.Response().Status = true, http.StatusOK // for the access log
				c.releaseSlot = takeConnSlot(ec)
			}
		}
		if w == nil {
			tr.ctx, tr.cancel = context.WithCancel(r.Context())
			w = &sseWriter{ResponseWriter: ec.Response(), rc: http.NewResponseController(ec.Response()), tr: tr}
		}
		tr.w = w

		done := make(chan struct{})
		start := time.Now()
		tr.serve = func() {
			if tr.sessions() {
				s.endSSE(c, tr, cleanup, start)
				close(done)
			}
		}
		w.start()
		tr.mu.Lock()
		tr.running = true
		tr.mu.Unlock()
		go tr.serve()
		// r3labs flushes the headers once the subscriber is attached; the
		// stream's first message waits for that flush (events meanwhile
		// wait in early).
		select {
		case <-tr.attached:
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

// endSSE ends a connection whose last session has ended: it runs on the
// connection's stream goroutine.
func (s *Server) endSSE(c *client, t *sseTransport, cleanup func(), start time.Time) {
	c.finish()
	t.stop()
	c.writers.Wait()
	s.alarms.Set(t.alarm, time.Time{})
	t.w.finish()
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
