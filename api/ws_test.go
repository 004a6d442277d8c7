package api_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// TestAuthOutcomes covers every row of docs/protocol.md, outcomes and every
// credential path of section 2, through a real listener and client.
func TestAuthOutcomes(t *testing.T) {
	g := newGateway(t, nil)
	ctx := context.Background()
	live := streams.Session{ID: "live-session", UserID: "sess-user", Communities: map[string]string{community1: "member"}, ExpiresAt: time.Now().Add(time.Hour)}
	revoked := streams.Session{ID: "revoked-session", UserID: "sess-user-2", Communities: map[string]string{community1: "member"}, ExpiresAt: time.Now().Add(time.Hour)}
	for _, s := range []streams.Session{live, revoked} {
		if err := g.bus.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.bus.RevokeSession(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expired := token(t, "u-exp", map[string]auth.Role{community1: auth.RoleMember}, -time.Minute)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix(), "communities": map[string]string{community1: "member"}})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	otherKey := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix(), "communities": map[string]string{community1: "member"}})
	badSig, _ := otherKey.SignedString([]byte("another-secret"))
	stranger := token(t, "u-str", map[string]auth.Role{community2: auth.RoleMember}, time.Hour)

	cases := []struct {
		name   string
		path   string
		subs   []string
		header http.Header
		query  string
		want   int // 0 = accepted
		proto  string
	}{
		{name: "no credential", path: visitorsPath(community1), want: 4001},
		{name: "malformed token", path: visitorsPath(community1), subs: []string{"bearer", "not.a.jwt"}, want: 4002},
		{name: "bad signature", path: visitorsPath(community1), subs: []string{"bearer", badSig}, want: 4002},
		{name: "alg none", path: visitorsPath(community1), subs: []string{"bearer", noneTok}, want: 4002},
		{name: "not a member", path: visitorsPath(community1), subs: []string{"bearer", stranger}, want: 4003},
		{name: "member on dashboard", path: dashboardPath(community1), subs: []string{"bearer", member(t, "u1")}, want: 4003},
		{name: "expired token", path: visitorsPath(community1), subs: []string{"bearer", expired}, want: 4004},
		{name: "expired token falls back to live session", path: visitorsPath(community1), subs: []string{"bearer", expired},
			header: http.Header{"Cookie": {"footfall_session=" + live.ID}}, proto: "bearer"},
		{name: "unknown session", path: visitorsPath(community1), header: http.Header{"Cookie": {"footfall_session=nope"}}, want: 4002},
		{name: "revoked session", path: visitorsPath(community1), header: http.Header{"Cookie": {"footfall_session=" + revoked.ID}}, want: 4004},
		{name: "session cookie", path: visitorsPath(community1), header: http.Header{"Cookie": {"footfall_session=" + live.ID}}},
		{name: "authorization header", path: visitorsPath(community1), header: http.Header{"Authorization": {"Bearer " + member(t, "u2")}}},
		{name: "non-bearer authorization header", path: visitorsPath(community1), header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, want: 4002},
		{name: "bearer subprotocol", path: visitorsPath(community1), subs: []string{"bearer", member(t, "u3")}, proto: "bearer"},
		{name: "seed subprotocol form", path: visitorsPath(community1), header: http.Header{"Sec-WebSocket-Protocol": {"Authorization, Bearer " + member(t, "u4")}}, proto: "Authorization"},
		{name: "query token", path: visitorsPath(community1), query: "?token=" + member(t, "u5")},
		{name: "empty query token is absent", path: visitorsPath(community1), query: "?token=", want: 4001},
		{name: "moderator on dashboard", path: dashboardPath(community1), subs: []string{"bearer", moderator(t, "m1")}, proto: "bearer"},
		{name: "site admin everywhere", path: dashboardPath(community2), subs: []string{"bearer", adminToken(t)}, proto: "bearer"},
		{name: "upper-case community id", path: visitorsPath(strings.ToUpper(community1)), subs: []string{"bearer", member(t, "u6")}, proto: "bearer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &websocket.Dialer{Subprotocols: tc.subs}
			c := g.dialWith(tc.path+tc.query, d, tc.header)
			if tc.want != 0 {
				c.expectClose(tc.want)
				return
			}
			if got := c.conn.Subprotocol(); got != tc.proto {
				t.Errorf("selected subprotocol = %q; want %q", got, tc.proto)
			}
			m := c.read()
			if typ := m.str("type"); typ != "visitor_count" && typ != "dashboard_update" {
				t.Fatalf("first message = %v; want a snapshot", m)
			}
		})
	}
}

