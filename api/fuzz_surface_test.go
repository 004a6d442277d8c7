package api_test

// Fuzz targets that drive the node's input surfaces through the real
// handler: one gateway per target, made before f.Fuzz and shared by every
// input of a fuzzing process (inputs of one process run one after another).
// Inside the fuzz function only t is used: the gateway's helpers report to
// the *testing.F they were made with, which must not be touched there.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/openapi/openapitest"
	"github.com/footfall/footfall/streams"
	"github.com/gorilla/websocket"
)

// fuzzLimits lifts the per-address and per-connection rate limits: a
// fuzzer sends thousands of requests a second from one address, and what
// it tests is the answer to each input, not the limiter.
var fuzzLimits = api.Limits{
	ConnRatePerIP: 1e9, MaxConnsPerIP: 1 << 30, RequestRatePerIP: 1e9,
	MessageRate: 1e9, MessageBurst: 1 << 30,
}

// fuzzHTTPClient is a client of its own, whose idle connections are closed
// before the gateway shuts down (cleanups run last in, first out).
func fuzzHTTPClient(f *testing.F) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	f.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fuzzAnswer is a complete HTTP answer.
type fuzzAnswer struct {
	status int
	header http.Header
	body   []byte
}

func fuzzDo(t *testing.T, hc *http.Client, req *http.Request) fuzzAnswer {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return fuzzAnswer{status: resp.StatusCode, header: resp.Header, body: body}
}

// checkJSONObject checks that a is a JSON object and returns it.
func checkJSONObject(t *testing.T, what string, a fuzzAnswer) map[string]any {
	t.Helper()
	if mt, _, _ := mime.ParseMediaType(a.header.Get("Content-Type")); mt != "application/json" {
		t.Fatalf("%s = %d with Content-Type %q (%q); want application/json", what, a.status, a.header.Get("Content-Type"), a.body)
	}
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil || m == nil {
		t.Fatalf("%s = %d %q; want a JSON object", what, a.status, a.body)
	}
	return m
}

// checkErrorBody checks the JSON error of a 4xx: an error slug and a
// message, and for a 400 the field at fault.
func checkErrorBody(t *testing.T, what string, a fuzzAnswer) map[string]any {
	t.Helper()
	m := checkJSONObject(t, what, a)
	if s, _ := m["error"].(string); s == "" {
		t.Fatalf("%s = %d %s; want an \"error\" slug", what, a.status, a.body)
	}
	if s, _ := m["message"].(string); s == "" {
		t.Fatalf("%s = %d %s; want a \"message\"", what, a.status, a.body)
	}
	if a.status == http.StatusBadRequest {
		if s, _ := m["field"].(string); s == "" {
			t.Fatalf("%s = 400 %s; want the \"field\" at fault", what, a.body)
		}
	}
	return m
}

// checkAlive checks that the node still answers.
func checkAlive(t *testing.T, hc *http.Client, g *gateway) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, g.ts.URL+"/healthz", nil)
	if a := fuzzDo(t, hc, req); a.status != http.StatusOK {
		t.Fatalf("GET /healthz = %d %q after the input; want 200", a.status, a.body)
	}
}

// validHeaderValue reports whether net/http sends v as a header value: no
// control characters but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// serviceRoutes are the service API's routes; {id} is the community.
var serviceRoutes = []struct{ method, path string }{
	{http.MethodPost, "/api/v1/communities/{id}/visitor-events"},
	{http.MethodPost, "/api/v1/communities/{id}/metrics"},
	{http.MethodPost, "/api/v1/communities/{id}/conversions"},
	{http.MethodPost, "/api/v1/communities/{id}/broadcast"},
	{http.MethodPost, "/api/v1/sessions"},
	{http.MethodDelete, "/api/v1/sessions/"}, // the body is the session id
	{http.MethodGet, "/api/v1/communities/{id}/stats"},
}

