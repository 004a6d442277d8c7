package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/openapi/openapitest"
)

// sseEvent is one parsed server-sent event (or a comment).
type sseEvent struct {
	Event, ID, Retry string
	Data             string
	Comment          string
}

func (e sseEvent) msg(t testing.TB) message {
	t.Helper()
	var m message
	if err := json.Unmarshal([]byte(e.Data), &m); err != nil {
		t.Fatalf("SSE data %q is not JSON: %v", e.Data, err)
	}
	return m
}

// sseClient is a real HTTP client reading an event stream.
type sseClient struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
	spec   *openapitest.Validator
	stream string
	// broadcasts: the stream carries broadcast messages with extra fields,
	// checked against the looser broadcast schemas.
	broadcasts bool
}

// openSSE opens an event stream; hdr may carry Last-Event-ID or
// Authorization. It fails unless the status is want.
func (g *gateway) openSSE(path string, hdr http.Header, want int) *sseClient {
	g.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", g.ts.URL+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		g.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != want {
		cancel()
		resp.Body.Close()
		g.t.Fatalf("GET %s = %d; want %d", path, resp.StatusCode, want)
	}
	var body []byte // a stream's events are checked one by one
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(resp.Body)
	}
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, body); err != nil {
		g.t.Errorf("%v", err)
	}
	stream := openapitest.StreamVisitors
	if strings.Contains(path, "visitor-dashboard") {
		stream = openapitest.StreamDashboard
	}
	c := &sseClient{t: g.t, resp: resp, events: make(chan sseEvent, 1000), cancel: cancel, spec: g.spec, stream: stream}
	g.t.Cleanup(c.close)
	if want != http.StatusOK {
		return c
	}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				c.events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.Comment = strings.TrimSpace(line[1:])
			default:
				k, v, _ := strings.Cut(line, ":")
				v = strings.TrimPrefix(v, " ")
				switch k {
				case "event":
					ev.Event = v
				case "id":
					ev.ID = v
				case "retry":
					ev.Retry = v
				case "data":
					ev.Data += v
				}
			}
		}
	}()
	return c
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event with data (skipping heartbeats).
func (c *sseClient) next() sseEvent {
	c.t.Helper()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				c.t.Fatalf("the stream ended")
			}
			if ev.Data == "" {
				continue
			}
			check := c.spec.Message
			if c.broadcasts {
				check = c.spec.Broadcast
			}
			if err := check(c.stream, []byte(ev.Data)); err != nil {
				c.t.Errorf("SSE event %+v does not follow the OpenAPI schemas: %v", ev, err)
			}
			if m := ev.msg(c.t); ev.Event != m.str("type") {
				c.t.Errorf("SSE event name %q; want the message type %q", ev.Event, m.str("type"))
			}
			return ev
		case <-time.After(5 * time.Second):
			c.t.Fatalf("no SSE event within 5s")
		}
	}
}

// nextType returns the next data event, checking its SSE event name and
// its JSON type.
func (c *sseClient) nextType(typ string) (sseEvent, message) {
	c.t.Helper()
	ev := c.next()
	m := ev.msg(c.t)
	if ev.Event != typ || m.str("type") != typ {
		c.t.Fatalf("next SSE event = %+v; want event %q", ev, typ)
	}
	return ev, m
}

// ended waits for the stream to end.
func (c *sseClient) ended() []sseEvent {
	c.t.Helper()
	var got []sseEvent
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-time.After(5 * time.Second):
			c.t.Fatalf("the stream did not end within 5s")
		}
	}
}

func ssePath(c string) string          { return "/sse/communities/" + c + "/visitors/" }
func sseDashboardPath(c string) string { return "/sse/communities/" + c + "/visitor-dashboard/" }

