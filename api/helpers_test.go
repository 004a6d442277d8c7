package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/openapi/openapitest"
	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/gorilla/websocket"
)

const (
	testSecret = "test-secret-0123456789abcdef0123456"
	testAPIKey = "test-api-key-0123456789abcdef012345"
	community1 = "123e4567-e89b-12d3-a456-426614174000"
	community2 = "aaaaaaaa-0000-0000-0000-000000000002"
)

// gateway is a footfall node on a real listener.
type gateway struct {
	t   testing.TB
	srv *api.Server
	ts  *httptest.Server
	bus streams.Bus // the node's bus (a memory bus unless tweak set another)
	// spec holds every response and message the tests see to the OpenAPI
	// document.
	spec *openapitest.Validator
}

// newGateway starts a node on the memory bus; tweak adjusts its options.
func newGateway(t testing.TB, tweak func(*api.Options)) *gateway {
	t.Helper()
	bus := memory.New(memory.Options{ReapInterval: 50 * time.Millisecond})
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	opts := api.Options{
		Bus: bus, Verifier: v, APIKey: testAPIKey,
		PresenceTTL: 30 * time.Second, DashboardInterval: time.Hour,
		Dev: true, DevSecret: []byte(testSecret),
		// Every test connects from 127.0.0.1: per-IP limits are tested
		// on their own (TestConnectionLimits).
		Limits: api.Limits{ConnRatePerIP: 1e6, MaxConnsPerIP: 1e6},
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv := api.New(opts)
	ts := httptest.NewServer(srv.Handler())
	go srv.Run(context.Background()) // until Shutdown
	t.Cleanup(func() {
		// The node's shutdown order (api/lifecycle.go): the Server, then
		// the HTTP server, then the bus.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
		bus.Close()
	})
	return &gateway{t: t, srv: srv, ts: ts, bus: opts.Bus, spec: openapitest.New(t)}
}

func (g *gateway) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(g.ts.URL, "http") + path
}

func visitorsPath(c string) string  { return "/ws/communities/" + c + "/visitors/" }
func dashboardPath(c string) string { return "/ws/communities/" + c + "/visitor-dashboard/" }

// token mints an HS256 token with the test secret.
func token(t testing.TB, sub string, roles map[string]auth.Role, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	if ttl <= 0 {
		// An already expired token: minted in the past with a TTL of 1s.
		now, ttl = now.Add(ttl-time.Second), time.Second
	}
	tok, _, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: sub, Communities: roles, TTL: ttl}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func member(t testing.TB, sub string) string {
	return token(t, sub, map[string]auth.Role{community1: auth.RoleMember, community2: auth.RoleMember}, time.Hour)
}

func moderator(t testing.TB, sub string) string {
	return token(t, sub, map[string]auth.Role{community1: auth.RoleModerator, community2: auth.RoleModerator}, time.Hour)
}

// wsClient is a real WebSocket client.
type wsClient struct {
	t      testing.TB
	conn   *websocket.Conn
	resp   *http.Response
	spec   *openapitest.Validator
	stream string
}

// dial opens a WebSocket with the token in the bearer subprotocol.
func (g *gateway) dial(path, tok string) *wsClient {
	g.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok}}
	return g.dialWith(path, &d, nil)
}

func (g *gateway) dialWith(path string, d *websocket.Dialer, hdr http.Header) *wsClient {
	g.t.Helper()
	conn, resp, err := d.Dial(g.wsURL(path), hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		g.t.Fatalf("dial %s: %v (HTTP %d)", path, err, status)
	}
	stream := openapitest.StreamVisitors
	if strings.Contains(path, "visitor-dashboard") {
		stream = openapitest.StreamDashboard
	}
	req, _ := http.NewRequest("GET", g.ts.URL+path, nil)
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, nil); err != nil {
		g.t.Errorf("handshake: %v", err)
	}
	c := &wsClient{t: g.t, conn: conn, resp: resp, spec: g.spec, stream: stream}
	g.t.Cleanup(func() { conn.Close() })
	return c
}

// message is a decoded server message.
type message map[string]any

func (m message) str(k string) string { s, _ := m[k].(string); return s }
func (m message) num(k string) int    { f, _ := m[k].(float64); return int(f) }
func (m message) data() message       { d, _ := m["data"].(map[string]any); return d }

// read returns the next message, failing after a few seconds.
func (c *wsClient) read() message {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m message
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("read: %q is not JSON: %v", data, err)
	}
	if err := c.spec.Message(c.stream, data); err != nil {
		c.t.Errorf("message %s does not follow the OpenAPI schemas: %v", data, err)
	}
	return m
}

// readType reads the next message and checks its type.
func (c *wsClient) readType(typ string) message {
	c.t.Helper()
	m := c.read()
	if m.str("type") != typ {
		c.t.Fatalf("next message = %v; want type %q", m, typ)
	}
	return m
}

// readUntil skips messages until one of type typ satisfying ok arrives.
func (c *wsClient) readUntil(typ string, ok func(message) bool) message {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m := c.read()
		if m.str("type") == typ && (ok == nil || ok(m)) {
			return m
		}
	}
	c.t.Fatalf("no %s message within 5s", typ)
	return nil
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) sendRaw(data string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(data)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// expectClose reads until the server closes and checks the close code.
func (c *wsClient) expectClose(code int) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok {
			c.t.Fatalf("connection ended with %v (after %q); want close code %d", err, data, code)
		}
		if ce.Code != code {
			c.t.Fatalf("close code = %d (%q); want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// quiet checks, with a ping round trip, that nothing else is queued: the
// next message must be the pong.
func (c *wsClient) quiet() {
	c.t.Helper()
	c.send(map[string]string{"type": "ping"})
	c.readType("pong")
}

// call makes a service-API request and decodes the JSON answer.
func (g *gateway) call(method, path, key string, body any) (int, message) {
	g.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, g.ts.URL+path, r)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if err := g.spec.Response(req, resp.StatusCode, resp.Header, data); err != nil {
		g.t.Errorf("%v", err)
	}
	var m message
	if len(data) > 0 {
		if err := json.Unmarshal(data, &m); err != nil {
			g.t.Fatalf("%s %s: answer %q is not a JSON object", method, path, data)
		}
	}
	return resp.StatusCode, m
}

func (g *gateway) service(method, path string, body any) (int, message) {
	g.t.Helper()
	return g.call(method, path, testAPIKey, body)
}

func visitorEvent(id string, authenticated bool, action string) map[string]any {
	return map[string]any{"visitor_id": id, "authenticated": authenticated, "action": action}
}
