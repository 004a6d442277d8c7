package transport

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The WebSocket transport, tested against real sockets with net/http (no
// echo) and a gorilla client whose incoming bytes are parsed by hand, so
// that every frame footfall writes is checked whole.

// wsPair upgrades one connection with the default timings through an
// httptest server (TLS if secure) and returns the server's WS and the
// client.
func wsPair(t *testing.T, secure bool) (*WS, *websocket.Conn) {
	t.Helper()
	return wsPairTimed(t, secure, DefaultTimings())
}

// wsPairTimed is wsPair with timings tm.
func wsPairTimed(t *testing.T, secure bool, tm Timings) (*WS, *websocket.Conn) {
	t.Helper()
	got := make(chan *WS, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := Upgrade(w, r, nil, &tm)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		got <- ws
	})
	var srv *httptest.Server
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if secure {
		srv = httptest.NewTLSServer(h) // a tls.Listener with a test certificate
		d.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	client, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var ws *WS
	select {
	case ws = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no upgrade")
	}
	t.Cleanup(func() { client.Close(); ws.Shut() })
	return ws, client
}

// shortWriteWait returns the default timings with write wait d.
func shortWriteWait(d time.Duration) Timings {
	tm := DefaultTimings()
	tm.WriteWait = d
	return tm
}

// shrink makes the server's send buffer and the client's receive buffer
// small, so that a peer that does not read fills the socket quickly.
func shrink(t *testing.T, ws *WS, client *websocket.Conn) {
	t.Helper()
	if err := ws.lc.Conn.(*net.TCPConn).SetWriteBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	if err := client.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
}

// frame is one server frame as read off the wire.
type wireFrame struct {
	fin     bool
	opcode  byte
	payload []byte
}

// readFrame parses one unmasked server frame, strictly: a frame that is
// masked, fragmented or carries reserved bits is an error.
func readFrame(r *bufio.Reader) (wireFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wireFrame{}, err
	}
	f := wireFrame{fin: h[0]&0x80 != 0, opcode: h[0] & 0x0f}
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 || !f.fin {
		return f, fmt.Errorf("malformed frame header % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return f, fmt.Errorf("frame of %d bytes", n)
	}
	f.payload = make([]byte, n)
	_, err := io.ReadFull(r, f.payload)
	return f, err
}

// payload is message i of a test, size bytes that say which one it is.
func payload(i, size int) []byte {
	b := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
	copy(b, fmt.Sprintf(`{"i":%d}`, i))
	return b
}

// fill writes messages without blocking until the socket is full, and
// returns how many went (the last one in part: its rest and the write lock
// are kept for the writer).
func fill(t *testing.T, ws *WS, size int) int {
	t.Helper()
	if !ws.TryLock() {
		t.Fatal("TryLock failed on an idle plain TCP connection")
	}
	for i := range 10000 {
		handed, err := ws.SendNow(Message{Data: payload(i, size)})
		if err != nil {
			t.Fatalf("SendNow %d: %v", i, err)
		}
		if handed {
			if !ws.held || len(ws.rest) == 0 || len(ws.rest) > size+4 {
				t.Fatalf("handed over %d bytes of a %d-byte message (held %v)", len(ws.rest), size, ws.held)
			}
			return i + 1
		}
	}
	t.Fatal("the socket never filled")
	return 0
}

// TestWSStalledPeer: against a peer that reads nothing, writes without
// blocking stop at a full socket, and the writer that takes over the
// half-written frame gives up after WriteWait, releasing the write lock.
func TestWSStalledPeer(t *testing.T) {
	t.Parallel()
	tm := shortWriteWait(300 * time.Millisecond)
	ws, client := wsPairTimed(t, false, tm)
	shrink(t, ws, client)
	fill(t, ws, 16<<10)
	start := time.Now()
	err := ws.Resume() // the writer goroutine, on a peer that never reads
	elapsed := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Resume on a stalled peer = %v; want a timeout", err)
	}
	if elapsed > 5*tm.WriteWait {
		t.Fatalf("Resume took %v; want about WriteWait (%v)", elapsed, tm.WriteWait)
	}
	if !ws.TryLock() {
		t.Fatal("the write lock is still held after the writer gave up")
	}
	ws.Unlock()
}