func TestSSEVisitorStream(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.SSEHeartbeat = 200 * time.Millisecond })
	a := g.openSSE(ssePath(community1)+"?token="+member(t, "alice"), nil, 200)
	if ct := a.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q; want text/event-stream", ct)
	}
	if xa := a.resp.Header.Get("X-Accel-Buffering"); xa != "no" {
		t.Errorf("X-Accel-Buffering = %q; want no", xa)
	}
	if ce := a.resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding = %q; want none", ce)
	}
	ev, m := a.nextType("visitor_count")
	if m.num("count") != 1 || ev.Retry == "" || ev.ID == "" {
		t.Fatalf("first event = %+v; want count 1 with retry and id", ev)
	}

	// A WebSocket visitor joining shows up on the SSE stream with an id.
	w := g.dial(visitorsPath(community1), member(t, "bob"))
	w.readType("visitor_count")
	joined, m := a.nextType("visitor_joined")
	if m.num("count") != 2 || joined.ID == "" || joined.ID == ev.ID {
		t.Fatalf("visitor_joined = %+v; want count 2 with a new id", joined)
	}

	// Heartbeats are comments.
	deadline := time.After(3 * time.Second)
	for heartbeat := false; !heartbeat; {
		select {
		case e := <-a.events:
			heartbeat = e.Comment != "" && e.Data == ""
		case <-deadline:
			t.Fatalf("no heartbeat comment within 3s")
		}
	}

	// Resume: disconnect (alice leaves), miss carol's join, reconnect with
	// Last-Event-ID: exactly the missed events in order, no snapshot first,
	// then alice's own return.
	a.close()
	w.readType("visitor_left")
	g.dial(visitorsPath(community1), member(t, "carol")).readType("visitor_count")
	w.readType("visitor_joined")
	b := g.openSSE(ssePath(community1)+"?token="+member(t, "alice"), http.Header{"Last-Event-Id": {joined.ID}}, 200)
	var got []string
	prev := joined.ID
	for range 3 {
		ev := b.next()
		got = append(got, ev.Event+":"+itoaCount(ev.msg(t)))
		if ev.ID == "" || ev.ID == prev {
			t.Fatalf("replayed event %+v has no new id", ev)
		}
		prev = ev.ID
	}
	want := []string{"visitor_left:1", "visitor_joined:2", "visitor_joined:3"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("resumed stream = %v; want %v", got, want)
	}

	// ?last_event_id= works too; an unknown id gets a snapshot first.
	c := g.openSSE(ssePath(community1)+"?token="+member(t, "alice")+"&last_event_id=nope-1", nil, 200)
	c.nextType("visitor_count")
}

func itoaCount(m message) string {
	b, _ := json.Marshal(m["count"])
	return string(b)
}

func TestSSEAuthOutcomes(t *testing.T) {
	g := newGateway(t, nil)
	cases := []struct {
		name, path string
		hdr        http.Header
		status     int
		code       int
	}{
		{"no credential", ssePath(community1), nil, 401, 4001},
		{"malformed", ssePath(community1) + "?token=abc", nil, 401, 4002},
		{"forbidden", sseDashboardPath(community1) + "?token=" + member(t, "u"), nil, 403, 4003},
		{"expired", ssePath(community1) + "?token=" + token(t, "u", map[string]auth.Role{community1: auth.RoleMember}, -time.Minute), nil, 401, 4004},
		{"header", ssePath(community1), http.Header{"Authorization": {"Bearer " + member(t, "u")}}, 200, 0},
		{"bad community", "/sse/communities/zzz/visitors/?token=" + member(t, "u"), nil, 404, 0},
		{"foreign origin", ssePath(community1) + "?token=" + member(t, "u"), http.Header{"Origin": {"https://evil.example"}}, 403, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", g.ts.URL+tc.path, nil)
			for k, v := range tc.hdr {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				data, _ := io.ReadAll(resp.Body)
				if err := g.spec.Response(req, resp.StatusCode, resp.Header, data); err != nil {
					t.Error(err)
				}
				resp.Body = io.NopCloser(bytes.NewReader(data))
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("GET %s = %d; want %d", tc.path, resp.StatusCode, tc.status)
			}
			if tc.code != 0 {
				var body message
				_ = json.NewDecoder(resp.Body).Decode(&body)
				if body.num("code") != tc.code || body.str("error") == "" || body.str("message") == "" {
					t.Fatalf("body = %v; want code %d with error and message", body, tc.code)
				}
			}
		})
	}
}

