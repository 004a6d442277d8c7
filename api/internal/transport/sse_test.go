package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/internal/hangup"
)

// The SSE transport over real connections with net/http (no echo).

// sseServer serves one SSE connection per request through node, as api
// does: hijacked (an HTTP/1.1 connection) and started, with msg as its
// first message. Each connection's transport comes out of conns, and its
// end closes the channel that comes out of ended.
type sseServer struct {
	*httptest.Server
	conns chan *SSE
	ended chan chan struct{}
}

func newSSEServer(t *testing.T, node *SSENode, secure bool, msg Message) *sseServer {
	t.Helper()
	s := &sseServer{conns: make(chan *SSE, 1), ended: make(chan chan struct{}, 1)}
	var id uint64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id++
		tr := node.NewConn(id, nil)
		hdr := w.Header().Clone()
		hdr.Set("Content-Type", "text/event-stream")
		if !tr.Hijack(w, hdr) {
			t.Errorf("Hijack failed on %s", r.Proto)
			return
		}
		ended := make(chan struct{})
		tr.Start(func() {
			tr.Stop()
			tr.Finish()
			close(ended)
		})
		<-tr.Attached()
		if err := tr.Send(msg); err != nil {
			t.Errorf("Send: %v", err)
		}
		s.conns <- tr
		s.ended <- ended
	})
	if secure {
		s.Server = httptest.NewTLSServer(h) // a tls.Listener with a test certificate
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

// newNode returns an SSENode with timings tm for one test.
func newNode(t *testing.T, tm Timings) *SSENode {
	t.Helper()
	node, err := NewSSENode(new(alarm.Wheel), tm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	return node
}

// lingerFor returns tm with SSELinger d.
func lingerFor(tm Timings, d time.Duration) Timings {
	tm.SSELinger = d
	return tm
}

// parkingNode returns an SSENode whose idle sessions park after 20 ms.
func parkingNode(t *testing.T) *SSENode {
	return newNode(t, lingerFor(DefaultTimings(), 20*time.Millisecond))
}

// readEvent reads the response until a blank line ends an event, and
// returns the event's lines.
func readEvent(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if len(lines) > 0 {
				return lines
			}
			continue
		}
		lines = append(lines, line)
	}
}

