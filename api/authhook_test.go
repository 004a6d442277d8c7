package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
)

// hookServer is a real HTTP server playing the platform's auth hook. Its
// answer for a request is chosen by the value of the "sessionid" cookie.
type hookServer struct {
	*httptest.Server
	mu      sync.Mutex
	answers map[string]func(w http.ResponseWriter)
	calls   map[string]int
	last    map[string]any // the last body received
	auth    string         // the last Authorization header
	total   atomic.Int64
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{answers: map[string]func(http.ResponseWriter){}, calls: map[string]int{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.total.Add(1)
		var body map[string]any
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &body)
		cookie, _ := body["cookie"].(string)
		sid := ""
		for part := range strings.SplitSeq(cookie, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(part), "sessionid="); ok {
				sid = v
			}
		}
		h.mu.Lock()
		h.calls[sid]++
		h.last, h.auth = body, r.Header.Get("Authorization")
		answer := h.answers[sid]
		h.mu.Unlock()
		if answer == nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		answer(w)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) set(sid string, answer func(http.ResponseWriter)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answers[sid] = answer
}

func (h *hookServer) callsFor(sid string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[sid]
}

func allow(sub, role string, anon bool, ttl int) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": sub, "role": role, "anonymous": anon, "ttl_seconds": ttl})
	}
}

func status(code int) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.WriteHeader(code) }
}

func hookGateway(t *testing.T, h *hookServer) *gateway {
	return newGateway(t, func(o *api.Options) {
		o.AuthHookURL = h.URL
		o.PublicCommunities = []string{community1}
	})
}

func cookieHeader(v string) http.Header { return http.Header{"Cookie": {v}} }

