package api_test

// Multi-node tests: two or three gateway nodes, each with its own Valkey
// bus, on one real redis-server (and on a 3-master cluster), reached
// through real listeners and real WebSocket, SSE and HTTP clients.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/internal/cutproxy"
	"github.com/footfall/footfall/streams/valkey"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// nodeTTL is the presence TTL of the test nodes: short, so that a killed
// node's visitors leave within the test.
const nodeTTL = time.Second

// valkeyNode starts a gateway node on its own Valkey bus at url.
func valkeyNode(t *testing.T, url string) (*gateway, *valkey.Bus) {
	t.Helper()
	return valkeyNodeWith(t, url, nodeTTL, nil)
}

// valkeyNodeWith starts a gateway node on its own Valkey bus at url, with
// presence TTL ttl; tweak adjusts the gateway's options.
func valkeyNodeWith(t *testing.T, url string, ttl time.Duration, tweak func(*api.Options)) (*gateway, *valkey.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := valkey.New(ctx, valkey.Options{URL: url, PresenceTTL: ttl, ReapInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("valkey.New(%s): %v", url, err)
	}
	// Registered before the gateway's cleanup, so it runs after it.
	t.Cleanup(func() { b.Close() })
	g := newGateway(t, func(o *api.Options) {
		o.Bus = b
		o.PresenceTTL = ttl
		if tweak != nil {
			tweak(o)
		}
	})
	return g, b
}

// randomCommunity returns a fresh community id, so that tests sharing one
// Valkey never see each other.
func randomCommunity() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// readFor reads messages for up to d until one of type typ satisfying ok
// arrives; it returns the messages read before it too.
func readFor(c *wsClient, d time.Duration, typ string, ok func(message) bool) (message, []message) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var seen []message
	for {
		_ = c.conn.SetReadDeadline(deadline)
		var m message
		if err := c.conn.ReadJSON(&m); err != nil {
			c.t.Fatalf("waiting %v for %s: %v (saw %v)", d, typ, err, seen)
		}
		if m.str("type") == typ && (ok == nil || ok(m)) {
			return m, seen
		}
		seen = append(seen, m)
	}
}

// memberOf and moderatorOf mint tokens for one community (the tests here
// use a fresh community each, so that they can share one Valkey).
func memberOf(t testing.TB, sub, c string) string {
	return token(t, sub, map[string]auth.Role{c: auth.RoleMember}, time.Hour)
}

func moderatorOf(t testing.TB, sub, c string) string {
	return token(t, sub, map[string]auth.Role{c: auth.RoleModerator}, time.Hour)
}

// converge reads c's messages until the count they carry (a count message,
// or a dashboard's realtime_count) is n and nothing else arrives for 2 s:
// what a client shows once the node has re-read the truth. Each node
// refills a restarted Valkey with its own visitors; the gateways fold
// those partial views (streams.ResyncSettle), so no count below n may
// appear on the way.
func converge(t *testing.T, c *wsClient, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last, seen := -1, []int(nil)
	for {
		// Wait long for the first count, then until the counts go quiet
		// for 2 s. (A timed-out gorilla connection cannot be read again:
		// the quiet period must end the test.)
		until := deadline
		if last >= 0 && time.Now().Add(2*time.Second).Before(deadline) {
			until = time.Now().Add(2 * time.Second)
		}
		_ = c.conn.SetReadDeadline(until)
		var m message
		if err := c.conn.ReadJSON(&m); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && last == n {
				t.Logf("converged on %d; counts seen on the way: %v", n, seen)
				// No flicker: nodes re-registering one after another
				// must not show a partial (lower) count on the way.
				for _, v := range seen {
					if v < n {
						t.Errorf("counts seen on the way to %d: %v; want none below %d", n, seen, n)
						break
					}
				}
				return
			}
			t.Fatalf("client did not converge on count %d within 20s: last %d, counts seen %v (%v)", n, last, seen, err)
		}
		switch m.str("type") {
		case "visitor_count", "visitor_joined", "visitor_left":
			last = m.num("count")
		case "dashboard_update":
			last = m.data().num("realtime_count")
		default:
			continue
		}
		seen = append(seen, last)
	}
}

func countIs(n int) func(message) bool { return func(m message) bool { return m.num("count") == n } }

