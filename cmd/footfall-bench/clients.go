package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Probe messages carry their publish time (Unix nanoseconds) in a field
// the client finds by bytes.Index; footfall delivers broadcast messages as
// given, extra fields kept.
var (
	probeKeyDashboard = []byte(`"value":`)
	probeKeyVisitors  = []byte(`"t":`)
)

func probeKey(stream string) []byte {
	if stream == "dashboard" {
		return probeKeyDashboard
	}
	return probeKeyVisitors
}

// probeMessage is the broadcast message of one probe to community sent at
// ns: a valid server message of the stream (docs/protocol.md, streams, with the
// fields the service API requires) plus the send time.
func probeMessage(stream, community string, ns int64) []byte {
	ts := time.Unix(0, ns).UTC().Format(time.RFC3339)
	b := make([]byte, 0, 160)
	if stream == "dashboard" {
		b = fmt.Appendf(b, `{"type":"analytics_update","metric":"bench","timestamp":%q,"value":%d}`, ts, ns)
	} else {
		b = fmt.Appendf(b, `{"type":"visitor_count","community_id":%q,"count":0,"timestamp":%q,"t":%d}`, community, ts, ns)
	}
	return b
}

// counters are shared by the clients of one run.
type counters struct {
	ready, failed, received, disconnected atomic.Int64

	mu        sync.Mutex
	connectNS []int64   // dial start to first message, per ready client
	lastReady time.Time // when the last client became ready
	errs      errCounts
}

func newCounters() *counters { return &counters{errs: errCounts{}} }

func (ctr *counters) readyIn(d time.Duration, at time.Time) {
	ctr.mu.Lock()
	ctr.connectNS = append(ctr.connectNS, int64(d))
	if at.After(ctr.lastReady) {
		ctr.lastReady = at
	}
	ctr.mu.Unlock()
	ctr.ready.Add(1)
}

func (ctr *counters) fail(err error) {
	ctr.mu.Lock()
	ctr.errs.add(err)
	ctr.mu.Unlock()
	ctr.failed.Add(1)
}

// benchClient is one WebSocket or SSE client: one goroutine that dials,
// then reads until the connection ends. Per message it takes the time,
// looks for the probe field and, if present, records the latency.
type benchClient struct {
	community string
	stream    string
	token     string
	key       []byte
	local     net.IP // source address, nil: the system's choice
	// onMsg, when set, sees every message (churn watchers); it runs on
	// the client's goroutine.
	onMsg func(msg []byte, now int64)

	// Owned by the client's goroutine; read by others after done closes.
	lat       []int64
	probes    int
	msgs      int
	ready     bool
	closeCode int
	err       error
	isReady   atomic.Bool // ready, for other goroutines

	mu      sync.Mutex
	closer  func()
	stopped bool
	done    chan struct{}
}

func newBenchClient(community, stream, token string) *benchClient {
	return &benchClient{community: community, stream: stream, token: token, key: probeKey(stream), done: make(chan struct{})}
}

// stop closes the connection (if open) and makes a client that is still
// dialing close it at once.
func (c *benchClient) stop() {
	c.mu.Lock()
	c.stopped = true
	cl := c.closer
	c.closer = nil
	c.mu.Unlock()
	if cl != nil {
		cl()
	}
}

// setCloser registers how to close the open connection; false if the
// client was stopped meanwhile.
func (c *benchClient) setCloser(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return false
	}
	c.closer = f
	return true
}

func (c *benchClient) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// run dials and reads until the connection ends. sem (if set) was
// acquired by the caller and is released once the client is ready or
// failed, which bounds the handshakes in flight.
func (c *benchClient) run(ctx context.Context, tg *target, transport string, ctr *counters, sem chan struct{}) {
	defer close(c.done)
	start := time.Now()
	released := false
	release := func() {
		if !released && sem != nil {
			released = true
			<-sem
		}
	}
	defer release()
	onReady := func() {
		now := time.Now()
		ctr.readyIn(now.Sub(start), now)
		release()
	}
	if transport == "sse" {
		c.err = c.runSSE(ctx, tg, ctr, onReady)
	} else {
		c.err = c.runWS(ctx, tg, ctr, onReady)
	}
	switch {
	case !c.ready:
		if c.err == nil {
			c.err = errors.New("connection ended before the first message")
		}
		ctr.fail(c.err)
	case !c.isStopped():
		ctr.disconnected.Add(1)
	}
}