// FuzzServiceAPI sends arbitrary bodies (and community ids) to every
// service-API route through the real handler: never a 5xx, every answer
// JSON (but a 204), every 4xx a JSON error naming the field of a 400 (and
// the element of a batch), answers as the OpenAPI document says, and the
// node still answers afterwards.
func FuzzServiceAPI(f *testing.F) {
	const ts = "2025-10-10T14:30:00Z"
	seeds := map[int][]string{
		0: {
			`{"visitor_id":"anon-1","authenticated":false,"action":"join"}`,
			`{"visitor_id":"user-1","authenticated":true,"action":"heartbeat"}`,
			`{"visitor_id":"anon-1","action":"leave"}`,
			`[{"visitor_id":"a","action":"join"},{"visitor_id":"b","action":"leave"}]`,
			`[{"visitor_id":"a","action":"join"},{"visitor_id":5,"action":"join"}]`,
			`[{"visitor_id":"a","action":"join"},[]]`, `[]`, `[null]`, `[`, `{"visitor_id":"a","action":"dance"}`,
			`{"visitor_id":"","action":"join"}`, `{"visitor_id":"a","authenticated":"yes","action":"join"}`,
			`{"visitor_id":"a","action":null}`, ``, ` `, `null`, `{}`, `"x"`, `{"visitor_id":"a\u0000","action":"join"}`,
		},
		1: {
			`{"metric":"conversion_rate","value":14.5}`, `{"metric":"m","value":{"a":[1,2,{"b":null}]}}`,
			`{"metric":"m","value":null}`, `{"metric":"","value":1}`, `{"metric":5,"value":1}`, `{"value":1}`,
			`{"metric":"m","value":1e400}`, `{"metric":"m","value":"\ud800"}`,
		},
		2: {
			`{"session_id":"s-1","converted_at":"2025-10-10T14:30:00.123456"}`, `{"session_id":"s-1"}`,
			`{"session_id":"s-1","converted_at":"2025-10-10T14:30:00+02:00"}`, `{"session_id":"s-1","converted_at":"yesterday"}`,
			`{"session_id":"s-1","converted_at":"0000-01-01T00:00:00Z"}`, `{"session_id":"s-1","converted_at":"9999-12-31T23:59:59-23:59"}`,
			`{"session_id":["s"]}`, `{"session_id":"s","converted_at":5}`,
		},
		3: {
			`{"stream":"visitors","message":{"type":"visitor_count","community_id":"` + community1 + `","count":3,"change":1,"timestamp":"` + ts + `"}}`,
			`{"stream":"visitors","message":{"type":"visitor_joined","community_id":"` + strings.ToUpper(community1) + `","count":3,"timestamp":"` + ts + `"}}`,
			`{"stream":"dashboard","message":{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":2,"total_unique_visitors":3},"realtime_count":1,"community_id":"` + community1 + `"},"timestamp":"` + ts + `"}}`,
			`{"stream":"dashboard","message":{"type":"analytics_update","metric":"m","value":[1],"timestamp":"` + ts + `","extra":{"x":1}}}`,
			`{"stream":"dashboard","message":{"type":"visitor_count","community_id":"` + community1 + `","count":3,"timestamp":"` + ts + `"}}`,
			`{"stream":"visitors","message":{"type":"visitor_count","community_id":"` + community2 + `","count":-1,"timestamp":"` + ts + `"}}`,
			`{"stream":"visitors","message":{"type":"visitor_count","community_id":"` + community1 + `","count":1.5,"timestamp":"2025-13-10T14:30:00Z"}}`,
			`{"stream":"visitors","message":"hello"}`, `{"stream":"everything","message":{}}`, `{"stream":"visitors"}`,
			`{"stream":"dashboard","message":{"type":"analytics_update","metric":"m","timestamp":"` + ts + `"}}`,
			`{"stream":"dashboard","message":{"type":"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}}`,
		},
		4: {
			`{"user_id":"42","communities":{"` + community1 + `":"moderator"},"ttl_seconds":60}`,
			`{"user_id":"42","communities":{"` + strings.ToUpper(community1) + `":"member"},"role":"admin"}`,
			`{"user_id":"42","role":"superuser"}`, `{"user_id":"42","ttl_seconds":0}`, `{"user_id":"42","ttl_seconds":9223372036854775807}`,
			`{"user_id":"42","ttl_seconds":-9223372036854775808}`, `{"user_id":"42","ttl_seconds":2592001}`, `{"user_id":"42","ttl_seconds":1.5}`,
			`{"user_id":"42","communities":{"not an id":"member"}}`, `{"user_id":"42","communities":{"abc":"owner"}}`,
			`{"user_id":"42","communities":["abc"]}`, `{"communities":{}}`,
		},
		5: {"no-such-session", "", "a/b", "..", "%", "\x00"},
		6: {""},
	}
	for route, bodies := range seeds {
		for _, b := range bodies {
			f.Add(uint8(route), "", []byte(b))
		}
	}
	f.Add(uint8(0), strings.ToUpper(community1), []byte(`{"visitor_id":"a","action":"join"}`))
	f.Add(uint8(1), "not-hex", []byte(`{"metric":"m","value":1}`))
	f.Add(uint8(3), strings.Repeat("a", 65), []byte(`{}`))
	f.Add(uint8(6), "../../healthz", []byte(nil))

	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits })
	hc := fuzzHTTPClient(f)
	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		r := serviceRoutes[int(route)%len(serviceRoutes)]
		cid := community1
		if id != "" {
			cid = url.PathEscape(id)
		}
		path := strings.Replace(r.path, "{id}", cid, 1)
		var rd io.Reader
		switch r.method {
		case http.MethodPost:
			rd = bytes.NewReader(body)
		case http.MethodDelete:
			path += url.PathEscape(string(body))
		}
		req, err := http.NewRequest(r.method, g.ts.URL+path, rd)
		if err != nil {
			t.Fatalf("NewRequest(%s %q): %v", r.method, path, err)
		}
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		req.Header.Set("Content-Type", "application/json")
		a := fuzzDo(t, hc, req)
		what := fmt.Sprintf("%s %s with %q", r.method, path, body)
		if a.status >= 500 {
			t.Fatalf("%s = %d %q; want no 5xx", what, a.status, a.body)
		}
		if a.status == http.StatusNoContent {
			if r.method != http.MethodDelete || len(a.body) != 0 {
				t.Fatalf("%s = 204 with %q; want 204 only for a DELETE, without a body", what, a.body)
			}
		} else if a.status >= 400 {
			m := checkErrorBody(t, what, a)
			if index, ok := m["index"]; ok {
				var batch []json.RawMessage
				i, isNum := index.(float64)
				if !isNum || json.Unmarshal(bytes.TrimSpace(body), &batch) != nil || i < 0 || int(i) >= len(batch) || i != float64(int(i)) {
					t.Fatalf("%s = %d %s; an \"index\" must name an element of the batch", what, a.status, a.body)
				}
			}
		} else {
			checkJSONObject(t, what, a)
		}
		// The document is checked where the path is one of its operations;
		// a mangled path may route nowhere in it (and is a 404 above).
		if err := g.spec.Response(req, a.status, a.header, a.body); err != nil && (id == "" && r.method != http.MethodDelete || !strings.Contains(err.Error(), "not an operation")) {
			t.Fatalf("%s: %v", what, err)
		}
		checkAlive(t, hc, g)
	})
}

