package api

import (
	"context"
	"encoding/json"
	"net/http"
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
//     client was sent), so the Hub and the client's writer do the fanout and
//     the r3labs stream only carries one client's already-decided messages.
//     The writer feeds it with TryPublish: a full buffer means a slow
//     consumer, and only that connection ends.
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
//     the server's Headers, heartbeats are comment events sent by the
//     client's writer, and every write gets a deadline through a wrapped
//     ResponseWriter.

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
	srv.BufferSize = 32
	srv.Headers = map[string]string{"X-Accel-Buffering": "no"}
	return srv
}

// serveSSE serves one of a community's SSE streams.
func (s *Server) serveSSE(stream streams.Stream) echo.HandlerFunc {
	return func(ec echo.Context) error {
		community, err := community(ec)
		if err != nil {
			return err
		}
		r := ec.Request()
		log := s.log.With("request_id", requestID(ec), "community", community, "stream", string(stream), "transport", "sse")
		ident, err := s.verifier.Authorize(r.Context(), auth.Extract(r), s.bus, community, stream)
		if err != nil {
			code, reason := closeFor(err)
			log.Info("connection refused", "code", code, "reason", reason)
			s.metrics.refusedWith("sse", code)
			return err
		}
		lastID := r.Header.Get("Last-Event-ID")
		if lastID == "" {
			lastID = r.URL.Query().Get("last_event_id")
		}

		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		w := &sseWriter{ResponseWriter: ec.Response(), rc: http.NewResponseController(ec.Response()), flushed: make(chan struct{}, 1)}
		c := s.newClient("sse", community, stream, ident)
		streamID := strconv.FormatUint(c.id, 10)
		tr := &sseTransport{srv: s.sse, stream: streamID, w: w, cancel: cancel}
		c.tr = tr
		c.keepaliveEvery = s.opts.SSEHeartbeat

		snap, cleanup, err := s.attach(r.Context(), c)
		if err != nil {
			log.Warn("attach failed", "err", err)
			return err
		}
		defer cleanup()
		resumed := false
		if lastID != "" {
			missed, ok, err := s.bus.History(r.Context(), community, lastID)
			if err != nil {
				log.Warn("history failed", "err", err)
			}
			if ok && err == nil {
				c.resume(missed, snap)
				resumed = true
			}
		}
		if !resumed {
			c.begin(snap)
		}

		s.sse.CreateStream(streamID)
		defer s.sse.RemoveStream(streamID) // after ServeHTTP returned: no subscriber left
		req := r.Clone(ctx)
		req.Header.Del("Last-Event-ID")
		req.URL.RawQuery = "stream=" + streamID // also keeps ?token= away from r3labs

		start := time.Now()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel() // whatever ended the writer ends ServeHTTP
			// r3labs flushes the headers once the subscriber is attached;
			// an event published before that would be lost.
			select {
			case <-w.flushed:
			case <-ctx.Done():
				return
			}
			c.runWriter()
		}()
		log.Info("connection open", "conn", c.id, "sub", ident.Subject, "resumed", resumed)
		s.sse.ServeHTTP(w, req)
		close(c.done)
		wg.Wait()
		c.mu.Lock()
		code := c.code
		c.mu.Unlock()
		s.metrics.ended(c, code, time.Since(start))
		log.Info("connection closed", "conn", c.id, "code", code, "duration_ms", time.Since(start).Milliseconds())
		return nil
	}
}

// sseWriter gives every write a deadline and counts flushes, so that the
// writer knows when r3labs has put an event on the wire.
type sseWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	flushes atomic.Int64
	flushed chan struct{} // cap 1: a flush happened
}

func (w *sseWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(writeWait))
	return w.ResponseWriter.Write(p)
}

func (w *sseWriter) Flush() {
	_ = w.rc.Flush()
	w.flushes.Add(1)
	select {
	case w.flushed <- struct{}{}:
	default:
	}
}

// sseTransport hands a client's messages to its r3labs stream.
type sseTransport struct {
	srv       *sse.Server
	stream    string
	w         *sseWriter
	cancel    context.CancelFunc
	published int64
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
		for t.w.flushes.Load() < t.published+1 && time.Now().Before(deadline) {
			select {
			case <-t.w.flushed:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	t.cancel()
}

type slowConsumerError struct{}

func (slowConsumerError) Error() string { return "slow consumer" }

var errSlowConsumer error = slowConsumerError{}