// TestValkeyMultiNode runs the multi-node scenarios on a single
// server and on a 3-master cluster.
func TestValkeyMultiNode(t *testing.T) {
	single := valkeytest.Start(t)
	cluster := valkeytest.StartCluster(t, 3)
	for _, target := range []struct{ name, url string }{
		{"single", single.URL()},
		{"cluster", cluster.Seeds()},
	} {
		t.Run(target.name, func(t *testing.T) {
			t.Run("presence counts once across nodes", func(t *testing.T) { testCrossNodePresence(t, target.url) })
			t.Run("killed node's visitors leave once", func(t *testing.T) { testKilledNode(t, target.url) })
			t.Run("revocation closes on every node", func(t *testing.T) { testCrossNodeRevocation(t, target.url) })
			t.Run("SSE resumes on another node", func(t *testing.T) { testCrossNodeSSEResume(t, target.url) })
		})
	}
}

// A visitor with tabs on two nodes counts once; visitor_joined and
// visitor_left reach watchers on every node exactly once.
func testCrossNodePresence(t *testing.T, url string) {
	a, _ := valkeyNode(t, url)
	b, _ := valkeyNode(t, url)
	c := randomCommunity()
	tok := func(sub string) string { return memberOf(t, sub, c) }

	wa := a.dial(visitorsPath(c), tok("watcher-a"))
	wa.readType("visitor_count")
	wb := b.dial(visitorsPath(c), tok("watcher-b"))
	if m := wb.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("watcher on node B starts with %v; want count 2 (watcher A is present)", m)
	}
	if m, _ := readFor(wa, 5*time.Second, "visitor_joined", nil); m.num("count") != 2 {
		t.Fatalf("watcher A saw %v; want visitor_joined count 2", m)
	}

	u1 := a.dial(visitorsPath(c), tok("user-1"))
	if m := u1.readType("visitor_count"); m.num("count") != 3 {
		t.Fatalf("user-1 on node A starts with %v; want 3", m)
	}
	for _, w := range []*wsClient{wa, wb} {
		if m, _ := readFor(w, 5*time.Second, "visitor_joined", nil); m.num("count") != 3 {
			t.Fatalf("watcher saw %v; want visitor_joined count 3", m)
		}
	}
	// The same user on node B: a second tab, nothing changes or is sent.
	u1b := b.dial(visitorsPath(c), tok("user-1"))
	if m := u1b.readType("visitor_count"); m.num("count") != 3 {
		t.Fatalf("user-1's tab on node B starts with %v; want 3", m)
	}
	u1.conn.Close() // one tab of two: still present
	time.Sleep(300 * time.Millisecond)
	wa.quiet()
	wb.quiet()
	u1b.conn.Close() // the last tab: user-1 leaves, once
	for _, w := range []*wsClient{wa, wb} {
		if m, _ := readFor(w, 5*time.Second, "visitor_left", nil); m.num("count") != 2 {
			t.Fatalf("watcher saw %v; want visitor_left count 2", m)
		}
	}
	time.Sleep(300 * time.Millisecond)
	wa.quiet()
	wb.quiet()
	// The REST count of either node agrees.
	for _, g := range []*gateway{a, b} {
		code, m := g.call("GET", "/api/v1/communities/"+c+"/visitors/count", memberOf(t, "poller", c), nil)
		if code != 200 || m.num("count") != 3 { // the two watchers and the poller
			t.Fatalf("GET count on %s = %d %v; want 200 with count 3", g.ts.URL, code, m)
		}
	}
}

// A node that dies without goodbye has its visitors leave within about
// the presence TTL, announced once on the surviving nodes.
func testKilledNode(t *testing.T, url string) {
	a, _ := valkeyNode(t, url)
	doomed, doomedBus := valkeyNode(t, url)
	c := randomCommunity()
	w := a.dial(visitorsPath(c), memberOf(t, "watcher", c))
	w.readType("visitor_count")
	v := doomed.dial(visitorsPath(c), memberOf(t, "visitor-on-doomed-node", c))
	v.readType("visitor_count")
	if m, _ := readFor(w, 5*time.Second, "visitor_joined", nil); m.num("count") != 2 {
		t.Fatalf("watcher saw %v; want visitor_joined count 2", m)
	}
	// The crash: the bus stops without ending its sources, the listener
	// drops its connections.
	killed := time.Now()
	doomedBus.Abandon()
	v.conn.Close() // its node would never say goodbye for it
	m, seen := readFor(w, 10*nodeTTL, "visitor_left", nil)
	if m.num("count") != 1 {
		t.Fatalf("watcher saw %v; want visitor_left count 1", m)
	}
	if took := time.Since(killed); took > 5*nodeTTL {
		t.Fatalf("the dead node's visitor left after %v; want within about the TTL (%v)", took, nodeTTL)
	}
	for _, s := range seen {
		if s.str("type") == "visitor_left" || s.str("type") == "visitor_joined" {
			t.Fatalf("watcher saw %v before the leave; want nothing else", seen)
		}
	}
	time.Sleep(3 * nodeTTL)
	w.quiet() // the leave went out once
}