func adminToken(t testing.TB) string {
	t.Helper()
	tok, _, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "root", Admin: true, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRefusedBeforeUpgrade(t *testing.T) {
	g := newGateway(t, func(o *api.Options) {})
	tok := member(t, "u1")
	cases := []struct {
		name   string
		path   string
		origin string
		want   int
	}{
		{"foreign origin", visitorsPath(community1), "https://evil.example", http.StatusForbidden},
		{"null origin", visitorsPath(community1), "null", http.StatusForbidden},
		{"bad community id", "/ws/communities/not-hex!/visitors/", "", http.StatusNotFound},
		{"non-hex community id", "/ws/communities/xyz/visitors/", "", http.StatusNotFound},
		{"unknown route", "/ws/elsewhere/", "", http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			d := websocket.Dialer{Subprotocols: []string{"bearer", tok}}
			conn, resp, err := d.Dial(g.wsURL(tc.path), hdr)
			if err == nil {
				conn.Close()
				t.Fatalf("dial %s succeeded; want HTTP %d", tc.path, tc.want)
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("dial %s: %v; want HTTP %d", tc.path, err, tc.want)
			}
		})
	}
	t.Run("same host origin", func(t *testing.T) {
		d := &websocket.Dialer{Subprotocols: []string{"bearer", tok}}
		c := g.dialWith(visitorsPath(community1), d, http.Header{"Origin": {g.ts.URL}})
		c.readType("visitor_count")
	})
	t.Run("allowed origins list", func(t *testing.T) {
		g2 := newGateway(t, func(o *api.Options) { o.AllowedOrigins = []string{"https://app.example"} })
		d := &websocket.Dialer{Subprotocols: []string{"bearer", tok}}
		g2.dialWith(visitorsPath(community1), d, http.Header{"Origin": {"https://app.example"}}).readType("visitor_count")
		if _, resp, err := d.Dial(g2.wsURL(visitorsPath(community1)), http.Header{"Origin": {g2.ts.URL}}); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("same-host origin with a list configured: %v; want 403", err)
		}
	})
}

func TestVisitorStreamMessages(t *testing.T) {
	g := newGateway(t, nil)
	a := g.dial(visitorsPath(community1), member(t, "alice"))
	m := a.readType("visitor_count")
	if m.num("count") != 1 || m.str("community_id") != community1 || m["change"] != nil {
		t.Fatalf("first message = %v; want count 1 for %s, no change", m, community1)
	}
	if ts, err := time.Parse(time.RFC3339, m.str("timestamp")); err != nil || ts.Location() != time.UTC || !strings.HasSuffix(m.str("timestamp"), "Z") {
		t.Fatalf("timestamp %q: want RFC 3339 UTC (%v)", m.str("timestamp"), err)
	}

	b := g.dial(visitorsPath(community1), member(t, "bob"))
	if m := b.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("bob's first message = %v; want count 2", m)
	}
	if m := a.readType("visitor_joined"); m.num("count") != 2 {
		t.Fatalf("alice saw %v; want visitor_joined with count 2", m)
	}

	// A second tab of bob changes nothing and sends nothing.
	b2 := g.dial(visitorsPath(community1), member(t, "bob"))
	if m := b2.readType("visitor_count"); m.num("count") != 2 {
		t.Fatalf("bob's second tab starts with %v; want count 2", m)
	}
	a.quiet()
	b2.conn.Close()
	time.Sleep(100 * time.Millisecond)
	a.quiet()

	// The last tab of bob leaving is a visitor_left.
	b.conn.Close()
	if m := a.readType("visitor_left"); m.num("count") != 1 {
		t.Fatalf("alice saw %v; want visitor_left with count 1", m)
	}

	// ping -> pong; request_count -> visitor_count with change.
	a.send(map[string]string{"type": "ping"})
	if m := a.readType("pong"); m.str("timestamp") == "" {
		t.Fatalf("pong = %v; want a timestamp", m)
	}
	a.send(map[string]string{"type": "request_count"})
	if m := a.readType("visitor_count"); m.num("count") != 1 || m["change"] == nil {
		t.Fatalf("answer to request_count = %v; want count 1 with change", m)
	}

	// Other communities are not seen.
	g.dial(visitorsPath(community2), member(t, "carol")).readType("visitor_count")
	a.quiet()
}

