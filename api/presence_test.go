package api_test

// Presence as real sites see it: the leave grace, guests of public
// communities and anonymous tokens, through real listeners and real
// WebSocket, SSE and HTTP clients (docs/protocol.md, presence).

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
)

// testGrace is the leave grace of the tests here: long enough for a
// reconnect on a loaded machine, short enough to wait out.
const testGrace = 1500 * time.Millisecond

// quietFor checks that c receives nothing but the pong of a ping for d.
func (c *wsClient) quietFor(d time.Duration) {
	c.t.Helper()
	time.Sleep(d)
	c.quiet()
}

// TestLeaveGraceReload: a visitor that reloads (WS to WS, WS to SSE, SSE
// to WS) within the grace sends nothing to anyone; one that does not come
// back leaves once, the grace after its last connection closed.
func TestLeaveGraceReload(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.LeaveGrace = testGrace })
	w := g.dial(visitorsPath(community1), member(t, "watcher"))
	w.readType("visitor_count")
	dash := g.dial(dashboardPath(community1), moderator(t, "mod"))
	dash.readType("dashboard_update")

	v := g.dial(visitorsPath(community1), member(t, "reloader"))
	if m := v.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("reloader's first count = %v; want 2", m)
	}
	if m := w.readType("visitor_joined"); m.num("count") != 2 {
		t.Fatalf("watcher saw %v; want visitor_joined count 2", m)
	}
	dash.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 2 })

	// WS -> WS, 50 ms apart.
	v.conn.Close()
	time.Sleep(50 * time.Millisecond)
	v = g.dial(visitorsPath(community1), member(t, "reloader"))
	if m := v.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("after a reload the count = %v; want 2", m)
	}
	// WS -> SSE.
	v.conn.Close()
	time.Sleep(50 * time.Millisecond)
	s := g.openSSE(ssePath(community1)+"?token="+member(t, "reloader"), nil, 200)
	if _, m := s.nextType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("SSE after a reload: count = %v; want 2", m)
	}
	// SSE -> WS.
	s.close()
	time.Sleep(50 * time.Millisecond)
	v = g.dial(visitorsPath(community1), member(t, "reloader"))
	v.readType("visitor_count")
	w.quietFor(testGrace + 500*time.Millisecond)

	// In the grace, the dashboard still counts the visitor.
	v.conn.Close()
	closed := time.Now()
	time.Sleep(testGrace / 3)
	dash.send(map[string]string{"type": "request_count"})
	if m := dash.readType("dashboard_update"); m.data().num("realtime_count") != 2 {
		t.Fatalf("dashboard during the grace = %v; want realtime_count 2", m)
	}

	// Not back: one visitor_left, the grace after the close.
	m := w.readTypeWithin("visitor_left", testGrace+3*time.Second)
	if took := time.Since(closed); took < testGrace*9/10 {
		t.Fatalf("visitor_left %v after the close; want after the grace (%v)", took, testGrace)
	}
	if m.num("count") != 1 {
		t.Fatalf("visitor_left = %v; want count 1", m)
	}
	w.quietFor(testGrace)
}

// TestLeaveGraceZero: with no grace a leave goes out at once, as before.
func TestLeaveGraceZero(t *testing.T) {
	g := newGateway(t, nil)
	w := g.dial(visitorsPath(community1), member(t, "watcher"))
	w.readType("visitor_count")
	v := g.dial(visitorsPath(community1), member(t, "v"))
	v.readType("visitor_count")
	w.readType("visitor_joined")
	v.conn.Close()
	w.readTypeWithin("visitor_left", time.Second)
}

// guestCookie returns the footfall_vid cookie set by h, or nil.
func guestCookie(h http.Header) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == api.GuestCookie {
			return c
		}
	}
	return nil
}

// dialGuest opens a visitors WebSocket with no credential, with the given
// Cookie header (may be empty).
func (g *gateway) dialGuest(c, cookie string) *wsClient {
	g.t.Helper()
	hdr := http.Header{}
	if cookie != "" {
		hdr.Set("Cookie", cookie)
	}
	return g.dialWith(visitorsPath(c), &websocket.Dialer{}, hdr)
}