// waitParked waits until tr's session is parked.
func waitParked(t *testing.T, tr *SSE) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if parked, _ := tr.Sessions(); parked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the SSE session did not park")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testParkedHangup opens an SSE stream, reads its first event, waits for
// it to park, unparks it with a second message, lets it park again, and
// then hangs up: the transport must notice with no session running.
func testParkedHangup(t *testing.T, node *SSENode, secure bool) {
	first := Message{Type: "visitor_count", ID: "1-0", Data: []byte(`{"type":"visitor_count","count":1}`)}
	srv := newSSEServer(t, node, secure, first)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.TransferEncoding == nil || resp.TransferEncoding[0] != "chunked" || resp.Close != true {
		t.Fatalf("response: %d %v close=%v; want 200, chunked, Connection: close", resp.StatusCode, resp.TransferEncoding, resp.Close)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
		t.Fatalf("X-Accel-Buffering %q; want no", got)
	}
	tr, ended := <-srv.conns, <-srv.ended
	t.Cleanup(func() { tr.Stop(); <-ended })
	w := tr.w.(*sseConnWriter)
	_, isTLS := w.conn.(*tls.Conn)
	if isTLS != secure {
		t.Fatalf("the hijacked connection is a %T", w.conn)
	}
	if watched := w.unwatch != nil; watched != (node.hangups != nil && !secure) {
		t.Fatalf("watched by the hangup watcher: %v; want it only on plain TCP with a watcher", watched)
	}
	r := bufio.NewReader(resp.Body)
	ev := strings.Join(readEvent(t, r), "\n")
	if want := "id: 1-0\ndata: {\"type\":\"visitor_count\",\"count\":1}\nevent: visitor_count\nretry: 2000"; ev != want {
		t.Fatalf("first event:\n%s\nwant:\n%s", ev, want)
	}
	waitParked(t, tr)
	_, before := tr.Sessions()

	// A parked connection unparks for a message, on the same response.
	if err := tr.Send(Message{Type: "visitor_joined", ID: "2-0", Data: []byte(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	ev = strings.Join(readEvent(t, r), "\n")
	if want := "id: 2-0\ndata: {\"n\":2}\nevent: visitor_joined"; ev != want {
		t.Fatalf("event after unparking:\n%s\nwant:\n%s", ev, want)
	}
	if _, started := tr.Sessions(); started != before+1 {
		t.Fatalf("%d sessions started; want %d", started, before+1)
	}
	waitParked(t, tr)

	select {
	case <-ended:
		t.Fatal("the connection ended before the client went")
	case <-time.After(50 * time.Millisecond):
	}
	_ = resp.Body.Close() // the client hangs up on a parked stream
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("a parked SSE connection's hang-up went unnoticed")
	}
}

// TestSSEParkedHangup: the node's hangup watcher notices a parked client
// going (no goroutine of the connection's own is running).
func TestSSEParkedHangup(t *testing.T) {
	t.Parallel()
	node := parkingNode(t)
	if hangup.Supported && node.hangups == nil {
		t.Fatal("no hangup watcher on a platform that has one")
	}
	testParkedHangup(t, node, false)
}

// TestSSEParkedHangupReader: without a hangup watcher, the connection's
// reader goroutine notices the client going.
func TestSSEParkedHangupReader(t *testing.T) {
	t.Parallel()
	node := parkingNode(t)
	node.DropHangupWatcher()
	testParkedHangup(t, node, false)
}

// TestSSEOverTLS: a stream on a TLS connection is hijacked, written in
// chunks through TLS, parks, and its client's hang-up is noticed (by a
// reader goroutine: the watcher cannot see through TLS).
func TestSSEOverTLS(t *testing.T) {
	t.Parallel()
	node := parkingNode(t)
	testParkedHangup(t, node, true)
}

// TestSSEStalledPeer: a client that stops reading makes the stream end
// once the socket is full and the write deadline passes, and Close on the
// writer's side returns within its bound.
func TestSSEStalledPeer(t *testing.T) {
	t.Parallel()
	node := newNode(t, lingerFor(shortWriteWait(200*time.Millisecond), time.Hour)) // stay in one session
	srv := newSSEServer(t, node, false, Message{Type: "m", ID: "1", Data: []byte(`{}`)})
	resp, err := srv.Client().Get(srv.URL) // and never read the body
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tr, ended := <-srv.conns, <-srv.ended
	t.Cleanup(func() { tr.Stop(); <-ended })
	big := []byte(`{"x":"` + strings.Repeat("y", 32<<10) + `"}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-ended:
			return // the stalled write failed and ended the connection
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("a stalled SSE client never ended its stream")
		}
		if err := tr.Send(Message{Type: "m", ID: "2", Data: big}); err != nil {
			// A full r3labs buffer: api counts that client a slow
			// consumer and aborts it.
			tr.Abort()
			select {
			case <-ended:
				return
			case <-time.After(5 * time.Second):
				t.Fatal("Abort did not end a stalled SSE stream")
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// goneAtStart is a response whose client is found gone as soon as it is
// watched, as the hangup watcher may report at once.
type goneAtStart struct{ nullSSEResponse }

func (w *goneAtStart) start() { w.tr.Stop() }

// TestSSEGoneWhileStarting: a client found gone while its stream starts
// ends the connection once.
func TestSSEGoneWhileStarting(t *testing.T) {
	tr := newNode(t, DefaultTimings()).NewConn(1, nil)
	tr.ctx, tr.cancel = context.WithCancel(context.Background())
	tr.w = &goneAtStart{nullSSEResponse{tr: tr, hdr: http.Header{}}}
	var ends atomic.Int32
	tr.Start(func() { ends.Add(1) })
	deadline := time.Now().Add(5 * time.Second)
	for ends.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a second end would come now
	if n := ends.Load(); n != 1 {
		t.Fatalf("the connection ended %d times; want once", n)
	}
}