// TestWSHalfWrittenFrameHandedToWriter: a frame that the socket took only
// in part is finished by the writer goroutine before anything else goes
// out, a pong the reader answers meanwhile included; the peer sees every
// frame whole and in order.
func TestWSHalfWrittenFrameHandedToWriter(t *testing.T) {
	ws, client := wsPair(t, false)
	shrink(t, ws, client)
	const size = 8 << 10
	n := fill(t, ws, size)

	// The peer pings; the server's reader answers, and its pong must wait
	// for the handed-over frame.
	if err := client.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		ws.StartReading(1<<20, nil)
		ws.Idle() // answers the ping, then waits until the connection ends
	}()
	time.Sleep(50 * time.Millisecond) // the reader is blocked on the write lock

	writer := make(chan error, 1)
	go func() {
		if err := ws.Resume(); err != nil {
			writer <- err
			return
		}
		writer <- ws.Send(Message{Data: []byte(`{"after":true}`)})
	}()

	r := bufio.NewReader(client.NetConn())
	_ = client.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		f, err := readFrame(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.opcode != websocket.TextMessage || !bytes.Equal(f.payload, payload(i, size)) {
			t.Fatalf("frame %d: opcode %d, %d bytes %.20q; want text message %d whole", i, f.opcode, len(f.payload), f.payload, i)
		}
	}
	var pong, after bool
	for !pong || !after {
		f, err := readFrame(r)
		if err != nil {
			t.Fatalf("after the handed-over frame: %v", err)
		}
		switch {
		case f.opcode == websocket.PongMessage && string(f.payload) == "p1":
			pong = true
		case f.opcode == websocket.TextMessage && string(f.payload) == `{"after":true}`:
			after = true
		default:
			t.Fatalf("unexpected frame: opcode %d %q", f.opcode, f.payload)
		}
	}
	if err := <-writer; err != nil {
		t.Fatalf("writer: %v", err)
	}
	ws.Shut()
	<-readerDone
}

// TestWSKeepaliveUnderBroadcasts: the writer's keepalive pings and
// broadcasts written without blocking share the connection for longer than
// WriteWait: no write fails on the deadline a ping set, and no ping lands
// inside a data frame.
func TestWSKeepaliveUnderBroadcasts(t *testing.T) {
	t.Parallel()
	ws, client := wsPairTimed(t, false, shortWriteWait(100*time.Millisecond))

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		ws.StartReading(1<<20, nil)
		for {
			if _, ok := ws.Idle(); !ok {
				return
			}
			if _, _, _, done := ws.Read(); done {
				return
			}
		}
	}()

	// The peer reads everything (and sends nothing: its pings' pongs would
	// move the write deadline too).
	const rounds, size, keepEvery = 40, 3000, 5
	type result struct {
		texts, pings int
		err          error
	}
	res := make(chan result, 1)
	go func() {
		var out result
		r := bufio.NewReader(client.NetConn())
		_ = client.NetConn().SetReadDeadline(time.Now().Add(20 * time.Second))
		for out.texts < rounds || out.pings < rounds/keepEvery {
			f, err := readFrame(r)
			if err != nil {
				out.err = err
				break
			}
			switch f.opcode {
			case websocket.TextMessage:
				if !bytes.Equal(f.payload, payload(out.texts, size)) {
					out.err = fmt.Errorf("text frame %d: %.20q", out.texts, f.payload)
				}
				out.texts++
			case websocket.PingMessage:
				out.pings++
			default:
				out.err = fmt.Errorf("unexpected frame: opcode %d", f.opcode)
			}
			if out.err != nil {
				break
			}
		}
		res <- out
	}()

	for i := range rounds {
		// A broadcast, written inline without blocking (the peer reads).
		if !ws.TryLock() {
			t.Fatalf("round %d: TryLock failed", i)
		}
		handed, err := ws.SendNow(Message{Data: payload(i, size)})
		if err != nil {
			t.Fatalf("round %d: SendNow: %v", i, err)
		}
		if handed {
			if err := ws.Resume(); err != nil {
				t.Fatalf("round %d: Resume: %v", i, err)
			}
		} else {
			ws.Unlock()
		}
		// Now and then the writer goroutine's keepalive, whose ping sets
		// the write deadline: broadcasts go on past it.
		if i%keepEvery == 0 {
			if err := ws.Keepalive(); err != nil {
				t.Fatalf("round %d: Keepalive: %v", i, err)
			}
		}
		time.Sleep(30 * time.Millisecond) // keepalives 1.5 WriteWaits apart
	}
	got := <-res
	if got.err != nil {
		t.Fatalf("peer: %v (after %d texts, %d pings)", got.err, got.texts, got.pings)
	}
	if got.texts != rounds || got.pings != rounds/keepEvery {
		t.Fatalf("peer got %d texts and %d pings; want %d and %d", got.texts, got.pings, rounds, rounds/keepEvery)
	}
	ws.Shut()
	<-readerDone
}