// TestGuests: on a public community, a request without any credential is
// a guest named by the footfall_vid cookie footfall issues; tabs sharing
// the cookie count once, over WebSocket, SSE and REST.
func TestGuests(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.PublicCommunities = []string{strings.ToUpper(community1)} })
	w := g.dial(visitorsPath(community1), member(t, "watcher"))
	w.readType("visitor_count")

	a := g.dialGuest(community1, "")
	ck := guestCookie(a.resp.Header)
	if ck == nil {
		t.Fatalf("guest upgrade answer has no %s cookie (headers %v)", api.GuestCookie, a.resp.Header)
	}
	raw := a.resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"Path=/", "Max-Age=86400", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(raw, attr) {
			t.Errorf("Set-Cookie %q lacks %s", raw, attr)
		}
	}
	if strings.Contains(raw, "Secure") {
		t.Errorf("Set-Cookie %q is Secure over plain HTTP", raw)
	}
	if len(ck.Value) == 0 || len(ck.Value) > 64 {
		t.Errorf("cookie value %q: want 1 to 64 characters", ck.Value)
	}
	if m := a.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("guest's first count = %v; want 2", m)
	}
	w.readType("visitor_joined")
	cookie := ck.Name + "=" + ck.Value

	// A second tab with the cookie: the same visitor, no new cookie.
	b := g.dialGuest(community1, cookie)
	if guestCookie(b.resp.Header) != nil {
		t.Errorf("a request with a valid cookie got a new one")
	}
	if m := b.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("second tab's count = %v; want 2 (same guest)", m)
	}
	// SSE with the cookie: the same visitor too.
	s := g.openSSE(ssePath(community1), http.Header{"Cookie": {cookie}}, 200)
	if guestCookie(s.resp.Header) != nil {
		t.Errorf("SSE with a valid cookie got a new one")
	}
	if _, m := s.nextType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("guest SSE count = %v; want 2", m)
	}
	w.quiet()

	// A forged cookie, or one in the right shape with a wrong MAC, is
	// replaced: a new guest.
	forged := ck.Value[:len(ck.Value)-3] + "AAA"
	for _, bad := range []string{"my-chosen-id", forged} {
		f := g.dialGuest(community1, api.GuestCookie+"="+bad)
		nc := guestCookie(f.resp.Header)
		if nc == nil || nc.Value == bad {
			t.Fatalf("cookie %q was not replaced (Set-Cookie %v)", bad, nc)
		}
		f.readType("visitor_count")
		w.readType("visitor_joined")
		f.conn.Close()
		w.readType("visitor_left")
	}

	// SSE without a cookie gets one.
	s2 := g.openSSE(ssePath(community1), nil, 200)
	if guestCookie(s2.resp.Header) == nil {
		t.Errorf("guest SSE answer has no cookie")
	}
	s2.nextType("visitor_count")
	w.readType("visitor_joined")
	s2.close()
	w.readType("visitor_left")

	// REST: answered without a cookie, but counts nobody; with the cookie
	// a poll is a heartbeat of that guest (already present: no change).
	code, h, m := g.get(countPath(community1), nil)
	if code != 200 || guestCookie(h) == nil || m.num("count") != 2 {
		t.Fatalf("guest count poll = %d %v %v; want 200, a cookie and count 2", code, h, m)
	}
	w.quiet()
	fresh := guestCookie(h)
	code, h, m = g.get(countPath(community1), http.Header{"Cookie": {fresh.Name + "=" + fresh.Value}})
	if code != 200 || guestCookie(h) != nil {
		t.Fatalf("poll with a valid cookie = %d %v; want 200 and no new cookie", code, h)
	}
	if j := w.readType("visitor_joined"); j.num("count") != 3 {
		t.Fatalf("the polling guest's join = %v; want count 3", j)
	}
	_ = m

	// Guests count as anonymous visitors on the dashboard.
	dash := g.dial(dashboardPath(community1), moderator(t, "mod"))
	d := dash.readType("dashboard_update").data()
	today, _ := d["today_visitors"].(map[string]any)
	if n, _ := today["anonymous_visitors"].(float64); int(n) != 5 {
		t.Errorf("anonymous_visitors = %v; want 5 (the guest, two forged, the SSE guest, the poller)", today)
	}
	if n, _ := today["authenticated_visitors"].(float64); int(n) != 1 {
		t.Errorf("authenticated_visitors = %v; want 1 (the watcher)", today)
	}
}

