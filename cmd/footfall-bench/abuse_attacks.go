package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/gorilla/websocket"
)

// The attacks of abuse, each from its own loopback addresses
// (127.200-255.x.y), each counting the answers it got.

// abuseState is what the attacks share.
type abuseState struct {
	tg  *target
	cfg abuseConfig
	// community is the community of the attacks (not a legitimate one).
	community string

	mu       sync.Mutex
	outcomes map[string]*abuseOutcome
}

func (st *abuseState) count(attack, answer string, status int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.outcomes[attack]
	if o == nil {
		o = &abuseOutcome{Answers: map[string]int{}}
		st.outcomes[attack] = o
	}
	o.Attempts++
	o.Answers[answer]++
	if status >= 500 && status < 600 {
		o.FiveXX++
	}
}

// abuseAddr is the i-th attacking loopback address, apart from the
// legitimate clients' (127.1-199.x.y).
func abuseAddr(i int) net.IP {
	return net.IPv4(127, byte(200+i/62500%56), byte(i/250%250+1), byte(i%250+1))
}

// dialFrom dials the target from a local address.
func (st *abuseState) dialFrom(ctx context.Context, local net.IP) (net.Conn, error) {
	u, _ := url.Parse(st.tg.base)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", u.Host)
}

// httpFrom is an HTTP client whose connections come from local, one
// request per connection.
func (st *abuseState) httpFrom(local net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// get sends one GET and counts its answer under attack.
func (st *abuseState) get(ctx context.Context, hc *http.Client, attack, path string, hdr http.Header) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.tg.base+path, nil)
	if err != nil {
		return
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			st.count(attack, "error", 0)
		}
		return
	}
	// An SSE stream: its first event is enough.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "data:") {
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	}
	resp.Body.Close()
	st.count(attack, strconv.Itoa(resp.StatusCode), resp.StatusCode)
}

// dialWS opens one WebSocket from local and counts how it ended: the
// refusal's status, or the close code the server sent.
func (st *abuseState) dialWS(ctx context.Context, attack string, local net.IP, hdr http.Header) {
	d := *wsDialer
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
	d.NetDialContext = nd.DialContext
	d.HandshakeTimeout = 10 * time.Second
	ws, resp, err := d.DialContext(ctx, st.tg.wsURL("visitors", st.community), hdr)
	if err != nil {
		switch {
		case resp != nil:
			st.count(attack, strconv.Itoa(resp.StatusCode), resp.StatusCode)
		case ctx.Err() == nil:
			st.count(attack, "error", 0)
		}
		return
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				st.count(attack, "close "+strconv.Itoa(ce.Code), 0)
			} else {
				st.count(attack, "101 admitted", 0) // a first message, then silence (a guest of a public community)
			}
			return
		}
	}
}

// burstInFlight bounds the burst attack's requests in flight.
const burstInFlight = 512

// bursts: every second, each attacking address opens --burst stream
// connections without a credential and sends --burst REST polls at once.
func (st *abuseState) bursts(ctx context.Context) {
	if st.cfg.BurstAddrs == 0 || st.cfg.Burst == 0 {
		return
	}
	count := "/api/v1/communities/" + st.community + "/visitors/count"
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sem := make(chan struct{}, burstInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		for a := range st.cfg.BurstAddrs {
			local := abuseAddr(a)
			hc := st.httpFrom(local)
			for range st.cfg.Burst {
				for _, kind := range []string{"ws", "rest"} {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					wg.Go(func() {
						defer func() { <-sem }()
						if kind == "ws" {
							st.dialWS(ctx, "burst: stream connections", local, nil)
						} else {
							st.get(ctx, hc, "burst: REST polls", count, nil)
						}
					})
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// lingerSet holds the connections an attack leaves open, and when the
// server closed each.
type lingerSet struct {
	mu          sync.Mutex
	conns       []net.Conn
	lastTx      []time.Time
	closedAfter []time.Duration // -1: still open
}

func (l *lingerSet) add(c net.Conn) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns = append(l.conns, c)
	l.lastTx = append(l.lastTx, time.Now())
	l.closedAfter = append(l.closedAfter, -1)
	return len(l.conns) - 1
}

func (l *lingerSet) sent(i int) {
	l.mu.Lock()
	l.lastTx[i] = time.Now()
	l.mu.Unlock()
}

// watch reads connection i until the server closes it.
func (l *lingerSet) watch(i int, r io.Reader) {
	_, _ = io.Copy(io.Discard, r)
	l.mu.Lock()
	l.closedAfter[i] = time.Since(l.lastTx[i])
	l.mu.Unlock()
}

func (l *lingerSet) allClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.Contains(l.closedAfter, -1)
}

// closed is how many were opened, how many the server closed, and the
// median time it took.
func (l *lingerSet) closed() (opened, closed int, medianS float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []float64
	for _, d := range l.closedAfter {
		if d >= 0 {
			ds = append(ds, d.Seconds())
		}
	}
	return len(l.conns), len(ds), round(median(ds), 2)
}

func (l *lingerSet) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// idleKeepalives opens --idle connections, sends one request on each and
// then nothing: the server's idle timeout must close them.
func (st *abuseState) idleKeepalives(ctx context.Context) *lingerSet {
	l := &lingerSet{}
	st.inParallel(ctx, st.cfg.Idle, func(i int) {
		c, err := st.dialFrom(ctx, abuseAddr(st.cfg.BurstAddrs+i/50))
		if err != nil {
			st.count("idle keep-alives", "error", 0)
			return
		}
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: footfall\r\n\r\n"); err != nil {
			c.Close()
			return
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			st.count("idle keep-alives", "error", 0)
			c.Close()
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		st.count("idle keep-alives", strconv.Itoa(resp.StatusCode), resp.StatusCode)
		idx := l.add(c)
		go l.watch(idx, br)
	})
	return l
}

// inParallel calls f(0..n-1), 32 at a time, until ctx ends.
func (st *abuseState) inParallel(ctx context.Context, n int, f func(i int)) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// slowloris opens --slowloris connections that send a WebSocket upgrade
// one header line every 3 s and never finish it: the server's header
// timeout must close them.
func (st *abuseState) slowloris(ctx context.Context) *lingerSet {
	l := &lingerSet{}
	type slowConn struct {
		c net.Conn
		i int
	}
	var mu sync.Mutex
	var open []slowConn
	st.inParallel(ctx, st.cfg.Slow, func(i int) {
		c, err := st.dialFrom(ctx, abuseAddr(st.cfg.BurstAddrs+st.cfg.Idle/50+1+i/50))
		if err != nil {
			st.count("slowloris upgrades", "error", 0)
			return
		}
		req := "GET /ws/communities/" + st.community + "/visitors/ HTTP/1.1\r\nHost: footfall\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			c.Close()
			return
		}
		st.count("slowloris upgrades", "started", 0)
		idx := l.add(c)
		go l.watch(idx, c)
		mu.Lock()
		open = append(open, slowConn{c, idx})
		mu.Unlock()
	})
	// A header line every 3 s while the attack lasts (and until the
	// server closes the connection).
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return l
		case <-tick.C:
		}
		for _, s := range open {
			if _, err := fmt.Fprintf(s.c, "X-Slow-%d: %d\r\n", n, n); err == nil {
				l.sent(s.i)
			}
		}
	}
}

