package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/footfall/footfall/api"
)

// fuzzHook is an auth hook that gives whatever answer the current input
// says and records what it was asked.
type fuzzHook struct {
	mu     sync.Mutex
	status int
	body   []byte
	calls  int
	req    map[string]any
	authz  string
}

func (h *fuzzHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.calls++
	h.req = nil
	_ = json.Unmarshal(data, &h.req)
	h.authz = r.Header.Get("Authorization")
	status, body := h.status, h.body
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// hookRoutes are the requests the hook decides: the count of a public and
// of a private community, a dashboard, and a public event stream.
var hookRoutes = []struct {
	path, community, stream, transport string
	public, sse                        bool
}{
	{"/api/v1/communities/" + community1 + "/visitors/count", community1, "visitors", "rest", true, false},
	{"/api/v1/communities/" + community2 + "/visitors/count", community2, "visitors", "rest", false, false},
	{"/api/v1/communities/" + community1 + "/visitor-dashboard", community1, "dashboard", "rest", true, false},
	{"/sse/communities/" + community1 + "/visitors/", community1, "visitors", "sse", true, true},
}

// validHookAnswer reports whether body is an answer the hook may give with
// a 200: the visitor (a non-empty sub of at most 256 bytes without NUL),
// its role, and optionally anonymous and ttl_seconds (1 to 3600).
func validHookAnswer(body []byte) (role string, anon, ok bool) {
	var a struct {
		Sub        *string `json:"sub"`
		Role       string  `json:"role"`
		Anonymous  bool    `json:"anonymous"`
		TTLSeconds *int    `json:"ttl_seconds"`
	}
	if json.Unmarshal(body, &a) != nil || a.Sub == nil || *a.Sub == "" || len(*a.Sub) > 256 || strings.IndexByte(*a.Sub, 0) >= 0 {
		return "", false, false
	}
	switch a.Role {
	case "member", "moderator", "admin":
	default:
		return "", false, false
	}
	if a.TTLSeconds != nil && (*a.TTLSeconds < 1 || *a.TTLSeconds > 3600) {
		return "", false, false
	}
	return a.Role, a.Anonymous, true
}

// FuzzAuthHookAnswers lets the platform's auth hook answer any status and
// body, for requests that carry only the platform's cookies, through the
// real handler: the hook is asked once (each input has cookies of its own,
// so no verdict is cached), with the API key, the community, the stream,
// the transport, the client's address and the cookies without footfall's
// own; 401 makes a guest on a public community and 401 elsewhere, 403 is
// 403, a usable 200 admits the visitor with its role (a dashboard only to
// a moderator or admin who is not anonymous: else 403), and anything else
// is 503 auth_hook_unavailable, never a guest; answers are JSON (or an
// event stream) as the OpenAPI document says, and nothing else is a 5xx.
func FuzzAuthHookAnswers(f *testing.F) {
	for route := range hookRoutes {
		for _, a := range []struct {
			status int
			body   string
		}{
			{200, `{"sub":"42","role":"member","anonymous":false,"ttl_seconds":300}`},
			{200, `{"sub":"42","role":"moderator"}`}, {200, `{"sub":"42","role":"admin","anonymous":true,"ttl_seconds":1}`},
			{200, `{"sub":"42","role":"admin","anonymous":false,"ttl_seconds":3600}`},
			{200, `{"sub":"42","role":"owner"}`}, {200, `{"role":"member"}`}, {200, `{"sub":"","role":"member"}`},
			{200, `{"sub":42,"role":"member"}`}, {200, `{"sub":"42","role":"member","ttl_seconds":0}`},
			{200, `{"sub":"42","role":"member","ttl_seconds":3601}`}, {200, `{"sub":"42","role":"member","ttl_seconds":1.5}`},
			{200, `{"sub":"42","role":"member","anonymous":"yes"}`}, {200, `{"sub":"a\u0000b","role":"member"}`},
			{200, `{"sub":"42","role":"member"} trailing`}, {200, `{"SUB":"42","Role":"member"}`}, {200, `[]`}, {200, `null`}, {200, ``},
			{200, "{\"sub\":\"" + strings.Repeat("x", 257) + "\",\"role\":\"member\"}"},
			{401, ``}, {401, `{"sub":"42","role":"admin"}`}, {403, ``}, {500, ``}, {503, `{"sub":"42","role":"member"}`},
			{204, ``}, {302, ``}, {404, `not found`}, {201, `{"sub":"42","role":"member"}`}, {599, ``},
		} {
			f.Add(uint8(route), uint16(a.status-200), []byte(a.body))
		}
	}

	hook := &fuzzHook{}
	hs := httptest.NewServer(hook)
	f.Cleanup(hs.Close)
	g := newGateway(f, func(o *api.Options) {
		o.Limits = fuzzLimits
		o.AuthHookURL = hs.URL
		o.PublicCommunities = []string{community1}
	})
	hc := fuzzHTTPClient(f)
	n := 0
	f.Fuzz(func(t *testing.T, route uint8, status uint16, body []byte) {
		rt := hookRoutes[int(route)%len(hookRoutes)]
		code := 200 + int(status)%400
		n++
		platform := fmt.Sprintf("sessionid=fuzz-%d; theme=dark", n)
		hook.mu.Lock()
		hook.status, hook.body, hook.calls = code, body, 0
		hook.mu.Unlock()

		a := getWithCookie(t, hc, g, rt.path, rt.sse, api.GuestCookie+"=not-ours; "+platform+"; footfall_other=secret-value")
		what := fmt.Sprintf("GET %s with the hook answering %d %q", rt.path, code, body)

		hook.mu.Lock()
		calls, req, authz := hook.calls, hook.req, hook.authz
		hook.mu.Unlock()
		if calls != 1 {
			t.Fatalf("%s: the hook was asked %d times; want once", what, calls)
		}
		want := map[string]any{"community_id": rt.community, "stream": rt.stream, "transport": rt.transport, "cookie": platform, "client_ip": "127.0.0.1"}
		for k, v := range want {
			if req[k] != v {
				t.Fatalf("%s: the hook was asked %v; want %s %q", what, req, k, v)
			}
		}
		if authz != "Bearer "+testAPIKey {
			t.Fatalf("%s: the hook was asked with Authorization %q; want the API key", what, authz)
		}

		wantStatus := http.StatusServiceUnavailable
		switch code {
		case http.StatusUnauthorized:
			wantStatus = http.StatusUnauthorized
			if rt.public && rt.stream == "visitors" {
				wantStatus = http.StatusOK // a guest
			}
		case http.StatusForbidden:
			wantStatus = http.StatusForbidden
		case http.StatusOK:
			if role, anon, ok := validHookAnswer(body); ok {
				wantStatus = http.StatusOK
				if rt.stream == "dashboard" && (anon || role == "member") {
					wantStatus = http.StatusForbidden
				}
			}
		}
		if a.status != wantStatus {
			t.Fatalf("%s = %d %q; want %d", what, a.status, a.body, wantStatus)
		}
		if a.status != http.StatusOK {
			m := checkErrorBody(t, what, a)
			if a.status == http.StatusServiceUnavailable && m["error"] != "auth_hook_unavailable" {
				t.Fatalf("%s = 503 %s; want error auth_hook_unavailable", what, a.body)
			}
		} else if !rt.sse {
			checkJSONObject(t, what, a)
		}
		guest := code == http.StatusUnauthorized && wantStatus == http.StatusOK
		if got := guestCookie(a.header); (got != nil) != guest {
			t.Fatalf("%s: Set-Cookie %q; want a guest cookie exactly when the hook says 401 on a public visitors route", what, a.header.Values("Set-Cookie"))
		}
		req2, _ := http.NewRequest(http.MethodGet, g.ts.URL+rt.path, nil)
		if err := g.spec.Response(req2, a.status, a.header, a.body); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	})
}
