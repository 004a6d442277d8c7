package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/gorilla/websocket"
)

func TestServiceAPIKey(t *testing.T) {
	g := newGateway(t, nil)
	path := "/api/v1/communities/" + community1 + "/metrics"
	body := map[string]any{"metric": "m", "value": 1}
	if code, m := g.call("POST", path, "", body); code != http.StatusUnauthorized || m.str("error") == "" {
		t.Errorf("no key = %d %v; want 401 with an error", code, m)
	}
	if code, _ := g.call("POST", path, "wrong", body); code != http.StatusUnauthorized {
		t.Errorf("wrong key = %d; want 401", code)
	}
	if code, _ := g.call("POST", path, testAPIKey, body); code != http.StatusAccepted {
		t.Errorf("right key = %d; want 202", code)
	}

	off := newGateway(t, func(o *api.Options) { o.APIKey = "" })
	if code, m := off.call("POST", path, testAPIKey, body); code != http.StatusNotFound || m.str("error") != "not_found" {
		t.Errorf("without a configured key = %d %v; want 404", code, m)
	}
}

func TestServiceAPIValidation(t *testing.T) {
	g := newGateway(t, nil)
	events := "/api/v1/communities/" + community1 + "/visitor-events"
	cases := []struct {
		name  string
		path  string
		body  any
		field string
		index int // -1: no index
	}{
		{"empty body", events, "", "body", -1},
		{"not json", events, "{nope", "body", -1},
		{"missing visitor_id", events, map[string]any{"action": "join"}, "visitor_id", -1},
		{"visitor_id not a string", events, map[string]any{"visitor_id": 5, "action": "join"}, "visitor_id", -1},
		{"authenticated not a bool", events, map[string]any{"visitor_id": "a", "authenticated": "yes", "action": "join"}, "authenticated", -1},
		{"bad action", events, map[string]any{"visitor_id": "a", "action": "dance"}, "action", -1},
		{"batch element", events, []any{visitorEvent("a", false, "join"), map[string]any{"visitor_id": "b"}}, "action", 1},
		{"batch element not an object", events, []any{visitorEvent("a", false, "join"), 7}, "body", 1},
		{"empty batch", events, []any{}, "body", -1},
		{"metric missing", "/api/v1/communities/" + community1 + "/metrics", map[string]any{"value": 1}, "metric", -1},
		{"metric value missing", "/api/v1/communities/" + community1 + "/metrics", map[string]any{"metric": "m"}, "value", -1},
		{"conversion without session", "/api/v1/communities/" + community1 + "/conversions", map[string]any{"converted_at": "2025-10-10T14:31:00Z"}, "session_id", -1},
		{"conversion bad time", "/api/v1/communities/" + community1 + "/conversions", map[string]any{"session_id": "s", "converted_at": "yesterday"}, "converted_at", -1},
		{"broadcast bad stream", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "all", "message": map[string]any{"type": "visitor_count", "count": 1}}, "stream", -1},
		{"broadcast not a server message", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "visitors", "message": map[string]any{"type": "hello"}}, "message.type", -1},
		{"broadcast wrong stream for type", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "visitors", "message": map[string]any{"type": "dashboard_update", "data": map[string]any{}}}, "message.type", -1},
		{"broadcast count not a number", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community1, "count": "many", "timestamp": "2025-10-10T14:30:00Z"}}, "message.count", -1},
		{"broadcast without timestamp", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community1, "count": 1}}, "message.timestamp", -1},
		{"broadcast for another community", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "visitors", "message": map[string]any{"type": "visitor_count", "community_id": community2, "count": 1, "timestamp": "2025-10-10T14:30:00Z"}}, "message.community_id", -1},
		{"broadcast dashboard without figures", "/api/v1/communities/" + community1 + "/broadcast", map[string]any{"stream": "dashboard", "message": map[string]any{"type": "dashboard_update", "data": map[string]any{}, "timestamp": "2025-10-10T14:30:00Z"}}, "message.data.today_visitors", -1},
		{"session without user", "/api/v1/sessions", map[string]any{"communities": map[string]string{community1: "member"}}, "user_id", -1},
		{"session bad role", "/api/v1/sessions", map[string]any{"user_id": "u", "communities": map[string]string{community1: "owner"}}, "communities", -1},
		{"session bad ttl", "/api/v1/sessions", map[string]any{"user_id": "u", "ttl_seconds": -5}, "ttl_seconds", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, m := g.service("POST", tc.path, tc.body)
			if code != http.StatusBadRequest {
				t.Fatalf("POST %s = %d %v; want 400", tc.path, code, m)
			}
			if m.str("error") == "" || m.str("message") == "" || m.str("field") != tc.field {
				t.Fatalf("POST %s = %v; want error, message and field %q", tc.path, m, tc.field)
			}
			_, hasIndex := m["index"]
			if tc.index >= 0 && (!hasIndex || m.num("index") != tc.index) {
				t.Fatalf("POST %s = %v; want index %d", tc.path, m, tc.index)
			}
			if tc.index < 0 && hasIndex {
				t.Fatalf("POST %s = %v; want no index", tc.path, m)
			}
		})
	}
	if code, m := g.service("POST", "/api/v1/communities/not-a-hex-id!/metrics", map[string]any{"metric": "m", "value": 1}); code != http.StatusNotFound {
		t.Errorf("bad community id = %d %v; want 404", code, m)
	}
	big := `{"metric":"m","value":"` + strings.Repeat("x", 1<<20) + `"}`
	if code, m := g.service("POST", "/api/v1/communities/"+community1+"/metrics", big); code != http.StatusRequestEntityTooLarge || m.str("error") == "" {
		t.Errorf("body over 1 MiB = %d %v; want 413", code, m)
	}
}

