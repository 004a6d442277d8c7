package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/footfall/footfall/api"
)

// corsRequest makes a request with an Origin and returns the answer's
// status and headers (the body is checked against the OpenAPI document).
func (g *gateway) corsRequest(method, path, origin string, hdr http.Header) (int, http.Header) {
	g.t.Helper()
	req, _ := http.NewRequest(method, g.ts.URL+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	client := &http.Client{Transport: &http.Transport{}} // its own connections: SSE answers stay open
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var body []byte
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(path, "/sse/") {
		body = make([]byte, 0)
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		if err := g.spec.Response(req, resp.StatusCode, resp.Header, body); err != nil {
			g.t.Errorf("%v", err)
		}
	}
	return resp.StatusCode, resp.Header
}

// TestCORS: the SSE and REST routes answer CORS for allowed origins
// (echoed with credentials; with "*" without), preflights get 204 with the
// methods and headers, a refused origin gets no CORS header (REST still
// answers, SSE keeps its 403), and every answer varies on Origin.
func TestCORS(t *testing.T) {
	const site = "https://community.example"
	g := newGateway(t, func(o *api.Options) { o.AllowedOrigins = []string{site} })
	tok := http.Header{"Authorization": {"Bearer " + member(t, "u")}}
	modTok := http.Header{"Authorization": {"Bearer " + moderator(t, "m")}}
	routes := []struct {
		path string
		hdr  http.Header
	}{
		{countPath(community1), tok},
		{"/api/v1/communities/" + community1 + "/visitor-dashboard", modTok},
		{"/api/v1/communities/" + community1 + "/visitors/history", modTok},
		{ssePath(community1), tok},
		{sseDashboardPath(community1), modTok},
	}
	for _, r := range routes {
		// Preflight from the allowed origin.
		code, h := g.corsRequest("OPTIONS", r.path, site, http.Header{"Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"authorization"}})
		if code != 204 || h.Get("Access-Control-Allow-Origin") != site || h.Get("Access-Control-Allow-Credentials") != "true" ||
			h.Get("Access-Control-Allow-Methods") != "GET" || h.Get("Access-Control-Allow-Headers") != "Authorization, Last-Event-ID, If-None-Match" ||
			!strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("OPTIONS %s from %s = %d %v; want 204 with the CORS headers", r.path, site, code, h)
		}
		// The actual request from the allowed origin.
		code, h = g.corsRequest("GET", r.path, site, r.hdr)
		if code != 200 || h.Get("Access-Control-Allow-Origin") != site || h.Get("Access-Control-Allow-Credentials") != "true" ||
			h.Get("Access-Control-Expose-Headers") != "ETag" || !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("GET %s from %s = %d %v; want 200 with ACAO, credentials, exposed ETag, Vary", r.path, site, code, h)
		}
		// A refused origin: no CORS header; REST answers, SSE is 403.
		code, h = g.corsRequest("GET", r.path, "https://evil.example", r.hdr)
		want := 200
		if strings.HasPrefix(r.path, "/sse/") {
			want = 403
		}
		if code != want || h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" || !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("GET %s from a refused origin = %d %v; want %d, no CORS header, Vary: Origin", r.path, code, h, want)
		}
		code, h = g.corsRequest("OPTIONS", r.path, "https://evil.example", nil)
		if h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("OPTIONS %s from a refused origin = %d %v; want no CORS header", r.path, code, h)
		}
		// No Origin (not a browser): answered, no CORS header, Vary.
		code, h = g.corsRequest("GET", r.path, "", r.hdr)
		if code != 200 || h.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("GET %s without Origin = %d %v; want 200, no ACAO, Vary: Origin", r.path, code, h)
		}
	}

	// "*": any origin is echoed, without credentials.
	star := newGateway(t, func(o *api.Options) { o.AllowedOrigins = []string{"*"} })
	code, h := star.corsRequest("GET", countPath(community1), "https://anywhere.example", tok)
	if code != 200 || h.Get("Access-Control-Allow-Origin") != "https://anywhere.example" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("GET with * = %d %v; want the origin echoed without Allow-Credentials", code, h)
	}
	// The service API answers no CORS.
	req, _ := http.NewRequest("OPTIONS", g.ts.URL+"/api/v1/sessions", nil)
	req.Header.Set("Origin", site)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("the service API answered a preflight with CORS headers")
		}
	}
}