// wsFuzzConn is a WebSocket kept open across a fuzzing process's inputs.
type wsFuzzConn struct {
	conn   *websocket.Conn
	stream string // openapitest.StreamVisitors or StreamDashboard
	// used is when the connection last answered. A fuzzing process may sit
	// idle between inputs for longer than the node keeps a silent peer
	// (it pings, and nobody reads the pings meanwhile); such a connection
	// is dialed again rather than blamed.
	used time.Time
}

// dialFuzzWS opens a WebSocket and reads its first message.
func dialFuzzWS(tb testing.TB, g *gateway, path, tok, stream string) (*wsFuzzConn, error) {
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(g.wsURL(path), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, fmt.Errorf("dial %s: %v (HTTP %d)", path, err, status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("first message on %s: %v", path, err)
	}
	return &wsFuzzConn{conn: conn, stream: stream, used: time.Now()}, nil
}

// wsFuzzIdle is how long a kept WebSocket may have been idle and still be
// used: well under the node's 60 s for a silent peer.
const wsFuzzIdle = 20 * time.Second

// FuzzWebSocketMessages sends arbitrary frames (text or binary) on open
// visitors and dashboard WebSockets of a real node. Each frame gets its
// answer: an error with the code the decoder gives (one of those
// docs/protocol.md lists), a pong, the count or dashboard, or for an auth
// message auth_ok or an error with code invalid_token, forbidden or
// expired as the token deserves; every message follows the OpenAPI schemas, and the connection
// stays open and answers a ping afterwards. A frame over the frame limit
// closes with 1009, and the next input dials again.
func FuzzWebSocketMessages(f *testing.F) {
	const sub = "ws-fuzzer"
	roles := map[string]auth.Role{community1: auth.RoleModerator}
	same := token(f, sub, roles, time.Hour)
	sameMember := token(f, sub, map[string]auth.Role{community1: auth.RoleMember}, time.Hour)
	other := token(f, "someone-else", roles, time.Hour)
	expired := token(f, sub, roles, -time.Minute)
	elsewhere := token(f, sub, map[string]auth.Role{community2: auth.RoleModerator}, time.Hour)
	for _, s := range []string{
		`{"type":"ping"}`, `{"type":"request_count"}`, `{"type":"auth","token":"` + same + `"}`,
		`{"type":"auth","token":"` + sameMember + `"}`, `{"type":"auth","token":"` + other + `"}`,
		`{"type":"auth","token":"` + expired + `"}`, `{"type":"auth","token":"` + elsewhere + `"}`,
		`{"type":"auth","token":"a.b.c"}`, `{"type":"auth","token":""}`, `{"type":"auth","token":5}`, `{"type":"auth"}`,
		`{"type":5}`, `{"type":null}`, `{"type":"dance"}`, `[]`, `"ping"`, `{`, ``, `null`, "\xff\xfe",
		`{"type":"ping","type":"auth"}`, "{\"type\":\"p\\u0069ng\"}", ` {"type":"request_count"} `,
		`{"type":"ping","pad":"` + strings.Repeat("x", 4100) + `"}`,
	} {
		f.Add([]byte(s), false, false)
		f.Add([]byte(s), false, true)
	}
	f.Add([]byte(`{"type":"ping"}`), true, false)
	f.Add([]byte{0, 1, 2}, true, true)
	f.Add(bytes.Repeat([]byte(" "), api.DefaultLimits.MaxFrameBytes+1), false, false)
	f.Add([]byte(`{"type":"ping"}`), false, false) // after a 1009: dials again

	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits })
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		f.Fatal(err)
	}
	conns := map[bool]*wsFuzzConn{} // by "dashboard"
	f.Cleanup(func() {
		for _, c := range conns {
			c.conn.Close()
		}
	})
	dial := func(tb testing.TB, dashboard bool) *wsFuzzConn {
		tb.Helper()
		if c := conns[dashboard]; c != nil {
			if time.Since(c.used) < wsFuzzIdle {
				return c
			}
			c.conn.Close()
			delete(conns, dashboard)
		}
		path, stream := visitorsPath(community1), openapitest.StreamVisitors
		if dashboard {
			path, stream = dashboardPath(community1), openapitest.StreamDashboard
		}
		c, err := dialFuzzWS(tb, g, path, same, stream)
		if err != nil {
			tb.Fatal(err)
		}
		conns[dashboard] = c
		return c
	}
	// The visitors stream first: the dashboard's own first message then
	// already counts the fuzzer, and neither expects news afterwards.
	dial(f, false)
	dial(f, true)

	f.Fuzz(func(t *testing.T, frame []byte, binary, dashboard bool) {
		c := dial(t, dashboard)
		start := time.Now()
		stream := streams.StreamVisitors
		if dashboard {
			stream = streams.StreamDashboard
		}
		mt := websocket.TextMessage
		if binary {
			mt = websocket.BinaryMessage
		}
		if err := c.conn.WriteMessage(mt, frame); err != nil {
			delete(conns, dashboard)
			c.conn.Close()
			t.Fatalf("send %q: %v; last answer %s before the frame", frame, err, start.Sub(c.used).Round(time.Millisecond))
		}
		if len(frame) > api.DefaultLimits.MaxFrameBytes {
			delete(conns, dashboard)
			defer c.conn.Close()
			_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := c.conn.ReadMessage()
				if err == nil {
					continue
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
					t.Fatalf("a frame of %d bytes ended the connection with %v; want close 1009", len(frame), err)
				}
				return
			}
		}

		// What the frame deserves.
		var wantType, wantCode string
		var okCodes []string
		pongs := 1 // the ping sent after the frame
		typ, tok, code := api.DecodeInboundForTest(frame)
		switch {
		case binary:
			wantType, wantCode = "error", "invalid_message"
		case code != "":
			wantType, wantCode = "error", code
		case typ == "ping":
			wantType = "pong"
			pongs++
		case typ == "request_count":
			wantType = "visitor_count"
			if dashboard {
				wantType = "dashboard_update"
			}
		case typ == "auth":
			ident, err := v.Verify(tok)
			var ae *auth.Error
			switch {
			case errors.As(err, &ae) && ae.Code == auth.CodeExpired:
				wantType, wantCode = "error", "expired"
			case err != nil:
				wantType, wantCode = "error", "invalid_token"
			case ident.Subject != sub || !ident.Allows(community1, stream):
				wantType, wantCode = "error", "forbidden"
			default:
				wantType = "auth_ok"
			}
		default:
			t.Fatalf("decoder gave type %q for %q", typ, frame)
		}
		switch wantCode {
		case "", "invalid_json", "invalid_message", "unknown_type", "message_too_large", "invalid_token", "forbidden", "expired":
		default:
			t.Fatalf("the decoder answers %q with code %q, which docs/protocol.md does not list", frame, wantCode)
		}
		okCodes = append(okCodes, wantCode)

		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
			delete(conns, dashboard)
			c.conn.Close()
			t.Fatalf("send ping after %q: %v", frame, err)
		}
		var got []string
		seen := false
		for pongs > 0 {
			_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := c.conn.ReadMessage()
			if err != nil {
				delete(conns, dashboard)
				c.conn.Close()
				t.Fatalf("after %q (binary %v) the connection gave %v; messages so far %q; last answer %s before the frame", frame, binary, err, got, start.Sub(c.used).Round(time.Millisecond))
			}
			got = append(got, string(data))
			if err := g.spec.Message(c.stream, data); err != nil {
				t.Fatalf("after %q: message %s does not follow the OpenAPI schemas: %v", frame, data, err)
			}
			var m struct {
				Type, Code string
			}
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("after %q: message %q is not JSON", frame, data)
			}
			switch m.Type {
			case "pong":
				pongs--
				if wantType == "pong" {
					seen = true
				}
			case "error":
				if seen || wantType != "error" || m.Code != wantCode {
					t.Fatalf("after %q (binary %v): got %s; want one %s %q", frame, binary, data, wantType, okCodes)
				}
				seen = true
			case "auth_ok":
				if seen || wantType != "auth_ok" {
					t.Fatalf("after %q: got %s; want %s %q", frame, data, wantType, wantCode)
				}
				seen = true
			case wantType:
				seen = true
			}
		}
		if !seen {
			t.Fatalf("after %q (binary %v): messages %q; want a %s %s", frame, binary, got, wantType, wantCode)
		}
		c.used = time.Now()
	})
}