// handle is the per-message work.
func (c *benchClient) handle(msg []byte, ctr *counters, onReady func()) {
	now := time.Now().UnixNano()
	c.msgs++
	if !c.ready {
		c.ready = true
		c.isReady.Store(true)
		onReady()
	}
	if c.onMsg != nil {
		c.onMsg(msg, now)
	}
	if v, ok := extractInt(msg, c.key); ok {
		c.lat = append(c.lat, now-v)
		c.probes++
		ctr.received.Add(1)
	}
}

// sourceIP spreads clients over loopback source addresses, perIP clients
// each, when the server is on loopback: footfall limits stream connections
// per client IP (by default 20 new a second, burst 40, and 200 open), and
// the harness stands for many users, not one. nil: no spreading.
func (t *target) sourceIP(i, perIP int) net.IP {
	if perIP <= 0 || !t.loopback() {
		return nil
	}
	n := i / perIP
	return net.IPv4(127, byte(1+n/62500%254), byte(n/250%250+1), byte(n%250+1))
}

func (t *target) loopback() bool {
	u, err := url.Parse(t.base)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}

var wsDialer = &websocket.Dialer{
	ReadBufferSize:   1024,
	WriteBufferSize:  512,
	HandshakeTimeout: 30 * time.Second,
}

func (c *benchClient) runWS(ctx context.Context, tg *target, ctr *counters, onReady func()) error {
	var hdr http.Header
	if c.token != "" {
		hdr = http.Header{"Authorization": {"Bearer " + c.token}}
	}
	d := *wsDialer
	if c.local != nil {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: c.local}}
		d.NetDialContext = nd.DialContext
	}
	ws, resp, err := d.DialContext(ctx, tg.wsURL(c.stream, c.community), hdr)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("websocket dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return fmt.Errorf("websocket dial: %w", err)
	}
	defer ws.Close()
	if !c.setCloser(func() {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = ws.Close()
	}) {
		return nil
	}
	buf := make([]byte, 0, 512)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if c.isStopped() {
				return nil
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCode = ce.Code
				return fmt.Errorf("closed by the server: %d %s", ce.Code, ce.Text)
			}
			return err
		}
		if buf, err = readAll(r, buf[:0]); err != nil {
			return err
		}
		c.handle(buf, ctr, onReady)
	}
}

// readAll reads r to its end into buf, growing it only when needed.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

var dataPrefix = []byte("data:")

// runSSE is a minimal EventSource client on a raw connection: one request,
// then the data lines of the (chunked) response; no extra goroutines.
func (c *benchClient) runSSE(ctx context.Context, tg *target, ctr *counters, onReady func()) error {
	u, err := url.Parse(tg.base)
	if err != nil {
		return err
	}
	var d net.Dialer
	if c.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: c.local}
	}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("sse dial: %w", err)
	}
	if u.Scheme == "https" {
		conn = tls.Client(conn, &tls.Config{ServerName: u.Hostname()})
	}
	defer conn.Close()
	if !c.setCloser(func() { _ = conn.Close() }) {
		return nil
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET " + tg.ssePath(c.stream, c.community) + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: text/event-stream\r\n"
	if c.token != "" {
		req += "Authorization: Bearer " + c.token + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if c.isStopped() {
			return nil
		}
		return fmt.Errorf("sse response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("sse: HTTP %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	_ = conn.SetDeadline(time.Time{})
	lr := bufio.NewReaderSize(resp.Body, 1024)
	for {
		line, err := lr.ReadSlice('\n')
		for err == bufio.ErrBufferFull { // an over-long line: skip it
			_, err = lr.ReadSlice('\n')
			line = nil
		}
		if err != nil {
			if c.isStopped() {
				return nil
			}
			return fmt.Errorf("sse read: %w", err)
		}
		if bytes.HasPrefix(line, dataPrefix) {
			c.handle(line[len(dataPrefix):], ctr, onReady)
		}
	}
}