// TestWSOverTLS: on a TLS connection nothing is written inline (TryLock
// fails: the writer goroutine writes everything), frames and keepalives go
// out whole, the reader reads through TLS, and a goodbye reaches the peer
// with its code.
func TestWSOverTLS(t *testing.T) {
	ws, client := wsPair(t, true)
	if _, ok := ws.lc.Conn.(*tls.Conn); !ok {
		t.Fatalf("the server's connection is a %T; want *tls.Conn", ws.lc.Conn)
	}
	if ws.TryLock() {
		t.Fatal("TryLock succeeded on TLS: inline writes would bypass TLS")
	}
	for i := range 3 {
		if err := ws.Send(Message{Data: payload(i, 200)}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if err := ws.Keepalive(); err != nil {
		t.Fatal(err)
	}
	pinged := make(chan struct{}, 1)
	client.SetPingHandler(func(string) error { pinged <- struct{}{}; return nil })
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		mt, data, err := client.ReadMessage()
		if err != nil || mt != websocket.TextMessage || !bytes.Equal(data, payload(i, 200)) {
			t.Fatalf("message %d: %d %.20q %v", i, mt, data, err)
		}
	}

	msgs := make(chan string, 1)
	readerDone := make(chan int, 1)
	go func() {
		ws.StartReading(1<<20, nil)
		for {
			code, ok := ws.Idle()
			if !ok {
				readerDone <- code
				return
			}
			text, data, code, done := ws.Read()
			if done {
				readerDone <- code
				return
			}
			if text {
				msgs <- string(data)
			}
		}
	}()
	if err := client.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m != `{"type":"ping"}` {
			t.Fatalf("server read %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server read nothing over TLS")
	}

	ws.Close(4002, "bye")
	_, _, err := client.ReadMessage() // sees the ping on the way, then the close
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "bye" {
		t.Fatalf("client read %v; want close 4002 bye", err)
	}
	select {
	case <-pinged:
	default:
		t.Fatal("the keepalive ping did not arrive")
	}
	// The peer answers the close; the reader reports its code.
	_ = client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, ""), time.Now().Add(time.Second))
	select {
	case code := <-readerDone:
		if code != 4002 {
			t.Fatalf("reader ended with %d; want the peer's 4002", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not end after the close handshake")
	}
}

// TestWSPeerGoneIsAbnormal: a peer that drops the connection without a
// close frame ends an idle reader with 1006.
func TestWSPeerGoneIsAbnormal(t *testing.T) {
	ws, client := wsPair(t, false)
	done := make(chan int, 1)
	go func() {
		ws.StartReading(1<<20, nil)
		code, _ := ws.Idle()
		done <- code
	}()
	_ = client.NetConn().Close()
	select {
	case code := <-done:
		if code != CloseAbnormal {
			t.Fatalf("Idle ended with %d; want %d", code, CloseAbnormal)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the idle reader did not notice the peer going")
	}
}

// TestTextFrame pins the frame header for the three length forms.
func TestTextFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		b := TextFrame(bytes.Repeat([]byte("x"), n))
		f, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || f.opcode != websocket.TextMessage || len(f.payload) != n {
			t.Fatalf("TextFrame of %d bytes: %v %d %d", n, err, f.opcode, len(f.payload))
		}
		want := 2
		if n > 0xffff {
			want = 10
		} else if n >= 126 {
			want = 4
		}
		if len(b)-n != want {
			t.Fatalf("TextFrame of %d bytes: header of %d bytes; want %d", n, len(b)-n, want)
		}
	}
}
