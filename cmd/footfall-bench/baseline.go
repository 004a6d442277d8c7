package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The bare baseline: the least any gateway can do. A plain
// gorilla/websocket server with no auth and no presence: every POST
// /publish is framed once (websocket.PreparedMessage) and written to every
// connection of that community and stream, one after the other, by one
// fanout goroutine. Each connection has one reader goroutine (for control
// frames and to notice the close), started fresh so that the HTTP
// handler's state is freed; 1 KiB read buffers, pooled write buffers.
// That is about 7 KiB of RSS per idle connection. It sends {"type":"hello"} when a
// connection is registered, so that the harness measures "connected and
// subscribed" the same way as with footfall's first snapshot. SSE is served
// the same way (one goroutine per stream, as net/http requires).

type baseline struct {
	up websocket.Upgrader

	mu    sync.Mutex
	conns map[string]map[*bconn]struct{} // community + " " + stream

	pubs chan publication
	done chan struct{}
}

type bconn struct {
	ws  *websocket.Conn
	sse chan []byte // SSE only: the events to write
}

type publication struct {
	key string
	pm  *websocket.PreparedMessage
	sse []byte
}

var helloMsg = []byte(`{"type":"hello"}`)

func newBaseline() *baseline {
	b := &baseline{
		up: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		conns: make(map[string]map[*bconn]struct{}),
		pubs:  make(chan publication, 1024),
		done:  make(chan struct{}),
	}
	go b.fanout()
	return b
}

func (b *baseline) close() { close(b.done) }

func (b *baseline) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /ws/communities/{id}/visitors/", b.serveWS("visitors"))
	mux.HandleFunc("GET /ws/communities/{id}/visitor-dashboard/", b.serveWS("dashboard"))
	mux.HandleFunc("GET /sse/communities/{id}/visitors/", b.serveSSE("visitors"))
	mux.HandleFunc("GET /sse/communities/{id}/visitor-dashboard/", b.serveSSE("dashboard"))
	mux.HandleFunc("POST /publish", b.publish)
	return mux
}

func (b *baseline) add(key string, c *bconn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.conns[key]
	if m == nil {
		m = make(map[*bconn]struct{})
		b.conns[key] = m
	}
	m[c] = struct{}{}
}

func (b *baseline) remove(key string, c *bconn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns[key], c)
	if len(b.conns[key]) == 0 {
		delete(b.conns, key)
	}
}

func (b *baseline) serveWS(stream string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("id") + " " + stream
		ws, err := b.up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, helloMsg); err != nil {
			ws.Close()
			return
		}
		c := &bconn{ws: ws}
		b.add(key, c)
		// The reader runs on a fresh goroutine and the handler returns, so
		// that net/http's per-connection state (its 4 KiB read buffer, the
		// handler's grown stack) is freed: one small goroutine per
		// connection is all that is left.
		go func() {
			defer ws.Close()
			defer b.remove(key, c)
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
			}
		}()
	}
}

func (b *baseline) serveSSE(stream string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("id") + " " + stream
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "no flusher", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		_, _ = fmt.Fprintf(w, "data: %s\n\n", helloMsg)
		fl.Flush()
		c := &bconn{sse: make(chan []byte, 64)}
		b.add(key, c)
		defer b.remove(key, c)
		for {
			select {
			case ev := <-c.sse:
				if _, err := w.Write(ev); err != nil {
					return
				}
				fl.Flush()
			case <-r.Context().Done():
				return
			case <-b.done:
				return
			}
		}
	}
}

// publish is POST /publish?community=ID&stream=visitors|dashboard with the
// message as the body. It answers 202 at once, like footfall's service API;
// the fanout goroutine writes.
func (b *baseline) publish(w http.ResponseWriter, r *http.Request) {
	msg, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, msg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ev := make([]byte, 0, len(msg)+8)
	ev = append(append(append(ev, "data: "...), msg...), "\n\n"...)
	q := r.URL.Query()
	select {
	case b.pubs <- publication{key: q.Get("community") + " " + q.Get("stream"), pm: pm, sse: ev}:
		w.WriteHeader(http.StatusAccepted)
	default:
		http.Error(w, "fanout queue full", http.StatusServiceUnavailable)
	}
}

func (b *baseline) fanout() {
	var targets []*bconn
	for {
		var p publication
		select {
		case p = <-b.pubs:
		case <-b.done:
			return
		}
		targets = targets[:0]
		b.mu.Lock()
		for c := range b.conns[p.key] {
			targets = append(targets, c)
		}
		b.mu.Unlock()
		deadline := time.Now().Add(5 * time.Second)
		for _, c := range targets {
			if c.ws == nil {
				select {
				case c.sse <- p.sse:
				default: // a slow SSE client misses it
				}
				continue
			}
			_ = c.ws.SetWriteDeadline(deadline)
			if err := c.ws.WritePreparedMessage(p.pm); err != nil {
				_ = c.ws.Close() // its reader ends and removes it
			}
		}
	}
}

// cmdBaselineServer is the hidden `footfall-bench baseline-server`.
func cmdBaselineServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("footfall-bench baseline-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := raiseFDLimit(0); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	b := newBaseline()
	srv := &http.Server{Handler: b.handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "baseline listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	b.close() // ends the SSE streams
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