// Revoking a session through one node's service API closes its streams on
// every node within a second.
func testCrossNodeRevocation(t *testing.T, url string) {
	a, _ := valkeyNode(t, url)
	b, _ := valkeyNode(t, url)
	c := randomCommunity()
	code, m := a.service("POST", "/api/v1/sessions", map[string]any{"user_id": "sess-user", "communities": map[string]string{c: "moderator"}})
	if code != 201 {
		t.Fatalf("create session on node A = %d %v; want 201", code, m)
	}
	hdr := http.Header{"Cookie": {"footfall_session=" + m.str("session_id")}}
	onB := b.dialWith(visitorsPath(c), &websocket.Dialer{}, hdr)
	onB.readType("visitor_count")
	dashOnA := a.dialWith(dashboardPath(c), &websocket.Dialer{}, hdr)
	dashOnA.readType("dashboard_update")

	revoked := time.Now()
	if code, _ := a.service("DELETE", "/api/v1/sessions/"+m.str("session_id"), nil); code != 204 {
		t.Fatalf("revoke on node A = %d; want 204", code)
	}
	onB.expectClose(4004)
	if took := time.Since(revoked); took > time.Second {
		t.Fatalf("node B closed the revoked session's stream after %v; want within 1s", took)
	}
	dashOnA.expectClose(4004)
	// Node B refuses the session from now on.
	b.dialWith(visitorsPath(c), &websocket.Dialer{}, hdr).expectClose(4004)
}

// An SSE client that loses node A resumes on node B with Last-Event-ID and
// gets exactly the events it missed, in order, with the same ids.
func testCrossNodeSSEResume(t *testing.T, url string) {
	a, _ := valkeyNode(t, url)
	b, _ := valkeyNode(t, url)
	c := randomCommunity()
	tok := moderatorOf(t, "mod", c)
	first := a.openSSE(sseDashboardPath(c)+"?token="+tok, nil, 200)
	first.nextType("dashboard_update")
	a.service("POST", "/api/v1/communities/"+c+"/metrics", map[string]any{"metric": "m1", "value": 1})
	ev, m := first.nextType("analytics_update")
	if m.str("metric") != "m1" || ev.ID == "" {
		t.Fatalf("first analytics_update = %+v; want m1 with an id", ev)
	}
	first.close()
	// Missed while away: published on both nodes.
	a.service("POST", "/api/v1/communities/"+c+"/metrics", map[string]any{"metric": "m2", "value": 2})
	b.service("POST", "/api/v1/communities/"+c+"/metrics", map[string]any{"metric": "m3", "value": 3})

	again := b.openSSE(sseDashboardPath(c)+"?token="+tok, http.Header{"Last-Event-ID": {ev.ID}}, 200)
	var got []string
	var ids []string
	for len(got) < 2 {
		e := again.next()
		if m := e.msg(t); m.str("type") == "analytics_update" {
			got = append(got, m.str("metric"))
			ids = append(ids, e.ID)
		}
	}
	if got[0] != "m2" || got[1] != "m3" {
		t.Fatalf("resumed on node B with %v; want [m2 m3]", got)
	}
	if ids[0] == ev.ID || ids[0] == ids[1] {
		t.Fatalf("event ids %v after %s; want new, distinct ids", ids, ev.ID)
	}
	// A client on node A resuming from the same id sees the same ids.
	onA := a.openSSE(sseDashboardPath(c)+"?token="+tok, http.Header{"Last-Event-ID": {ev.ID}}, 200)
	var idsA []string
	for len(idsA) < 2 {
		e := onA.next()
		if e.msg(t).str("type") == "analytics_update" {
			idsA = append(idsA, e.ID)
		}
	}
	if idsA[0] != ids[0] || idsA[1] != ids[1] {
		t.Fatalf("node A gave ids %v, node B %v; want the same ids on every node", idsA, ids)
	}
}

// TestValkeyOutage stops Valkey under two nodes with open streams: /readyz
// turns 503 within seconds and 200 after Valkey is back; the clients stay
// connected and converge on the true count, which changed meanwhile.
// On a cluster, one master goes down and comes back empty; the community
// lives on it.
func TestValkeyOutage(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		srv := valkeytest.Start(t)
		testOutage(t, srv.URL(), srv, randomCommunity())
	})
	t.Run("cluster", func(t *testing.T) {
		cl := valkeytest.StartCluster(t, 3)
		srv := cl.Servers[0]
		// A master answers MOVED for keys of the other masters' slots.
		c := randomCommunity()
		for _, err := srv.Do("EXISTS", "ff:{"+c+"}:m"); err != nil; _, err = srv.Do("EXISTS", "ff:{"+c+"}:m") {
			c = randomCommunity()
		}
		testOutage(t, cl.Seeds(), srv, c)
	})
}

