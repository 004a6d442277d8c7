package api_test

import (
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
	"github.com/footfall/footfall/streams"
	"github.com/gorilla/websocket"
)

// credentialRoutes are the snapshots and event streams of community1.
var credentialRoutes = []struct {
	path   string
	stream streams.Stream
	sse    bool
}{
	{"/api/v1/communities/" + community1 + "/visitors/count", streams.StreamVisitors, false},
	{"/api/v1/communities/" + community1 + "/visitor-dashboard", streams.StreamDashboard, false},
	{"/sse/communities/" + community1 + "/visitors/", streams.StreamVisitors, true},
	{"/sse/communities/" + community1 + "/visitor-dashboard/", streams.StreamDashboard, true},
}

// FuzzStreamCredentials sends arbitrary Authorization headers and ?token=
// values to the REST snapshots and event streams of a real node (no guests,
// no hook): the answer is exactly what the credential deserves (200, or
// 401/403 with the JSON error and close code 4001 to 4004 of that outcome),
// never a 5xx, as the OpenAPI document says.
func FuzzStreamCredentials(f *testing.F) {
	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits })
	hc := fuzzHTTPClient(f)
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		f.Fatal(err)
	}
	tokens := []string{
		member(f, "cred-fuzzer"), moderator(f, "cred-fuzzer"), token(f, "cred-fuzzer", nil, time.Hour),
		token(f, "cred-fuzzer", map[string]auth.Role{community1: auth.RoleMember}, -time.Minute),
		"a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
	}
	for route := range credentialRoutes {
		for _, tok := range tokens {
			f.Add(uint8(route), "Bearer "+tok, "")
			f.Add(uint8(route), "", tok)
		}
		for _, s := range [][2]string{
			{"", ""}, {"Basic dXNlcjpwYXNz", ""}, {"Bearer", ""}, {"bearer  " + tokens[0] + "  ", ""}, {"Bearer a b", ""},
			{" ", tokens[1]}, {"Bearer " + tokens[3], tokens[0]}, {"", "%zz"}, {"", strings.Repeat("a", 9000)},
		} {
			f.Add(uint8(route), s[0], s[1])
		}
	}

	f.Fuzz(func(t *testing.T, route uint8, authz, query string) {
		if !validHeaderValue(authz) {
			return // net/http does not send it
		}
		rt := credentialRoutes[int(route)%len(credentialRoutes)]
		path := rt.path
		if query != "" {
			path += "?token=" + url.QueryEscape(query)
		}

		// What the credential deserves, decided on the request as the node
		// reads it (header values arrive trimmed).
		local, _ := http.NewRequest(http.MethodGet, g.ts.URL+path, nil)
		if authz != "" {
			local.Header.Set("Authorization", textproto.TrimString(authz))
		}
		cred := auth.Extract(local)
		wantStatus, wantCode := http.StatusOK, 0
		if cred.Source == auth.SourceNone {
			wantStatus, wantCode = http.StatusUnauthorized, int(auth.CodeMissing)
		} else if _, err := v.Authorize(context.Background(), cred, g.bus, community1, rt.stream); err != nil {
			var ae *auth.Error
			if !errors.As(err, &ae) {
				t.Fatalf("Authorize(%+v) = %v; want an *auth.Error", cred, err)
			}
			wantStatus, wantCode = http.StatusUnauthorized, int(ae.Code)
			if ae.Code == auth.CodeForbidden {
				wantStatus = http.StatusForbidden
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.ts.URL+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		var a fuzzAnswer
		if rt.sse {
			a = getStream(t, hc, req)
		} else {
			a = fuzzDo(t, hc, req)
		}
		what := fmt.Sprintf("GET %s with Authorization %q", path, authz)
		if a.status != wantStatus {
			t.Fatalf("%s = %d %q; want %d (code %d)", what, a.status, a.body, wantStatus, wantCode)
		}
		if a.status != http.StatusOK {
			m := checkErrorBody(t, what, a)
			if code, _ := m["code"].(float64); int(code) != wantCode {
				t.Fatalf("%s = %d %s; want code %d", what, a.status, a.body, wantCode)
			}
		} else if !rt.sse {
			checkJSONObject(t, what, a)
		}
		check, _ := http.NewRequest(http.MethodGet, g.ts.URL+rt.path, nil)
		if err := g.spec.Response(check, a.status, a.header, a.body); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	})
}

// getStream makes req to an event stream: the body of a refusal is read,
// an open stream's is not (it is closed once the answer has begun).
func getStream(t *testing.T, hc *http.Client, req *http.Request) fuzzAnswer {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL.Path, err)
	}
	defer resp.Body.Close()
	a := fuzzAnswer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		a.body, _ = io.ReadAll(resp.Body)
	} else if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		t.Fatalf("GET %s = 200 with Content-Type %q; want an event stream", req.URL.Path, resp.Header.Get("Content-Type"))
	}
	return a
}