func TestVisitorEventsBatch(t *testing.T) {
	g := newGateway(t, nil)
	path := "/api/v1/communities/" + community1 + "/visitor-events"
	code, m := g.service("POST", path, []any{
		visitorEvent("a1", false, "join"),
		visitorEvent("a2", false, "join"),
		visitorEvent("u1", true, "join"),
		visitorEvent("a1", false, "heartbeat"),
		visitorEvent("a2", false, "leave"),
	})
	if code != http.StatusOK || m.num("count") != 2 || m.str("community_id") != community1 {
		t.Fatalf("batch = %d %v; want 200 count 2", code, m)
	}
	// An invalid element rejects the whole batch before anything applies.
	code, _ = g.service("POST", path, []any{visitorEvent("a3", false, "join"), map[string]any{"visitor_id": ""}})
	if code != http.StatusBadRequest {
		t.Fatalf("batch with a bad element = %d; want 400", code)
	}
	code, m = g.service("POST", path, visitorEvent("a1", false, "leave"))
	if code != http.StatusOK || m.num("count") != 1 {
		t.Fatalf("leave = %d %v; want count 1 (the bad batch applied nothing)", code, m)
	}
}

func TestHealthAndNotFound(t *testing.T) {
	g := newGateway(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/no/such/route": 404, "/api/v1/nope": 404} {
		resp, err := http.Get(g.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d; want %d", path, resp.StatusCode, want)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET %s Content-Type = %q; want JSON", path, ct)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml", "/asyncapi.yaml", "/metrics"} {
		if code, _, _ := g.getRaw(path); code != 200 {
			t.Errorf("GET %s = %d; want 200", path, code)
		}
	}
	g.srv.Drain()
	resp, err := http.Get(g.ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz while draining = %d; want 503", resp.StatusCode)
	}
}

func TestDevToken(t *testing.T) {
	g := newGateway(t, nil)
	code, m := g.call("POST", "/dev/token", "", map[string]any{"community": community1, "role": "moderator"})
	if code != http.StatusOK || m.str("token") == "" || m.str("sub") == "" {
		t.Fatalf("dev token = %d %v; want a token and a sub", code, m)
	}
	g.dial(dashboardPath(community1), m.str("token")).readType("dashboard_update")

	if code, m := g.call("GET", "/dev/info", "", nil); code != http.StatusOK || m.str("api_key") != testAPIKey {
		t.Fatalf("dev info = %d %v; want the API key", code, m)
	}

	off := newGateway(t, func(o *api.Options) { o.Dev = false })
	if code, _ := off.call("POST", "/dev/token", "", map[string]any{}); code != http.StatusNotFound {
		t.Fatalf("dev token outside dev mode = %d; want 404", code)
	}
	if code, _ := off.call("GET", "/dev/info", "", nil); code != http.StatusNotFound {
		t.Fatalf("dev info outside dev mode = %d; want 404", code)
	}
}

// getRaw performs a GET, checks it against the spec and returns the body.
func (g *gateway) getRaw(path string) (int, http.Header, []byte) {
	g.t.Helper()
	req, _ := http.NewRequest("GET", g.ts.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, data); err != nil {
		g.t.Errorf("%v", err)
	}
	return resp.StatusCode, resp.Header, data
}

