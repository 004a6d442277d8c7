package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
)

// TestSSEResumeLongGap: a resume whose gap is more than the stream takes
// at once gets a fresh snapshot and stays open (it used to queue every
// missed event, overrun the stream's buffer and end, so that the browser
// retried the same resume forever); a Last-Event-ID over 128 bytes is
// unknown.
func TestSSEResumeLongGap(t *testing.T) {
	g := newGateway(t, nil)
	tok := moderator(t, "mod")
	d := g.openSSE(sseDashboardPath(community1)+"?token="+tok, nil, 200)
	d.nextType("dashboard_update")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "first", "value": 1})
	seen, _ := d.nextType("analytics_update")
	d.close()
	for range 300 {
		g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "missed", "value": 1})
	}

	for _, lastID := range []string{seen.ID, strings.Repeat("9", 129)} {
		r := g.openSSE(sseDashboardPath(community1)+"?token="+tok, http.Header{"Last-Event-Id": {lastID}}, 200)
		if _, m := r.nextType("dashboard_update"); m.data() == nil {
			t.Fatalf("resume from %.20q: first event %v; want a dashboard_update snapshot", lastID, m)
		}
		g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "live", "value": 2})
		for {
			_, m := r.nextType("analytics_update")
			if m.str("metric") == "missed" {
				t.Fatalf("resume from %.20q replayed a missed event after the snapshot", lastID)
			}
			if m.str("metric") == "live" {
				break
			}
		}
		r.close()
	}

	// A short gap still replays exactly what was missed.
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "mark", "value": 0})
	r := g.openSSE(sseDashboardPath(community1)+"?token="+tok, nil, 200)
	r.nextType("dashboard_update")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "a", "value": 0})
	a, _ := r.nextType("analytics_update")
	r.close()
	for range 10 {
		g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "b", "value": 0})
	}
	again := g.openSSE(sseDashboardPath(community1)+"?token="+tok, http.Header{"Last-Event-Id": {a.ID}}, 200)
	for i := range 10 {
		if _, m := again.nextType("analytics_update"); m.str("metric") != "b" {
			t.Fatalf("replayed event %d = %v; want metric b", i, m)
		}
	}
}

// TestSSETerminalEventsKeepTheID: the `error` and `shutdown` events that
// end a stream carry the id of the last event sent (r3labs writes an id
// line with every event, and an empty one reset the browser's resume
// point).
func TestSSETerminalEventsKeepTheID(t *testing.T) {
	g := newGateway(t, nil)
	e := g.openSSE(sseDashboardPath(community1)+"?token="+token(t, "m", map[string]auth.Role{community1: auth.RoleModerator}, 2*time.Second), nil, 200)
	e.nextType("dashboard_update")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m", "value": 1})
	last, _ := e.nextType("analytics_update")
	rest := e.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "error" {
		t.Fatalf("stream ended with %+v; want event: error", rest)
	}
	if end := rest[len(rest)-1]; end.ID != last.ID || last.ID == "" {
		t.Fatalf("error event id = %q; want the last event's id %q", end.ID, last.ID)
	}

	s := g.openSSE(sseDashboardPath(community1)+"?token="+moderator(t, "mod"), nil, 200)
	s.nextType("dashboard_update")
	g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": "m", "value": 2})
	last, _ = s.nextType("analytics_update")
	g.srv.Drain()
	rest = s.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "shutdown" {
		t.Fatalf("stream ended with %+v; want event: shutdown", rest)
	}
	if end := rest[len(rest)-1]; end.ID != last.ID {
		t.Fatalf("shutdown event id = %q; want the last event's id %q", end.ID, last.ID)
	}
}