// bogus sends --bogus bad credentials a second, each from the next
// attacking address: WebSocket with a bad signature, a malformed token and
// an expired one, SSE and REST with a bad token, the service API with a
// wrong key.
func (st *abuseState) bogus(ctx context.Context) {
	if st.cfg.Bogus <= 0 {
		return
	}
	wrong, _, _ := auth.Mint([]byte("not-the-secret-not-the-secret-xx"), auth.Claims{Subject: "forger", TTL: time.Hour,
		Communities: map[string]auth.Role{st.community: auth.RoleAdmin}}, time.Now())
	expired, _, _ := st.tg.tokenAt("expired", st.community, time.Now().Add(-2*time.Hour))
	kinds := []struct {
		name string
		run  func(ctx context.Context, local net.IP)
	}{
		{"bogus: WebSocket, bad signature", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, bad signature", local, http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: WebSocket, malformed", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, malformed", local, http.Header{"Authorization": {"Bearer not.a.jwt"}})
		}},
		{"bogus: WebSocket, expired", func(ctx context.Context, local net.IP) {
			st.dialWS(ctx, "bogus: WebSocket, expired", local, http.Header{"Authorization": {"Bearer " + expired}})
		}},
		{"bogus: SSE, bad signature", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: SSE, bad signature", st.tg.ssePath("visitors", st.community), http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: REST, bad signature", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: REST, bad signature", "/api/v1/communities/"+st.community+"/visitors/count", http.Header{"Authorization": {"Bearer " + wrong}})
		}},
		{"bogus: service API, wrong key", func(ctx context.Context, local net.IP) {
			st.get(ctx, st.httpFrom(local), "bogus: service API, wrong key", "/api/v1/communities/"+st.community+"/stats", http.Header{"Authorization": {"Bearer wrong-key-wrong-key-wrong-key-xx"}})
		}},
	}
	st.paced(ctx, st.cfg.Bogus, func(ctx context.Context, n int) {
		kinds[n%len(kinds)].run(ctx, abuseAddr(n%max(st.cfg.BurstAddrs, 1)))
	})
}

// resumes sends --resumes SSE resumes a second with a member's token and a
// Last-Event-ID that is unknown, ancient or over 128 bytes: each must get a
// fresh snapshot, not an error.
func (st *abuseState) resumes(ctx context.Context) {
	if st.cfg.Resumes <= 0 {
		return
	}
	tok, err := st.tg.token("resumer", st.community, auth.RoleMember, time.Hour)
	if err != nil {
		return
	}
	ids := []string{"0-1", "1-1", strings.Repeat("9", 200), "ffffffff-99999999"}
	st.paced(ctx, st.cfg.Resumes, func(ctx context.Context, n int) {
		st.get(ctx, st.httpFrom(abuseAddr(n%max(st.cfg.BurstAddrs, 1))), "long-gap resumes", st.tg.ssePath("visitors", st.community),
			http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-ID": {ids[n%len(ids)]}})
	})
}

// paced calls f rate times a second, each on its own goroutine, until ctx
// ends, and waits for them.
func (st *abuseState) paced(ctx context.Context, rate float64, f func(ctx context.Context, n int)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	every := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for n := 0; ; n++ {
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(n)*every))); err != nil {
			return
		}
		wg.Go(func() { f(ctx, n) })
	}
}

// tokenAt mints a member token issued at iat (an hour long): expired when
// iat is over an hour ago.
func (t *target) tokenAt(sub, community string, iat time.Time) (string, time.Time, error) {
	return auth.Mint(t.secret, auth.Claims{
		Subject: sub, Communities: map[string]auth.Role{community: auth.RoleMember}, TTL: time.Hour,
		Audience: t.aud, Issuer: t.iss,
	}, iat)
}