func TestDashboardStream(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.DashboardInterval = 300 * time.Millisecond })
	d := g.dial(dashboardPath(community1), moderator(t, "mod"))
	m := d.readType("dashboard_update")
	if m.data().num("realtime_count") != 0 || m.data().str("community_id") != community1 {
		t.Fatalf("first dashboard_update = %v; want realtime_count 0 for %s", m, community1)
	}
	// A moderator on the dashboard is not a visitor.
	g.dial(visitorsPath(community1), member(t, "alice")).readType("visitor_count")
	m = d.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 1 })
	today, _ := m.data()["today_visitors"].(map[string]any)
	if today["authenticated_visitors"] != 1.0 || today["anonymous_visitors"] != 0.0 || today["total_unique_visitors"] != 1.0 {
		t.Fatalf("today_visitors = %v; want 1 authenticated, 0 anonymous, 1 total", today)
	}
	if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-1", false, "join")); code != 200 {
		t.Fatalf("visitor-events = %d; want 200", code)
	}
	m = d.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 2 })
	today, _ = m.data()["today_visitors"].(map[string]any)
	if today["anonymous_visitors"] != 1.0 || today["total_unique_visitors"] != 2.0 {
		t.Fatalf("today_visitors = %v; want 1 anonymous, 2 total", today)
	}

	// Metrics and conversions arrive as analytics_update.
	if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "conversion_rate", "value": 14.5}); code != 202 {
		t.Fatalf("metrics = %d; want 202", code)
	}
	m = d.readUntil("analytics_update", nil)
	if m.str("metric") != "conversion_rate" || m["value"] != 14.5 {
		t.Fatalf("analytics_update = %v; want conversion_rate 14.5", m)
	}
	if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/conversions", map[string]any{"session_id": "s-1", "converted_at": "2025-10-10T14:31:00Z"}); code != 202 {
		t.Fatalf("conversions = %d; want 202", code)
	}
	m = d.readUntil("analytics_update", nil)
	v, _ := m["value"].(map[string]any)
	if m.str("metric") != "conversion" || v["session_id"] != "s-1" || v["converted_at"] != "2025-10-10T14:31:00Z" {
		t.Fatalf("analytics_update = %v; want metric conversion with the session", m)
	}

	// request_count on the dashboard answers a dashboard_update at once.
	d.send(map[string]string{"type": "request_count"})
	d.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 2 })

	// The periodic push arrives with nothing changing.
	start := time.Now()
	d.readUntil("dashboard_update", nil)
	d.readUntil("dashboard_update", nil)
	if time.Since(start) > 4*time.Second {
		t.Fatalf("periodic dashboard pushes took %v", time.Since(start))
	}
}

