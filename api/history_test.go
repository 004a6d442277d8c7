package api_test

import (
	"encoding/csv"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/streamstest"
)

func historyPath(c string, q url.Values) string {
	p := "/api/v1/communities/" + c + "/visitors/history"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// historyGateway is a node whose bus and server share a fake clock set to
// start, with service-API visitors that stay until they leave.
func historyGateway(t *testing.T, start time.Time) (*gateway, *streamstest.FakeClock) {
	clock := streamstest.NewFakeClock(start)
	bus := memory.New(memory.Options{Clock: clock, ReapInterval: 20 * time.Millisecond})
	t.Cleanup(func() { bus.Close() })
	g := newGateway(t, func(o *api.Options) {
		o.Bus = bus
		o.Now = clock.Now
		o.PresenceTTL = 24 * time.Hour
	})
	return g, clock
}

func historyQuery(step string, from, to time.Time) url.Values {
	return url.Values{"step": {step}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
}

// TestVisitorHistory: the history endpoint answers the peaks and
// time-weighted averages of the present count per minute, hour and day,
// as JSON and as CSV, and today's peak reaches the dashboard.
func TestVisitorHistory(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	g, clock := historyGateway(t, t0)
	ev := "/api/v1/communities/" + community1 + "/visitor-events"
	at := func(d time.Duration, id, action string) {
		t.Helper()
		clock.Set(t0.Add(d))
		if code, m := g.service("POST", ev, visitorEvent(id, true, action)); code != 200 && code != 202 {
			t.Fatalf("%s %s: %d %v", action, id, code, m)
		}
	}
	// Minute 0: 1 visitor for 30 s, then 2. Minute 1: 3 from its start
	// for 30 s, then 2.
	at(0, "alice", "join")
	at(30*time.Second, "bob", "join")
	at(60*time.Second, "carol", "join")
	at(90*time.Second, "alice", "leave")
	clock.Set(t0.Add(150 * time.Second))

	mod := http.Header{"Authorization": {"Bearer " + moderator(t, "mod")}}
	code, _, m := g.get(historyPath(community1, historyQuery("minute", t0, t0.Add(119*time.Second))), mod)
	if code != 200 {
		t.Fatalf("minute history = %d %v", code, m)
	}
	if m.str("community_id") != community1 || m.str("step") != "minute" {
		t.Errorf("answer = %v", m)
	}
	points, _ := m["points"].([]any)
	want := []struct {
		time    string
		peak    int
		average float64
	}{
		{"2026-12-04T10:00:00Z", 2, 1.5},
		{"2026-12-04T10:01:00Z", 3, 2.5},
	}
	if len(points) != len(want) {
		t.Fatalf("minute points = %v; want %d", points, len(want))
	}
	for i, w := range want {
		p := message(points[i].(map[string]any))
		if p.str("time") != w.time || p.num("peak") != w.peak || p["average"].(float64) != w.average {
			t.Errorf("point %d = %v; want %+v", i, p, w)
		}
		if _, ok := p["total_unique_visitors"]; ok {
			t.Errorf("minute point %d has day fields: %v", i, p)
		}
	}

	// The current hour so far: 1×30 + 2×30 + 3×30 + 2×60 over 150 s.
	code, _, m = g.get(historyPath(community1, url.Values{"step": {"hour"}}), mod)
	points, _ = m["points"].([]any)
	// The buckets holding now-24h to now: 25, the first and last partly.
	if code != 200 || len(points) != 25 {
		t.Fatalf("default hour history = %d, %d points; want 200 and 25 (the last day)", code, len(points))
	}
	last := message(points[24].(map[string]any))
	if last.str("time") != "2026-12-04T10:00:00Z" || last.num("peak") != 3 || last["average"].(float64) != 2 {
		t.Errorf("current hour = %v; want peak 3, average 2", last)
	}
	if first := message(points[0].(map[string]any)); first.str("time") != "2026-12-03T10:00:00Z" || first.num("peak") != 0 || first["average"].(float64) != 0 {
		t.Errorf("an hour with nobody = %v; want peak 0, average 0", first)
	}

	day := t0.Truncate(24 * time.Hour)
	code, _, m = g.get(historyPath(community1, historyQuery("day", day, t0.Add(time.Hour))), mod)
	points, _ = m["points"].([]any)
	if code != 200 || len(points) != 1 {
		t.Fatalf("day history = %d %v", code, m)
	}
	d := message(points[0].(map[string]any))
	if d.str("time") != "2026-12-04T00:00:00Z" || d.num("peak") != 3 || d.str("peak_at") != "2026-12-04T10:01:00Z" ||
		d.num("authenticated_visitors") != 3 || d.num("anonymous_visitors") != 0 || d.num("total_unique_visitors") != 3 {
		t.Errorf("day point = %v", d)
	}

	// The same points as CSV.
	req, _ := http.NewRequest("GET", g.ts.URL+historyPath(community1, historyQuery("minute", t0, t0.Add(119*time.Second))), nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, body); err != nil {
		t.Error(err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") || err != nil {
		t.Fatalf("CSV = %d %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	wantRows := [][]string{{"time", "peak", "average"}, {"2026-12-04T10:00:00Z", "2", "1.5"}, {"2026-12-04T10:01:00Z", "3", "2.5"}}
	if len(rows) != len(wantRows) {
		t.Fatalf("CSV rows = %q; want %q", rows, wantRows)
	}
	for i := range rows {
		if strings.Join(rows[i], ",") != strings.Join(wantRows[i], ",") {
			t.Errorf("CSV row %d = %q; want %q", i, rows[i], wantRows[i])
		}
	}

	// Today's peak in the dashboard's figures.
	code, _, m = g.get("/api/v1/communities/"+community1+"/visitor-dashboard", mod)
	pk, _ := m.data()["peak_today"].(map[string]any)
	if code != 200 || message(pk).num("count") != 3 {
		t.Errorf("dashboard = %d %v; want peak_today 3", code, m)
	}
}

// TestVisitorHistoryAccess: moderators, admins and the service API key
// read the history; members, guests and strangers do not.
func TestVisitorHistoryAccess(t *testing.T) {
	g := newGateway(t, func(o *api.Options) { o.PublicCommunities = []string{"*"} })
	path := historyPath(community1, nil)
	for _, c := range []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"moderator", http.Header{"Authorization": {"Bearer " + moderator(t, "m")}}, 200},
		{"API key", http.Header{"Authorization": {"Bearer " + testAPIKey}}, 200},
		{"member", http.Header{"Authorization": {"Bearer " + member(t, "u")}}, 403},
		{"no credential (a guest on a public community)", nil, 401},
		{"wrong key", http.Header{"Authorization": {"Bearer not-the-key-0123456789abcdef0123456789"}}, 401},
	} {
		if code, _, m := g.get(path, c.hdr); code != c.want {
			t.Errorf("%s: %d %v; want %d", c.name, code, m, c.want)
		}
	}
}

// TestVisitorHistoryBadQuery: a bad parameter is a 400 naming it.
func TestVisitorHistoryBadQuery(t *testing.T) {
	g := newGateway(t, nil)
	key := http.Header{"Authorization": {"Bearer " + testAPIKey}}
	now := time.Now().UTC()
	for _, c := range []struct {
		q     url.Values
		field string
	}{
		{url.Values{"step": {"week"}}, "step"},
		{url.Values{"from": {"yesterday"}}, "from"},
		{url.Values{"to": {"2026-13-01T00:00:00Z"}}, "to"},
		{historyQuery("hour", now.Add(-time.Hour), now.Add(-2*time.Hour)), "from"},
		{historyQuery("minute", now.Add(-72*time.Hour), now), "from"},
		{historyQuery("day", now.Add(-500*24*time.Hour), now), "from"},
	} {
		code, _, m := g.get(historyPath(community1, c.q), key)
		if code != 400 || m.str("error") != "invalid_query" || m.str("field") != c.field || m.str("message") == "" {
			t.Errorf("%v: %d %v; want 400 naming %s", c.q, code, m, c.field)
		}
	}
}

// TestVisitorHistoryWholeRetention: a range of exactly a step's retention
// is answered, with the partial buckets at both ends.
func TestVisitorHistoryWholeRetention(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 30, 0, time.UTC)
	g, _ := historyGateway(t, now)
	key := http.Header{"Authorization": {"Bearer " + testAPIKey}}
	for _, c := range []struct {
		step string
		keep time.Duration
		want int
	}{
		{"minute", 48 * time.Hour, 48*60 + 1},
		{"hour", 90 * 24 * time.Hour, 90*24 + 1},
		{"day", 400 * 24 * time.Hour, 401},
	} {
		code, _, m := g.get(historyPath(community1, historyQuery(c.step, now.Add(-c.keep), now)), key)
		points, _ := m["points"].([]any)
		if code != 200 || len(points) != c.want {
			t.Errorf("%s over %s: %d, %d points (%v); want 200 and %d", c.step, c.keep, code, len(points), m["message"], c.want)
		}
	}
}