// TestGuestRefusals: a credential that is present but bad is refused on a
// public community; dashboards never admit guests; a community that is not
// public admits nobody without a credential.
func TestGuestRefusals(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.PublicCommunities = []string{community1} })
	ws := func(path string, d *websocket.Dialer, hdr http.Header) *wsClient { return g.dialWith(path, d, hdr) }
	ws(visitorsPath(community1), &websocket.Dialer{Subprotocols: []string{"bearer", "not-a-jwt"}}, nil).expectClose(4002)
	ws(visitorsPath(community1), &websocket.Dialer{}, http.Header{"Cookie": {auth.SessionCookie + "=nope"}}).expectClose(4002)
	ws(visitorsPath(community1), &websocket.Dialer{Subprotocols: []string{"bearer", token(t, "u", map[string]auth.Role{community1: auth.RoleMember}, -time.Minute)}}, nil).expectClose(4004)
	ws(dashboardPath(community1), &websocket.Dialer{}, nil).expectClose(4001)
	ws(visitorsPath(community2), &websocket.Dialer{}, nil).expectClose(4001)
	if c := g.dialGuest(community2, ""); guestCookie(c.resp.Header) != nil {
		t.Errorf("a refused request on a private community got a guest cookie")
	}

	for _, tc := range []struct {
		path   string
		hdr    http.Header
		status int
		code   int
	}{
		{countPath(community1) + "?token=bad", nil, 401, 4002},
		{countPath(community1), http.Header{"Authorization": {"Basic eDp5"}}, 401, 4002},
		{countPath(community2), nil, 401, 4001},
		{"/api/v1/communities/" + community1 + "/visitor-dashboard", nil, 401, 4001},
		{ssePath(community1) + "?token=bad", nil, 401, 4002},
		{sseDashboardPath(community1), nil, 401, 4001},
	} {
		code, h, m := g.get(tc.path, tc.hdr)
		if code != tc.status || m.num("code") != tc.code {
			t.Errorf("GET %s = %d %v; want %d code %d", tc.path, code, m, tc.status, tc.code)
		}
		if guestCookie(h) != nil {
			t.Errorf("GET %s (refused) set a guest cookie", tc.path)
		}
	}
}

// anonToken mints an anonymous visitor's token.
func anonToken(t testing.TB, sub string, roles map[string]auth.Role, admin bool) string {
	t.Helper()
	tok, _, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: sub, Communities: roles, TTL: time.Hour, Anon: true, Admin: admin}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAnonymousTokens: an "anon": true token is the service API's
// anonymous visitor of the same id (never counted twice), not the
// authenticated one, and never opens a dashboard.
func TestAnonymousTokens(t *testing.T) {
	g := newGateway(t, nil)
	roles := map[string]auth.Role{community1: auth.RoleMember}
	w := g.dial(visitorsPath(community1), member(t, "watcher"))
	w.readType("visitor_count")

	a := g.dial(visitorsPath(community1), anonToken(t, "anon-1", roles, false))
	if m := a.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("anonymous token's first count = %v; want 2", m)
	}
	w.readType("visitor_joined")

	// The same anonymous visitor through the service API: no change.
	code, m := g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-1", false, "join"))
	if code != 200 || m.num("count") != 2 {
		t.Fatalf("service join of anon-1 = %d %v; want count 2", code, m)
	}
	// The authenticated anon-1 is someone else.
	code, m = g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-1", true, "join"))
	if code != 200 || m.num("count") != 3 {
		t.Fatalf("service join of authenticated anon-1 = %d %v; want count 3", code, m)
	}
	w.readType("visitor_joined")
	// The service API's leave ends its own source only: the token's
	// stream keeps the visitor present.
	code, m = g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-1", false, "leave"))
	if code != 200 || m.num("count") != 3 {
		t.Fatalf("service leave of anon-1 = %d %v; want count 3 (its stream is open)", code, m)
	}
	w.quiet()

	dash := g.dial(dashboardPath(community1), moderator(t, "mod"))
	today, _ := dash.readType("dashboard_update").data()["today_visitors"].(map[string]any)
	if today["anonymous_visitors"] != 1.0 || today["authenticated_visitors"] != 2.0 {
		t.Errorf("today_visitors = %v; want 1 anonymous, 2 authenticated", today)
	}

	// Never a dashboard, whatever the roles.
	for _, tok := range []string{
		anonToken(t, "anon-2", map[string]auth.Role{community1: auth.RoleAdmin}, false),
		anonToken(t, "anon-3", roles, true),
	} {
		g.dial(dashboardPath(community1), tok).expectClose(4003)
		if code, _, m := g.get("/api/v1/communities/"+community1+"/visitor-dashboard", http.Header{"Authorization": {"Bearer " + tok}}); code != 403 || m.num("code") != 4003 {
			t.Errorf("REST dashboard with an anonymous token = %d %v; want 403 code 4003", code, m)
		}
	}
	// An anonymous site admin is no admin: not in another community.
	g.dial(visitorsPath(community2), anonToken(t, "anon-3", roles, true)).expectClose(4003)
	// Its count poll is a heartbeat of the anonymous visitor.
	if code, _, m := g.get(countPath(community1), http.Header{"Authorization": {"Bearer " + anonToken(t, "anon-1", roles, false)}}); code != 200 || m.num("count") != 3 {
		t.Errorf("count poll with anon-1's token = %d %v; want 200 count 3", code, m)
	}
	w.quiet()
}