func TestBroadcastDelivered(t *testing.T) {
	g := newGateway(t, nil)
	v := g.dial(visitorsPath(community1), member(t, "alice"))
	v.readType("visitor_count")
	d := g.dial(dashboardPath(community1), moderator(t, "mod"))
	d.readType("dashboard_update")

	code, _ := g.service("POST", "/api/v1/communities/"+community1+"/broadcast", map[string]any{
		"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community1, "count": 42, "change": 1, "timestamp": "2025-10-10T14:30:00Z"},
	})
	if code != 202 {
		t.Fatalf("broadcast = %d; want 202", code)
	}
	if m := v.readType("visitor_count"); m.num("count") != 42 || m.num("change") != 1 {
		t.Fatalf("broadcast arrived as %v; want count 42 change 1", m)
	}
	code, _ = g.service("POST", "/api/v1/communities/"+community1+"/broadcast", map[string]any{
		"stream": "dashboard", "message": map[string]any{"type": "analytics_update", "metric": "m", "value": 1, "timestamp": "2025-10-10T14:30:00Z"},
	})
	if code != 202 {
		t.Fatalf("broadcast = %d; want 202", code)
	}
	d.readUntil("analytics_update", func(m message) bool { return m.str("metric") == "m" })
	v.quiet()
}

func TestInboundErrors(t *testing.T) {
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "alice"))
	c.readType("visitor_count")
	cases := []struct {
		name, send, code string
	}{
		{"not json", "hello", "invalid_json"},
		{"not an object", "[1,2]", "invalid_message"},
		{"no type", `{"x":1}`, "invalid_message"},
		{"type not a string", `{"type":5}`, "invalid_message"},
		{"unknown type", `{"type":"dance"}`, "unknown_type"},
		{"auth without token", `{"type":"auth"}`, "invalid_message"},
		{"auth token not a string", `{"type":"auth","token":7}`, "invalid_message"},
		{"over 4 KiB", `{"type":"ping","pad":"` + strings.Repeat("x", 5000) + `"}`, "message_too_large"},
	}
	for _, tc := range cases {
		c.sendRaw(tc.send)
		m := c.readType("error")
		if m.str("code") != tc.code || m.str("message") == "" {
			t.Errorf("%s: error = %v; want code %q with a message", tc.name, m, tc.code)
		}
	}
	// The connection lives on.
	c.quiet()

	t.Run("over 64 KiB closes with 1009", func(t *testing.T) {
		c := g.dial(visitorsPath(community1), member(t, "bob"))
		c.readType("visitor_count")
		// The server may close before the whole frame is written.
		_ = c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","pad":"`+strings.Repeat("x", 70<<10)+`"}`))
		c.expectClose(websocket.CloseMessageTooBig)
	})
	t.Run("rate limited", func(t *testing.T) {
		c := g.dial(visitorsPath(community1), member(t, "carol"))
		c.readType("visitor_count")
		for range 40 {
			c.send(map[string]string{"type": "ping"})
		}
		limited := 0
		for range 40 {
			if m := c.read(); m.str("type") == "error" && m.str("code") == "rate_limited" {
				limited++
			}
		}
		if limited == 0 {
			t.Fatalf("40 messages at once got no rate_limited error")
		}
	})
}

func TestAuthRefresh(t *testing.T) {
	g := newGateway(t, nil)
	short := token(t, "alice", map[string]auth.Role{community1: auth.RoleMember}, 2*time.Second)
	c := g.dial(visitorsPath(community1), short)
	c.readType("visitor_count")

	c.send(map[string]string{"type": "auth", "token": member(t, "mallory")})
	if m := c.readType("error"); m.str("code") != "forbidden" {
		t.Fatalf("refresh with another sub = %v; want forbidden", m)
	}
	c.send(map[string]string{"type": "auth", "token": "garbage"})
	if m := c.readType("error"); m.str("code") != "invalid_token" {
		t.Fatalf("refresh with garbage = %v; want invalid_token", m)
	}
	c.send(map[string]string{"type": "auth", "token": token(t, "alice", map[string]auth.Role{community1: auth.RoleMember}, -time.Second)})
	if m := c.readType("error"); m.str("code") != "expired" {
		t.Fatalf("refresh with an expired token = %v; want expired", m)
	}
	c.send(map[string]string{"type": "auth", "token": member(t, "alice")})
	if m := c.readType("auth_ok"); m.str("expires_at") == "" {
		t.Fatalf("auth_ok = %v; want expires_at", m)
	}
	// Past the first token's expiry the connection is still open.
	time.Sleep(2500 * time.Millisecond)
	c.quiet()
}