// sseFirstEvent reads an event stream up to its first event with data
// (comments and a lone retry: are skipped).
func sseFirstEvent(t *testing.T, body io.Reader) sseEvent {
	t.Helper()
	br := bufio.NewReader(body)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended or stalled before its first event: %v (event so far %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev.Data != "" {
				return ev
			}
			ev = sseEvent{}
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
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

// FuzzSSEResume opens visitors event streams of a real node with arbitrary
// Last-Event-ID headers and ?last_event_id= values: always 200, and the
// first event is what the history says: the first missed event when the id
// is in it (nothing when nothing was missed), else a fresh snapshot. An id
// over 128 bytes is unknown, and a gap longer than a replay takes gets a
// snapshot too.
func FuzzSSEResume(f *testing.F) {
	const sub = "sse-fuzzer"
	// The fuzzer's visitor is present through the service API for the
	// whole run, so its streams join and leave nobody: the history holds
	// what the setup published and nothing else.
	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits; o.PresenceTTL = 24 * time.Hour })
	hc := fuzzHTTPClient(f)
	tok := member(f, sub)
	if code, m := g.service("POST", "/api/v1/communities/"+community1+"/visitor-events", visitorEvent(sub, true, "join")); code != http.StatusOK {
		f.Fatalf("join = %d %v", code, m)
	}
	var ids []string
	for i := range api.SSEMaxReplay + 8 {
		code, m := g.service("POST", "/api/v1/communities/"+community1+"/broadcast", map[string]any{
			"stream": "visitors",
			"message": map[string]any{"type": "visitor_count", "community_id": community1, "count": 1000 + i,
				"timestamp": "2025-10-10T14:30:00Z", "fuzz_seq": i},
		})
		if code != http.StatusAccepted {
			f.Fatalf("broadcast = %d %v", code, m)
		}
		ids = append(ids, m.str("event_id"))
	}
	epoch, _, _ := strings.Cut(ids[0], "-")
	last := ids[len(ids)-1]
	for _, id := range []string{ids[0], ids[7], ids[8], ids[9], ids[len(ids)/2], last, epoch + "-0", epoch + "-1",
		epoch + "-99999", epoch + "-", epoch + "-+5", epoch + "-0x10", epoch + "-18446744073709551616", "-1", "0",
		" " + last + " ", strings.ToUpper(last), last + strings.Repeat("0", 128-len(last)), last + strings.Repeat("0", 129-len(last)),
		strings.Repeat("9", 129), "", "\xff\xfe", "a\tb"} {
		f.Add(id, "")
		f.Add("", id)
	}
	f.Add(last, ids[0])
	f.Add("  ", last)
	f.Add("garbage", last)

	f.Fuzz(func(t *testing.T, header, query string) {
		if !validHeaderValue(header) {
			return // net/http does not send it
		}
		id := textproto.TrimString(header) // as the server reads a header
		if id == "" {
			id = query
		}
		path := ssePath(community1)
		if query != "" {
			path += "?last_event_id=" + url.QueryEscape(query)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if header != "" {
			req.Header.Set("Last-Event-ID", header)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Last-Event-ID %q): %v", path, header, err)
		}
		defer resp.Body.Close()
		what := fmt.Sprintf("GET %s with Last-Event-ID %q", path, header)
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s = %d %q; want 200", what, resp.StatusCode, b)
		}
		if err := g.spec.Response(req, resp.StatusCode, resp.Header, nil); err != nil {
			t.Fatalf("%s: %v", what, err)
		}

		var missed []streams.Event
		resumed := false
		if id != "" && len(id) <= 128 {
			missed, resumed, err = g.bus.History(context.Background(), community1, id, api.SSEMaxReplay)
			if err != nil {
				t.Fatalf("History(%q): %v", id, err)
			}
		}
		if resumed && len(missed) == 0 {
			return // up to date: nothing to send until something happens
		}
		ev := sseFirstEvent(t, resp.Body)
		if err := g.spec.Broadcast(openapitest.StreamVisitors, []byte(ev.Data)); err != nil {
			t.Fatalf("%s: first event %+v does not follow the OpenAPI schemas: %v", what, ev, err)
		}
		var m struct {
			Type        string          `json:"type"`
			CommunityID string          `json:"community_id"`
			FuzzSeq     json.RawMessage `json:"fuzz_seq"`
			Change      json.RawMessage `json:"change"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &m); err != nil || m.Type != ev.Event || ev.ID == "" {
			t.Fatalf("%s: first event %+v; want an event named by its JSON type, with an id", what, ev)
		}
		if resumed {
			if ev.ID != missed[0].ID {
				t.Fatalf("%s: first event %+v; want the first missed event %s of %d", what, ev, missed[0].ID, len(missed))
			}
			return
		}
		if m.Type != "visitor_count" || m.FuzzSeq != nil || m.Change != nil || m.CommunityID != community1 {
			t.Fatalf("%s: first event %+v; want a fresh snapshot (the id is unknown)", what, ev)
		}
	})
}

// cookieRoutes are the routes whose answers a Cookie header can change.
var cookieRoutes = []struct {
	path   string
	sse    bool
	guests bool // admits guests on a public community
}{
	{"/api/v1/communities/" + community1 + "/visitors/count", false, true},
	{"/api/v1/communities/" + community1 + "/visitor-dashboard", false, false},
	{"/sse/communities/" + community1 + "/visitors/", true, true},
	{"/sse/communities/" + community1 + "/visitor-dashboard/", true, false},
}

// FuzzCookies sends arbitrary Cookie headers (footfall_session, the guest
// cookie footfall_vid, and anything else) to the REST snapshots and event
// streams of a node whose communities are all public: 200, 401 or 403,
// never a 5xx; JSON answers (or an event stream); a footfall_vid is only
// ever set on a 200 of a route that admits guests, at most 64 characters,
// never a value taken from the request, never when the request carries a
// valid one, and with the attributes docs/protocol.md gives it; and the
// value set is accepted as that guest's from then on.
func FuzzCookies(f *testing.F) {
	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits; o.PublicCommunities = []string{"*"} })
	hc := fuzzHTTPClient(f)
	session := func(role string) string {
		code, m := g.service("POST", "/api/v1/sessions", map[string]any{"user_id": "cookie-fuzzer", "communities": map[string]string{community1: role}})
		if code != http.StatusCreated {
			f.Fatalf("create session = %d %v", code, m)
		}
		return m.str("session_id")
	}
	live, memberSession, revoked := session("moderator"), session("member"), session("member")
	if code, m := g.service("DELETE", "/api/v1/sessions/"+revoked, nil); code != http.StatusNoContent {
		f.Fatalf("revoke = %d %v", code, m)
	}
	resp, err := hc.Get(g.ts.URL + cookieRoutes[0].path)
	if err != nil {
		f.Fatal(err)
	}
	resp.Body.Close()
	issued := guestCookie(resp.Header)
	if issued == nil {
		f.Fatalf("a guest's first count poll set no %s", api.GuestCookie)
	}
	vid := issued.Value
	for route := range cookieRoutes {
		for _, c := range []string{
			"", auth.SessionCookie + "=" + live, auth.SessionCookie + "=" + memberSession, auth.SessionCookie + "=" + revoked,
			auth.SessionCookie + "=never-existed", auth.SessionCookie + "=", api.GuestCookie + "=" + vid,
			api.GuestCookie + "=" + vid[:len(vid)-1] + "A", api.GuestCookie + "=" + strings.ToUpper(vid),
			api.GuestCookie + "=\"" + vid + "\"", api.GuestCookie + "=" + vid + "; " + auth.SessionCookie + "=" + live,
			api.GuestCookie + "=bogus; " + api.GuestCookie + "=" + vid, api.GuestCookie + "=" + strings.Repeat("a", 20) + "." + strings.Repeat("b", 22),
			api.GuestCookie + "=" + strings.Repeat("x", 5000), "sessionid=abc; csrftoken=def", "footfall_vid", ";;;=;=", "a=b;footfall_vid=.",
			auth.SessionCookie + "=" + live + "; " + auth.SessionCookie + "=" + revoked, api.GuestCookie + "=" + vid + "\t",
		} {
			f.Add(uint8(route), c)
		}
	}

	f.Fuzz(func(t *testing.T, route uint8, cookie string) {
		if !validHeaderValue(cookie) {
			return // net/http does not send it
		}
		rt := cookieRoutes[int(route)%len(cookieRoutes)]
		what := fmt.Sprintf("GET %s with Cookie %q", rt.path, cookie)
		a := getWithCookie(t, hc, g, rt.path, rt.sse, cookie)
		switch a.status {
		case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
		default:
			t.Fatalf("%s = %d %q; want 200, 401 or 403", what, a.status, a.body)
		}
		if a.status != http.StatusOK {
			checkErrorBody(t, what, a)
		} else if !rt.sse {
			checkJSONObject(t, what, a)
		}
		var req *http.Request
		req, _ = http.NewRequest(http.MethodGet, g.ts.URL+rt.path, nil)
		if err := g.spec.Response(req, a.status, a.header, a.body); err != nil {
			t.Fatalf("%s: %v", what, err)
		}

		sent := (&http.Request{Header: http.Header{"Cookie": {cookie}}}).Cookies()
		carriesValid := false
		for _, c := range sent {
			if c.Name == api.GuestCookie && c.Value == vid {
				carriesValid = true
			}
		}
		set := (&http.Response{Header: a.header}).Cookies()
		if len(set) != len(a.header.Values("Set-Cookie")) {
			t.Fatalf("%s: Set-Cookie %q does not parse", what, a.header.Values("Set-Cookie"))
		}
		for _, c := range set {
			switch {
			case c.Name != api.GuestCookie:
				t.Fatalf("%s: sets cookie %q; want only %s", what, c.Name, api.GuestCookie)
			case a.status != http.StatusOK || !rt.guests:
				t.Fatalf("%s = %d: sets %s on a route or answer that admits no guest", what, a.status, c.Name)
			case carriesValid:
				t.Fatalf("%s: sets %s although the request carries a valid one", what, c.Name)
			case c.Value == "" || len(c.Value) > 64:
				t.Fatalf("%s: sets %s=%q; want 1 to 64 characters", what, c.Name, c.Value)
			case strings.Contains(cookie, c.Value):
				t.Fatalf("%s: sets %s=%q, taken from the request", what, c.Name, c.Value)
			case c.Path != "/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 86400:
				t.Fatalf("%s: Set-Cookie %q; want Path=/, HttpOnly, SameSite=Lax, Max-Age=86400", what, a.header.Values("Set-Cookie"))
			}
			// The value set names this guest from now on.
			again := getWithCookie(t, hc, g, cookieRoutes[0].path, false, api.GuestCookie+"="+c.Value)
			if again.status != http.StatusOK || again.header.Get("Set-Cookie") != "" {
				t.Fatalf("%s: the issued %s=%s is answered %d with Set-Cookie %q; want 200 and none", what, c.Name, c.Value, again.status, again.header.Values("Set-Cookie"))
			}
		}
		if len(set) > 1 {
			t.Fatalf("%s: Set-Cookie %q; want at most one", what, a.header.Values("Set-Cookie"))
		}
	})
}

// getWithCookie makes a GET with the given Cookie header. An event
// stream's body is not read: it is closed once the answer has begun.
func getWithCookie(t *testing.T, hc *http.Client, g *gateway, path string, sse bool, cookie string) fuzzAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.ts.URL+path, nil)
	if cookie != "" {
		req.Header["Cookie"] = []string{cookie}
	}
	if !sse {
		return fuzzDo(t, hc, req)
	}
	return getStream(t, hc, req)
}