func TestSSEDashboardAndExpiry(t *testing.T) {
	g := newGateway(t, nil)
	d := g.openSSE(sseDashboardPath(community1)+"?token="+moderator(t, "mod"), nil, 200)
	_, m := d.nextType("dashboard_update")
	if m.data().num("realtime_count") != 0 {
		t.Fatalf("first dashboard_update = %v; want realtime_count 0", m)
	}
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m", "value": 3})
	_, m = d.nextType("analytics_update")
	if m.str("metric") != "m" {
		t.Fatalf("analytics_update = %v", m)
	}

	// An SSE stream whose token expires ends with event: error.
	e := g.openSSE(ssePath(community1)+"?token="+token(t, "u", map[string]auth.Role{community1: auth.RoleMember}, 2*time.Second), nil, 200)
	e.nextType("visitor_count")
	rest := e.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "error" || !strings.Contains(rest[len(rest)-1].Data, `"code":"expired"`) {
		t.Fatalf("stream ended with %+v; want event: error with code expired", rest)
	}
}

func TestSSESessionRevocationEnds(t *testing.T) {
	g := newGateway(t, nil)
	_, m := g.service("POST", "/api/v1/sessions", map[string]any{"user_id": "s", "communities": map[string]string{community1: "member"}})
	sid := m.str("session_id")
	c := g.openSSE(ssePath(community1), http.Header{"Cookie": {"footfall_session=" + sid}}, 200)
	c.nextType("visitor_count")
	g.service("DELETE", "/api/v1/sessions/"+sid, nil)
	rest := c.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "error" {
		t.Fatalf("revoked stream ended with %+v; want event: error", rest)
	}
}

// TestSSECleanup opens and closes many SSE clients and checks that the
// goroutines return to their baseline.
func TestSSECleanup(t *testing.T) {
	g := newGateway(t, nil)
	warm := g.openSSE(ssePath(community1)+"?token="+member(t, "warm"), nil, 200)
	warm.nextType("visitor_count")
	warm.close()
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()
	var clients []*sseClient
	for i := range 50 {
		c := g.openSSE(ssePath(community1)+"?token="+member(t, "u"+string(rune('a'+i%26))+string(rune('a'+i/26))), nil, 200)
		c.nextType("visitor_count")
		clients = append(clients, c)
	}
	if n := g.srv.OpenClients(); n != 50 {
		t.Fatalf("OpenClients = %d; want 50", n)
	}
	for _, c := range clients {
		c.close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > base+2 || g.srv.OpenClients() > 0) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		t.Fatalf("goroutines = %d after closing 50 SSE clients; want about %d", n, base)
	}
	if n := g.srv.OpenClients(); n != 0 {
		t.Fatalf("OpenClients = %d; want 0", n)
	}
}

// TestSSEResumeBroadcasts: a dashboard resuming with Last-Event-ID gets the
// missed metrics and presence changes, in order (broadcast events used to
// be dropped on replay).
func TestSSEResumeBroadcasts(t *testing.T) {
	g := newGateway(t, nil)
	tok := moderator(t, "mod")
	d := g.openSSE(sseDashboardPath(community1)+"?token="+tok, nil, 200)
	d.nextType("dashboard_update")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m1", "value": 1})
	seen, _ := d.nextType("analytics_update")
	d.close()

	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m2", "value": 2})
	g.dial(visitorsPath(community1), member(t, "alice")).readType("visitor_count")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m3", "value": 3})

	r := g.openSSE(sseDashboardPath(community1)+"?token="+tok, http.Header{"Last-Event-ID": {seen.ID}}, 200)
	var got []string
	for range 3 {
		ev := r.next()
		m := ev.msg(t)
		switch m.str("type") {
		case "analytics_update":
			got = append(got, m.str("metric"))
		case "dashboard_update":
			got = append(got, "realtime:"+strconv.Itoa(m.data().num("realtime_count")))
		default:
			got = append(got, m.str("type"))
		}
	}
	if want := "m2 realtime:1 m3"; strings.Join(got, " ") != want {
		t.Fatalf("resumed dashboard = %v; want %s", got, want)
	}
}