func TestCredentialExpiryCloses(t *testing.T) {
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), token(t, "alice", map[string]auth.Role{community1: auth.RoleMember}, 2*time.Second))
	c.readType("visitor_count")
	c.expectClose(4004)
}

func TestSessionRevocationCloses(t *testing.T) {
	g := newGateway(t, nil)
	code, m := g.service("POST", "/api/v1/sessions", map[string]any{"user_id": "sess-user", "communities": map[string]string{strings.ToUpper(community1): "moderator"}})
	if code != 201 || m.str("session_id") == "" || m.str("expires_at") == "" {
		t.Fatalf("create session = %d %v; want 201 with session_id and expires_at", code, m)
	}
	sid := m.str("session_id")
	hdr := http.Header{"Cookie": {"footfall_session=" + sid}}
	v := g.dialWith(visitorsPath(community1), &websocket.Dialer{}, hdr)
	v.readType("visitor_count")
	d := g.dialWith(dashboardPath(community1), &websocket.Dialer{}, hdr)
	d.readType("dashboard_update")

	if code, _ := g.service("DELETE", "/api/v1/sessions/"+sid, nil); code != 204 {
		t.Fatalf("revoke = %d; want 204", code)
	}
	v.expectClose(4004)
	d.expectClose(4004)
	if code, _ := g.service("DELETE", "/api/v1/sessions/"+sid, nil); code != 404 {
		t.Fatalf("second revoke = %d; want 404", code)
	}
	// The revoked session is refused from now on with 4004.
	g.dialWith(visitorsPath(community1), &websocket.Dialer{}, hdr).expectClose(4004)
}

// TestCoalescing: a burst of joins reaches a client as a few messages, the
// last one carrying the final count.
func TestCoalescing(t *testing.T) {
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "watcher"))
	c.readType("visitor_count")
	const n = 200
	for i := range n {
		if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-"+strconv.Itoa(i), false, "join")); code != 200 {
			t.Fatalf("join %d = %d", i, code)
		}
	}
	msgs := 0
	last := 0
	for last != n+1 {
		m := c.read()
		msgs++
		last = m.num("count")
		if m.str("type") == "visitor_count" && m["change"] == nil {
			t.Fatalf("coalesced message %v has no change", m)
		}
	}
	if msgs >= n {
		t.Fatalf("%d joins arrived as %d messages; want them coalesced", n, msgs)
	}
	t.Logf("%d joins arrived as %d messages", n, msgs)
}

// TestServiceVisitorTTL: a service-API visitor leaves by itself after the
// presence TTL, and the leave is broadcast.
func TestServiceVisitorTTL(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.PresenceTTL = 300 * time.Millisecond })
	c := g.dial(visitorsPath(community1), member(t, "watcher"))
	c.readType("visitor_count")
	code, m := g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("anon-1", false, "join"))
	if code != 200 || m.num("count") != 2 || m.str("community_id") != community1 || m.str("timestamp") == "" {
		t.Fatalf("join = %d %v; want 200 with count 2", code, m)
	}
	c.readType("visitor_joined")
	if m := c.readType("visitor_left"); m.num("count") != 1 {
		t.Fatalf("after the TTL: %v; want visitor_left with count 1", m)
	}
	// An authenticated service-API visitor is the same visitor as the JWT sub.
	code, m = g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent("watcher", true, "heartbeat"))
	if code != 200 || m.num("count") != 1 {
		t.Fatalf("heartbeat of the connected user = %d %v; want count 1", code, m)
	}
	c.quiet()
}