// TestGraceChurnCoalesced: under churn with the grace on (visitors coming
// and going, some reloading within the grace) a watcher still gets count
// messages coalesced to about 10 a second, and the last one it gets is the
// exact count once the graces have run out.
func TestGraceChurnCoalesced(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.LeaveGrace = 500 * time.Millisecond })
	w := g.dial(visitorsPath(community1), member(t, "watcher"))
	w.readType("visitor_count")

	const n = 40
	var stays []*wsClient
	for i := range n {
		sub := "churner-" + strconv.Itoa(i)
		v := g.dial(visitorsPath(community1), member(t, sub))
		v.readType("visitor_count")
		v.conn.Close()
		switch i % 3 {
		case 0: // reloads within the grace and stays
			v = g.dial(visitorsPath(community1), member(t, sub))
			v.readType("visitor_count")
			stays = append(stays, v)
		case 1: // reloads, then leaves for good
			v = g.dial(visitorsPath(community1), member(t, sub))
			v.readType("visitor_count")
			v.conn.Close()
		}
	}
	want := 1 + len(stays)

	var times []time.Time
	last := -1
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_ = w.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var m message
		if err := w.conn.ReadJSON(&m); err != nil {
			break // quiet for 2 s: the churn has settled
		}
		times = append(times, time.Now())
		last = m.num("count")
	}
	if last != want {
		t.Fatalf("last count the watcher got = %d; want %d", last, want)
	}
	// At most 10 a second, with one message of slack for delivery jitter.
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Second {
			j++
		}
		if j-i > 11 {
			t.Fatalf("%d count messages within one second (from message %d of %d); want at most about 10", j-i, i, len(times))
		}
	}
	t.Logf("%d count messages for %d visitors churning", len(times), n)
}

// TestGuestCookieSecure: the cookie is Secure when a trusted proxy says the
// client came over https, and only then.
func TestGuestCookieSecure(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		g := newGateway(t, func(o *api.Options) {
			o.PublicCommunities = []string{"*"}
			if trusted {
				_, loopback, _ := net.ParseCIDR("127.0.0.1/32")
				o.Limits.TrustedProxies = []*net.IPNet{loopback}
			}
		})
		_, h, _ := g.get(countPath(community1), http.Header{"X-Forwarded-Proto": {"https"}})
		raw := h.Get("Set-Cookie")
		if raw == "" {
			t.Fatalf("no guest cookie")
		}
		if got := strings.Contains(raw, "; Secure"); got != trusted {
			t.Errorf("trusted proxy %v, X-Forwarded-Proto https: Set-Cookie %q Secure = %v; want %v", trusted, raw, got, trusted)
		}
	}
}

// TestDashboardPeakToday: dashboard_update carries today's peak (count and
// when first reached), on the stream and the REST snapshot.
func TestDashboardPeakToday(t *testing.T) {
	g := newGateway(t, nil)
	dash := g.dial(dashboardPath(community2), moderator(t, "mod"))
	if m := dash.readType("dashboard_update"); m.data()["peak_today"] == nil {
		t.Errorf("first dashboard_update of an empty community = %v; want peak_today (0 at midnight)", m)
	} else if p, _ := m.data()["peak_today"].(map[string]any); p["count"] != 0.0 || !strings.HasSuffix(p["at"].(string), "T00:00:00Z") {
		t.Errorf("peak_today of an empty community = %v; want 0 at midnight", p)
	}
	a := g.dial(visitorsPath(community2), member(t, "a"))
	a.readType("visitor_count")
	b := g.dial(visitorsPath(community2), member(t, "b"))
	b.readType("visitor_count")
	b.conn.Close()
	m := dash.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 1 })
	peak, _ := m.data()["peak_today"].(map[string]any)
	if peak["count"] != 2.0 || peak["at"] == nil || peak["at"] == "" {
		t.Fatalf("peak_today after two joins and a leave = %v; want count 2 with its time", peak)
	}
	code, _, r := g.get("/api/v1/communities/"+community2+"/visitor-dashboard", http.Header{"Authorization": {"Bearer " + moderator(t, "mod")}})
	rp, _ := r.data()["peak_today"].(map[string]any)
	if code != 200 || rp["count"] != 2.0 || rp["at"] != peak["at"] {
		t.Fatalf("REST dashboard = %d %v; want the same peak_today %v", code, r, peak)
	}
}

// TestAuthRefreshKeepsTheVisitor: {"type":"auth"} on an anonymous token's
// connection refuses a user's token of the same sub (another visitor).
func TestAuthRefreshKeepsTheVisitor(t *testing.T) {
	g := newGateway(t, nil)
	roles := map[string]auth.Role{community1: auth.RoleMember}
	c := g.dial(visitorsPath(community1), anonToken(t, "x-1", roles, false))
	c.readType("visitor_count")
	c.send(map[string]string{"type": "auth", "token": member(t, "x-1")})
	if m := c.readType("error"); m.str("code") != "forbidden" {
		t.Fatalf("auth with the user x-1's token on anonymous x-1's connection = %v; want error forbidden", m)
	}
	c.send(map[string]string{"type": "auth", "token": anonToken(t, "x-1", roles, false)})
	c.readType("auth_ok")
}