func testOutage(t *testing.T, url string, srv *valkeytest.Server, c string) {
	a, _ := valkeyNode(t, url)
	b, _ := valkeyNode(t, url)
	w := a.dial(visitorsPath(c), memberOf(t, "watcher", c))
	w.readType("visitor_count")
	dash := a.dial(dashboardPath(c), moderatorOf(t, "mod", c))
	dash.readType("dashboard_update")
	stays := b.dial(visitorsPath(c), memberOf(t, "stays", c))
	stays.readType("visitor_count")
	goes := b.dial(visitorsPath(c), memberOf(t, "goes", c))
	goes.readType("visitor_count")
	readFor(w, 5*time.Second, "visitor_count", countIs(3))

	ready := func(g *gateway) int {
		resp, err := http.Get(g.ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitReady := func(g *gateway, want int, within time.Duration) time.Duration {
		start := time.Now()
		for ready(g) != want {
			if time.Since(start) > within {
				t.Fatalf("/readyz of %s did not turn %d within %v", g.ts.URL, want, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start)
	}
	for _, g := range []*gateway{a, b} {
		waitReady(g, 200, time.Second)
	}

	srv.Stop()
	for _, g := range []*gateway{a, b} {
		took := waitReady(g, 503, 5*time.Second)
		t.Logf("node %s: /readyz 503 %v after Valkey stopped", g.ts.URL, took)
	}
	// While Valkey is down a visitor leaves node B.
	goes.conn.Close()
	time.Sleep(500 * time.Millisecond)

	srv.Restart() // empty: the nodes refill it with their true state
	for _, g := range []*gateway{a, b} {
		took := waitReady(g, 200, 15*time.Second)
		t.Logf("node %s: /readyz 200 %v after Valkey restarted", g.ts.URL, took)
	}
	// Every client is still connected and converges on the true count: the
	// watcher, "stays" and nobody else.
	converge(t, w, 2)
	converge(t, stays, 2)
	converge(t, dash, 2)
	// (converge ended those connections: it reads until a timeout.) The
	// streams work on: a new watcher on node A starts from the true count
	// (watcher and "stays", not "goes"), and a new visitor on node B is
	// announced to it.
	w2 := a.dial(visitorsPath(c), memberOf(t, "watcher-2", c))
	if m := w2.readType("visitor_count"); m.num("count") != 3 {
		t.Fatalf("a watcher joining after the outage starts with %v; want 3", m)
	}
	late := b.dial(visitorsPath(c), memberOf(t, "late", c))
	if m := late.readType("visitor_count"); m.num("count") != 4 {
		t.Fatalf("a visitor joining after the outage starts with %v; want 4", m)
	}
	readFor(w2, 5*time.Second, "visitor_joined", countIs(4))
}

// TestValkeyRevocationDuringCutOff: node B is cut off from Valkey while a
// session is revoked through node A; the revocation message never reaches
// B, so B re-checks its open sessions when it is back and closes the
// revoked one.
func TestValkeyRevocationDuringCutOff(t *testing.T) {
	srv := valkeytest.Start(t)
	proxy, err := cutproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	a, _ := valkeyNode(t, srv.URL())
	b, _ := valkeyNode(t, "redis://"+proxy.Addr())
	c := randomCommunity()
	code, m := a.service("POST", "/api/v1/sessions", map[string]any{"user_id": "cut-user", "communities": map[string]string{c: "member"}})
	if code != 201 {
		t.Fatalf("create session = %d %v", code, m)
	}
	sid := m.str("session_id")
	onB := b.dialWith(visitorsPath(c), &websocket.Dialer{}, http.Header{"Cookie": {"footfall_session=" + sid}})
	onB.readType("visitor_count")
	other := b.dial(visitorsPath(c), memberOf(t, "other", c))
	other.readType("visitor_count")

	proxy.Cut()
	if code, _ := a.service("DELETE", "/api/v1/sessions/"+sid, nil); code != 204 {
		t.Fatalf("revoke on node A = %d; want 204", code)
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Restore()
	// Node B learns of the revocation when it is back.
	_ = onB.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := onB.conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 4004 {
			t.Fatalf("the revoked session's stream on node B ended with %v; want close 4004", err)
		}
		break
	}
	// The other visitor's stream on node B stays open.
	other.send(map[string]string{"type": "ping"})
	readFor(other, 5*time.Second, "pong", nil)
}