// FuzzWebSocketCredentials opens WebSockets on a real node (no guests, no
// hook) with arbitrary Sec-WebSocket-Protocol offers and Cookie headers
// (footfall_session among them): the upgrade is accepted, the server
// selects the subprotocol that carried the credential and nothing else,
// and then the stream either begins (its first message) or is closed with
// exactly the close code 4001 to 4004 the credential deserves.
func FuzzWebSocketCredentials(f *testing.F) {
	g := newGateway(f, func(o *api.Options) { o.Limits = fuzzLimits })
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		f.Fatal(err)
	}
	session := func(role string) string {
		code, m := g.service("POST", "/api/v1/sessions", map[string]any{"user_id": "ws-cred-fuzzer", "communities": map[string]string{community1: role}})
		if code != http.StatusCreated {
			f.Fatalf("create session = %d %v", code, m)
		}
		return m.str("session_id")
	}
	live, revoked := session("moderator"), session("member")
	if code, m := g.service("DELETE", "/api/v1/sessions/"+revoked, nil); code != http.StatusNoContent {
		f.Fatalf("revoke = %d %v", code, m)
	}
	tok, mod := member(f, "ws-cred-fuzzer"), moderator(f, "ws-cred-fuzzer")
	expired := token(f, "ws-cred-fuzzer", map[string]auth.Role{community1: auth.RoleModerator}, -time.Minute)
	for _, dashboard := range []bool{false, true} {
		for _, s := range [][2]string{
			{"bearer, " + tok, ""}, {"bearer, " + mod, ""}, {"Authorization, Bearer " + mod, ""}, {"BEARER," + tok, ""},
			{"bearer", ""}, {"chat, bearer, a.b.c", ""}, {"bearer, " + expired, ""}, {"bearer, " + expired, auth.SessionCookie + "=" + live},
			{"", auth.SessionCookie + "=" + live}, {"", auth.SessionCookie + "=" + revoked}, {"", auth.SessionCookie + "=nope"},
			{"Authorization, Basic eA==", ""}, {"authorization, bearer  " + tok, ""}, {",,bearer,,", ""}, {"", ""},
			{"x, y", "sessionid=abc"}, {"bearer, " + tok + ", bearer, " + mod, ""},
		} {
			f.Add(dashboard, s[0], s[1])
		}
	}

	f.Fuzz(func(t *testing.T, dashboard bool, protos, cookie string) {
		if !validHeaderValue(protos) || !validHeaderValue(cookie) {
			return // net/http does not send them
		}
		path, stream, first := visitorsPath(community1), streams.StreamVisitors, "visitor_count"
		if dashboard {
			path, stream, first = dashboardPath(community1), streams.StreamDashboard, "dashboard_update"
		}

		// What the credential deserves, decided on the request as the node
		// reads it (header values arrive trimmed).
		local, _ := http.NewRequest(http.MethodGet, g.ts.URL+path, nil)
		hdr := http.Header{}
		var offer []string
		if protos != "" {
			offer = []string{protos}
			local.Header.Set("Sec-WebSocket-Protocol", textproto.TrimString(protos))
		}
		if cookie != "" {
			hdr.Set("Cookie", cookie)
			local.Header.Set("Cookie", textproto.TrimString(cookie))
		}
		cred := auth.Extract(local)
		wantCode := 0
		if cred.Source == auth.SourceNone {
			wantCode = int(auth.CodeMissing)
		} else if _, err := v.Authorize(context.Background(), cred, g.bus, community1, stream); err != nil {
			var ae *auth.Error
			if !errors.As(err, &ae) {
				t.Fatalf("Authorize(%+v) = %v; want an *auth.Error", cred, err)
			}
			wantCode = int(ae.Code)
		}

		what := fmt.Sprintf("WebSocket %s offering %q with Cookie %q", path, protos, cookie)
		d := websocket.Dialer{Subprotocols: offer, HandshakeTimeout: 5 * time.Second}
		conn, resp, err := d.Dial(g.wsURL(path), hdr)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("%s: %v (HTTP %d); want the upgrade", what, err, status)
		}
		defer conn.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != cred.Subprotocol {
			t.Fatalf("%s: the server selected subprotocol %q; want %q", what, got, cred.Subprotocol)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := conn.ReadMessage()
		if wantCode == 0 {
			if err != nil {
				t.Fatalf("%s: %v; want the stream's first message", what, err)
			}
			var m struct{ Type string }
			if json.Unmarshal(data, &m) != nil || m.Type != first {
				t.Fatalf("%s: first message %q; want %s", what, data, first)
			}
			return
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != wantCode {
			t.Fatalf("%s: got %q, %v; want close code %d", what, data, err, wantCode)
		}
	})
}
