package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
)

// waitParked waits until the node has open SSE connections, all of them
// parked, and returns the sessions started so far.
func waitParked(t *testing.T, g *gateway, open int) int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, p, started := g.srv.SSESessionsForTest()
		if o == open && p == open {
			return started
		}
		if time.Now().After(deadline) {
			t.Fatalf("SSE connections: %d open, %d parked; want %d, all parked", o, p, open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSSEParksIdleStreams: an idle SSE connection gives up its r3labs
// session and keeps its connection; what comes later (presence changes,
// broadcasts, a burst of them, heartbeats) arrives on the same response, in
// order, with its ids; a client that leaves while parked is noticed at once,
// by the node's hangup watcher or, without one, by a reader goroutine.
func TestSSEParksIdleStreams(t *testing.T) {
	t.Parallel()
	t.Run("hangup watcher", func(t *testing.T) { testSSEParks(t, false) })
	t.Run("reader goroutines", func(t *testing.T) { testSSEParks(t, true) })
}

func testSSEParks(t *testing.T, readers bool) {
	g := newGateway(t, func(o *api.Options) {
		o.SSEHeartbeat = 400 * time.Millisecond
		o.Timings.SSELinger = 150 * time.Millisecond
	})
	if readers {
		g.srv.DropHangupWatcherForTest()
	}

	v := g.openSSE(ssePath(community1)+"?token="+member(t, "alice"), nil, http.StatusOK)
	first, m := v.nextType("visitor_count")
	if m.num("count") != 1 || first.Retry == "" {
		t.Fatalf("first event = %+v; want count 1 with a retry hint", first)
	}
	d := g.openSSE(sseDashboardPath(community1)+"?token="+moderator(t, "mod"), nil, http.StatusOK)
	d.broadcasts = true
	d.nextType("dashboard_update")
	started := waitParked(t, g, 2)

	// A presence change reaches a parked visitors stream.
	w := g.dial(visitorsPath(community1), member(t, "bob"))
	w.readType("visitor_count")
	joined, m := v.nextType("visitor_joined")
	if m.num("count") != 2 || joined.ID == "" || joined.ID == first.ID {
		t.Fatalf("visitor_joined = %+v; want count 2 with a new id", joined)
	}
	if joined.Retry != "" {
		t.Errorf("a later session repeated the retry hint: %+v", joined)
	}

	// A burst of broadcasts to a parked dashboard: all of them, in order,
	// each with its own id.
	waitParked(t, g, 2)
	const burst = 40
	for i := range burst {
		if code, _ := g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": fmt.Sprintf("m%d", i), "value": i}); code != http.StatusAccepted {
			t.Fatalf("metric %d = %d", i, code)
		}
	}
	seen, ids := 0, map[string]bool{}
	for seen < burst {
		ev := d.next()
		m := ev.msg(t)
		if m.str("type") != "analytics_update" {
			continue
		}
		if want := fmt.Sprintf("m%d", seen); m.str("metric") != want {
			t.Fatalf("broadcast %d = %v; want metric %s", seen, m, want)
		}
		if ev.ID == "" || ids[ev.ID] {
			t.Fatalf("broadcast %+v has no id of its own", ev)
		}
		ids[ev.ID] = true
		seen++
	}

	// Heartbeats keep coming while the connections park between them.
	after := waitParked(t, g, 2)
	if after <= started {
		t.Fatalf("sessions started: %d, then %d; want new sessions for the later messages", started, after)
	}
	beats := 0
	for deadline := time.After(3 * time.Second); beats < 3; {
		select {
		case e, ok := <-v.events:
			if !ok {
				t.Fatal("the visitors stream ended")
			}
			if e.Comment == "heartbeat" {
				beats++
			}
		case <-deadline:
			t.Fatalf("%d heartbeats in 3 s; want 3 (every 400 ms)", beats)
		}
	}

	// Alice leaves while parked: the node notices at once.
	waitParked(t, g, 2)
	v.close()
	if m := w.readTypeWithin("visitor_left", 2*time.Second); m.num("count") != 1 {
		t.Fatalf("after alice left: %v; want visitor_left with count 1", m)
	}
	waitParked(t, g, 1)
}

// TestSSEParkedWireFormat reads a parked-and-resumed stream off the raw
// connection: one status line and one set of headers, then well-formed
// chunks, whatever number of sessions wrote them.
func TestSSEParkedWireFormat(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *api.Options) { o.Timings.SSELinger = 100 * time.Millisecond })
	u, _ := url.Parse(g.ts.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s?token=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", sseDashboardPath(community1), moderator(t, "mod"), u.Host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
	}
	body := bufio.NewReader(resp.Body) // de-chunks: a malformed chunk is an error
	readEvent := func() string {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ev strings.Builder
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v (so far %q)", err, ev.String())
			}
			if line == "\n" {
				return ev.String()
			}
			ev.WriteString(line)
		}
	}
	var events []string
	events = append(events, readEvent()) // the dashboard's snapshot
	for i := range 3 {
		waitParked(t, g, 1)
		g.service("POST", "/api/v1/communities/"+community1+"/metrics", map[string]any{"metric": fmt.Sprintf("w%d", i), "value": i})
		events = append(events, readEvent())
	}
	for i, ev := range events {
		if strings.Contains(ev, "HTTP/1.1") || strings.Contains(ev, "Content-Type") {
			t.Fatalf("event %d carries a header block: %q", i, ev)
		}
		if !strings.Contains(ev, "\ndata: {") || !strings.HasPrefix(ev, "id: ") {
			t.Fatalf("event %d = %q; want id: and data: lines", i, ev)
		}
		if i > 0 && !strings.Contains(ev, fmt.Sprintf(`"metric":"w%d"`, i-1)) {
			t.Fatalf("event %d = %q; want metric w%d", i, ev, i-1)
		}
	}
	// The client goes; the node ends the parked connection.
	waitParked(t, g, 1)
	conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	for g.srv.OpenClients() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the parked connection was not ended after its client went")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
}

// TestSSEParkedEndings: a parked stream still gets its last word: event:
// error when its token expires, and the shutdown event when the node stops.
func TestSSEParkedEndings(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *api.Options) { o.Timings.SSELinger = 100 * time.Millisecond })
	e := g.openSSE(ssePath(community1)+"?token="+token(t, "u", map[string]auth.Role{community1: auth.RoleMember}, 1500*time.Millisecond), nil, http.StatusOK)
	e.nextType("visitor_count")
	s := g.openSSE(ssePath(community1)+"?token="+member(t, "bob"), nil, http.StatusOK)
	s.nextType("visitor_count")
	waitParked(t, g, 2)
	rest := e.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "error" || !strings.Contains(rest[len(rest)-1].Data, `"code":"expired"`) {
		t.Fatalf("parked stream ended with %+v; want event: error with code expired", rest)
	}
	waitParked(t, g, 1)
	g.srv.Drain()
	rest = s.ended()
	if len(rest) == 0 || rest[len(rest)-1].Event != "shutdown" || rest[len(rest)-1].Retry == "" {
		t.Fatalf("parked stream ended with %+v; want a shutdown event with a retry hint", rest)
	}
}