// TestAuthHookAnswers: every answer of the hook, through WebSocket, SSE and
// REST: the request the platform gets, 200 with each role, 401 (guest on a
// public community, else 4001), 403, and the failures (timeout, 5xx,
// nonsense), which are never a guest.
func TestAuthHookAnswers(t *testing.T) {
	h := newHookServer(t)
	h.set("alice", allow("alice", "member", false, 60))
	h.set("mod", allow("mod-1", "moderator", false, 60))
	h.set("anonmod", allow("anon-9", "admin", true, 60))
	h.set("banned", status(http.StatusForbidden))
	h.set("broken", status(http.StatusInternalServerError))
	h.set("nonsense", func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"role":"member"}`) })
	h.set("slow", func(w http.ResponseWriter) {
		time.Sleep(2500 * time.Millisecond)
		allow("slow", "member", false, 60)(w)
	})
	g := hookGateway(t, h)

	// Allowed: the visitor the platform names, with footfall's cookies
	// kept from the platform.
	a := g.dialWith(visitorsPath(community1), &websocket.Dialer{}, cookieHeader("footfall_vid=abc.def; sessionid=alice; footfall_other=x; theme=dark"))
	if m := a.readType("visitor_count"); m.num("count") != 1 {
		t.Fatalf("hook-admitted visitor's first count = %v; want 1", m)
	}
	h.mu.Lock()
	body, authz := h.last, h.auth
	h.mu.Unlock()
	want := map[string]any{"community_id": community1, "stream": "visitors", "transport": "websocket", "cookie": "sessionid=alice; theme=dark", "client_ip": "127.0.0.1"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("hook request %s = %v; want %v (body %v)", k, body[k], v, body)
		}
	}
	if authz != "Bearer "+testAPIKey {
		t.Errorf("hook request Authorization = %q; want the API key", authz)
	}
	// The same user with a token is the same visitor.
	b := g.dial(visitorsPath(community1), member(t, "alice"))
	if m := b.readType("visitor_count"); m.num("count") != 1 {
		t.Errorf("alice by token beside alice by hook: count %v; want 1", m)
	}

	// Roles: a member has no dashboard, a moderator does; an anonymous
	// answer never does, whatever its role, and counts anonymous.
	g.dialWith(dashboardPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=alice")).expectClose(4003)
	d := g.dialWith(dashboardPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=mod"))
	d.readType("dashboard_update")
	g.dialWith(dashboardPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=anonmod")).expectClose(4003)
	an := g.dialWith(visitorsPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=anonmod"))
	an.readType("visitor_count")
	today, _ := d.readUntil("dashboard_update", func(m message) bool { return m.data().num("realtime_count") == 2 }).data()["today_visitors"].(map[string]any)
	if today["anonymous_visitors"] != 1.0 {
		t.Errorf("today_visitors = %v; want the anonymous hook visitor counted anonymous", today)
	}

	// 401: a guest on a public community, 4001 elsewhere; 403: 4003.
	gst := g.dialWith(visitorsPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=nobody"))
	if guestCookie(gst.resp.Header) == nil {
		t.Errorf("a 401 from the hook on a public community: no guest cookie")
	}
	gst.readType("visitor_count")
	g.dialWith(visitorsPath(community2), &websocket.Dialer{}, cookieHeader("sessionid=nobody")).expectClose(4001)
	g.dialWith(visitorsPath(community1), &websocket.Dialer{}, cookieHeader("sessionid=banned")).expectClose(4003)
	if code, _, m := g.get(countPath(community1), cookieHeader("sessionid=banned")); code != 403 || m.num("code") != 4003 {
		t.Errorf("REST with a 403 from the hook = %d %v; want 403 code 4003", code, m)
	}

	// Failures: 1011 / 503 auth_hook_unavailable, never a guest, even on
	// a public community.
	for _, sid := range []string{"broken", "nonsense", "slow"} {
		start := time.Now()
		c := g.dialWith(visitorsPath(community1), &websocket.Dialer{}, cookieHeader("sessionid="+sid))
		if guestCookie(c.resp.Header) != nil {
			t.Errorf("hook failure %s: a guest cookie was issued", sid)
		}
		c.expectClose(1011)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("hook failure %s took %v to refuse; want about the 2 s timeout at most", sid, took)
		}
		code, hdr, m := g.get(countPath(community1), cookieHeader("sessionid="+sid))
		if code != 503 || m.str("error") != "auth_hook_unavailable" || guestCookie(hdr) != nil {
			t.Errorf("REST with hook failure %s = %d %v; want 503 auth_hook_unavailable and no guest", sid, code, m)
		}
		code, _, m = g.get(ssePath(community1), cookieHeader("sessionid="+sid))
		if code != 503 || m.str("error") != "auth_hook_unavailable" {
			t.Errorf("SSE with hook failure %s = %d %v; want 503 auth_hook_unavailable", sid, code, m)
		}
	}

	// A footfall credential decides without the hook.
	before := h.total.Load()
	c := g.dialWith(visitorsPath(community2), &websocket.Dialer{Subprotocols: []string{"bearer", member(t, "carol")}}, cookieHeader("sessionid=banned"))
	c.readType("visitor_count")
	if h.total.Load() != before {
		t.Errorf("a request with a footfall token called the hook")
	}

	// Metrics: calls by outcome and latency.
	resp, err := http.Get(g.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`footfall_auth_hook_calls_total{outcome="allowed"}`, `footfall_auth_hook_calls_total{outcome="forbidden"}`,
		`footfall_auth_hook_calls_total{outcome="timeout"}`, `footfall_auth_hook_calls_total{outcome="error"}`, `footfall_auth_hook_duration_seconds_count`} {
		if !strings.Contains(string(text), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestAuthHookCache: an allow is cached for its ttl_seconds, a refusal for
// 5 s, a failure not at all; a burst of requests with one cookie makes one
// call.
func TestAuthHookCache(t *testing.T) {
	h := newHookServer(t)
	h.set("alice", allow("alice", "member", false, 60))
	h.set("banned", status(http.StatusForbidden))
	h.set("broken", status(http.StatusBadGateway))
	h.set("burst", func(w http.ResponseWriter) {
		time.Sleep(300 * time.Millisecond)
		allow("burst", "member", false, 60)(w)
	})
	g := hookGateway(t, h)
	for range 3 {
		g.get(countPath(community1), cookieHeader("sessionid=alice"))
		g.get(countPath(community1), cookieHeader("sessionid=banned"))
		g.get(countPath(community1), cookieHeader("sessionid=broken"))
	}
	if n := h.callsFor("alice"); n != 1 {
		t.Errorf("3 polls of an allowed cookie made %d hook calls; want 1 (cached)", n)
	}
	if n := h.callsFor("banned"); n != 1 {
		t.Errorf("3 polls of a refused cookie made %d hook calls; want 1 (cached 5 s)", n)
	}
	if n := h.callsFor("broken"); n != 3 {
		t.Errorf("3 polls with a failing hook made %d calls; want 3 (failures are not cached)", n)
	}
	// Another community is another key.
	g.get(countPath(community2), cookieHeader("sessionid=alice"))
	if n := h.callsFor("alice"); n != 2 {
		t.Errorf("alice in a second community: %d calls in all; want 2", n)
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", g.ts.URL+countPath(community1), nil)
			req.Header.Set("Cookie", "sessionid=burst")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n := h.callsFor("burst"); n != 1 {
		t.Errorf("20 concurrent requests with one new cookie made %d hook calls; want 1 (single flight)", n)
	}
}

// TestAuthHookRecheck: a stream the hook admitted is asked about again when
// its ttl_seconds run out: a refusal then closes it with 4004; a failure
// keeps it open.
func TestAuthHookRecheck(t *testing.T) {
	h := newHookServer(t)
	h.set("alice", allow("alice", "member", false, 1))
	h.set("bob", allow("bob", "member", false, 1))
	g := hookGateway(t, h)
	a := g.dialWith(visitorsPath(community2), &websocket.Dialer{}, cookieHeader("sessionid=alice"))
	a.readType("visitor_count")
	b := g.dialWith(visitorsPath(community2), &websocket.Dialer{}, cookieHeader("sessionid=bob"))
	b.readType("visitor_count")
	a.readType("visitor_joined")

	h.set("alice", status(http.StatusForbidden))
	h.set("bob", status(http.StatusInternalServerError))
	a.expectClose(4004)
	b.readType("visitor_left")
	// bob's re-checks fail: his stream stays open.
	time.Sleep(2 * time.Second)
	if h.callsFor("bob") < 2 {
		t.Errorf("bob's stream was asked about %d times; want a re-check after its ttl", h.callsFor("bob"))
	}
	b.quiet()
	h.set("bob", allow("bob", "member", false, 60))
}

// TestAuthHookTrailingGarbage: an answer that is one JSON object followed by
// anything else is nonsense (503), not an allow (found by FuzzAuthHookAnswers).
func TestAuthHookTrailingGarbage(t *testing.T) {
	h := newHookServer(t)
	h.set("trail", func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"sub":"42","role":"member"} trailing`) })
	g := hookGateway(t, h)
	if code, _, m := g.get(countPath(community1), cookieHeader("sessionid=trail")); code != 503 || m.str("error") != "auth_hook_unavailable" {
		t.Fatalf("a hook answer with trailing garbage = %d %v; want 503 auth_hook_unavailable", code, m)
	}
}