// TestRoutesMatchSpec: every route is in the OpenAPI document and every
// operation of the document is a route.
func TestRoutesMatchSpec(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.Web = fstest.MapFS{"index.html": {Data: []byte("<!doctype html>")}} })
	routes := map[string]bool{}
	for _, r := range g.srv.Routes() {
		routes[r] = true
	}
	ops := map[string]bool{}
	for _, op := range g.spec.Operations() {
		ops[op] = true
		if !routes[op] {
			t.Errorf("the OpenAPI document lists %s, which is not a route", op)
		}
	}
	for r := range routes {
		if !ops[r] {
			t.Errorf("route %s is not in the OpenAPI document", r)
		}
	}
	if code, hdr, body := g.getRaw("/"); code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || len(body) == 0 {
		t.Errorf("GET / = %d %q; want the page", code, hdr.Get("Content-Type"))
	}
	// Not an operation of the document, so checked by hand: a JSON 404.
	resp, err := http.Get(g.ts.URL + "/nothing-here.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("GET /nothing-here.js = %d %q; want a JSON 404", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestMetrics: the figures move with connections, refusals and messages,
// and no label names a community or a user.
func TestMetrics(t *testing.T) {
	g := newGateway(t, nil)
	c := g.dial(visitorsPath(community1), member(t, "alice"))
	c.readType("visitor_count")
	g.dialWith(visitorsPath(community1), &websocket.Dialer{}, nil).expectClose(4001)
	wants := []string{
		`footfall_connections_open{stream="visitors",transport="websocket"} 1`,
		`footfall_connections_accepted_total{stream="visitors",transport="websocket"} 1`,
		`footfall_connections_refused_total{code="4001",transport="websocket"} 1`,
		`footfall_messages_sent_total{transport="websocket"} 1`,
		`footfall_present_visitors 1`,
		`footfall_broadcast_fanout_duration_seconds_count`,
	}
	// A message is counted once its write returned, which may be just
	// after the client read it: give the counters a moment.
	var text string
	for wait := time.Now().Add(5 * time.Second); ; {
		_, _, body := g.getRaw("/metrics")
		text = string(body)
		missing := 0
		for _, want := range wants {
			if !strings.Contains(text, want) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(wait) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, community1) || strings.Contains(text, "alice") {
		t.Errorf("/metrics names a community or a user")
	}
	c.conn.Close()
	var body []byte
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, _, body = g.getRaw("/metrics")
		if strings.Contains(string(body), `footfall_connections_closed_total{`) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(body), `footfall_connections_open{stream="visitors",transport="websocket"} 0`) ||
		!strings.Contains(string(body), `footfall_connections_closed_total{code="1006",transport="websocket"} 1`) {
		t.Errorf("/metrics after the close: %s; want 0 open and 1 closed with 1006", grepLines(string(body), "footfall_connections"))
	}
	code, m := g.service("GET", "/api/v1/communities/"+community1+"/stats", nil)
	if code != 200 || m.num("present_visitors") != 0 {
		t.Errorf("stats = %d %v; want 200 with 0 present", code, m)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStatsNodeConnections: /stats counts the node's open streams of the
// community by transport and stream, and only that community's.
func TestStatsNodeConnections(t *testing.T) {
	g := newGateway(t, nil)
	conns := func() map[string]any {
		t.Helper()
		code, m := g.service("GET", "/api/v1/communities/"+community1+"/stats", nil)
		if code != 200 {
			t.Fatalf("stats = %d %v", code, m)
		}
		nc, _ := m["node_connections"].(map[string]any)
		return nc
	}
	want := func(ws, wsDash, sse, sseDash int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			nc := conns()
			w, _ := nc["websocket"].(map[string]any)
			s, _ := nc["sse"].(map[string]any)
			got := [4]int{message(w).num("visitors"), message(w).num("dashboard"), message(s).num("visitors"), message(s).num("dashboard")}
			if got == [4]int{ws, wsDash, sse, sseDash} {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("node_connections = %v; want websocket %d/%d, sse %d/%d (visitors/dashboard)", nc, ws, wsDash, sse, sseDash)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	want(0, 0, 0, 0)
	a := g.dial(visitorsPath(community1), member(t, "alice"))
	a.readType("visitor_count")
	g.dial(dashboardPath(community1), moderator(t, "mod")).readType("dashboard_update")
	s1 := g.openSSE(ssePath(community1)+"?token="+member(t, "bob"), nil, 200)
	s1.nextType("visitor_count")
	for range 2 {
		g.openSSE(sseDashboardPath(community1)+"?token="+moderator(t, "mod"), nil, 200).nextType("dashboard_update")
	}
	g.dial(visitorsPath(community2), member(t, "carol")).readType("visitor_count") // another community
	want(1, 1, 1, 2)
	a.conn.Close()
	s1.close()
	want(0, 1, 0, 2)
}
