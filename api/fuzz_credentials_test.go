package api_test

import (
	"context"
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
