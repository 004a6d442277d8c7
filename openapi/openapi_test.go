package openapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/footfall/footfall/openapi"
	"github.com/footfall/footfall/openapi/openapitest"
	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v4"
)

const cid = "123e4567-e89b-12d3-a456-426614174000"

func TestOpenAPIValidates(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.OpenAPI())
	if err != nil {
		t.Fatalf("LoadFromData(openapi.yaml) = %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml: Validate() = %v", err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q; want 3.0.3 (kin-openapi validates 3.0 best)", doc.OpenAPI)
	}
	for _, name := range []string{"bearerJWT", "serviceAPIKey", "sessionCookie", "tokenQuery"} {
		if doc.Components.SecuritySchemes[name] == nil {
			t.Errorf("security scheme %s is missing", name)
		}
	}
	if s := doc.Components.SecuritySchemes["sessionCookie"]; s != nil && (s.Value.In != "cookie" || s.Value.Name != "footfall_session") {
		t.Errorf("sessionCookie = in %q name %q; want the cookie footfall_session", s.Value.In, s.Value.Name)
	}
	if s := doc.Components.SecuritySchemes["bearerJWT"]; s != nil && (s.Value.Scheme != "bearer" || s.Value.BearerFormat != "JWT") {
		t.Errorf("bearerJWT = scheme %q format %q; want bearer JWT", s.Value.Scheme, s.Value.BearerFormat)
	}
}

// TestOpenAPIExamplesAreChecked makes sure doc.Validate really checks schema
// examples, so that the examples in openapi.yaml are held to their schemas.
func TestOpenAPIExamplesAreChecked(t *testing.T) {
	bad := strings.Replace(string(openapi.OpenAPI()), "        count: 42\n        change: 0\n", "        count: forty-two\n        change: 0\n", 1)
	if bad == string(openapi.OpenAPI()) {
		t.Fatal("the VisitorCount example moved; update this test")
	}
	doc, err := openapi3.NewLoader().LoadFromData([]byte(bad))
	if err != nil {
		t.Fatalf("LoadFromData = %v", err)
	}
	if err := doc.Validate(context.Background()); err == nil {
		t.Error("Validate() accepted a VisitorCount example with a string count")
	}
}

func TestDocumentsAreFreshCopies(t *testing.T) {
	a := openapi.OpenAPI()
	a[0] = 'X'
	if openapi.OpenAPI()[0] == 'X' {
		t.Error("OpenAPI() returned the embedded bytes themselves")
	}
}

func TestAsyncAPIParses(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal(openapi.AsyncAPI(), &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if got := doc["asyncapi"]; got != "3.0.0" {
		t.Errorf("asyncapi = %v; want 3.0.0", got)
	}
	channels, _ := doc["channels"].(map[string]any)
	var addresses []string
	for _, ch := range channels {
		addresses = append(addresses, ch.(map[string]any)["address"].(string))
	}
	slices.Sort(addresses)
	want := []string{
		"/sse/communities/{id}/visitor-dashboard/",
		"/sse/communities/{id}/visitors/",
		"/ws/communities/{id}/visitor-dashboard/",
		"/ws/communities/{id}/visitors/",
	}
	if !slices.Equal(addresses, want) {
		t.Errorf("channel addresses = %v; want %v", addresses, want)
	}

	// Every reference resolves: internal ones in asyncapi.yaml, external
	// ones to a component schema of openapi.yaml.
	oa, err := openapi3.NewLoader().LoadFromData(openapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	refs := 0
	walk(doc, func(ref string) {
		refs++
		file, pointer, _ := strings.Cut(ref, "#")
		switch file {
		case "":
			if resolve(doc, pointer) == nil {
				t.Errorf("asyncapi.yaml: $ref %q does not resolve", ref)
			}
		case "openapi.yaml":
			name, ok := strings.CutPrefix(pointer, "/components/schemas/")
			if !ok || oa.Components.Schemas[name] == nil {
				t.Errorf("asyncapi.yaml: $ref %q is not a component schema of openapi.yaml", ref)
			}
		default:
			t.Errorf("asyncapi.yaml: $ref %q points outside openapi.yaml", ref)
		}
	})
	if refs < 50 {
		t.Errorf("found %d $refs in asyncapi.yaml; the walk is broken", refs)
	}
}

// TestAsyncAPIExamples validates every message example of every channel of
// asyncapi.yaml against the OpenAPI schemas, for that channel's stream.
func TestAsyncAPIExamples(t *testing.T) {
	v := openapitest.New(t)
	var doc map[string]any
	if err := yaml.Unmarshal(openapi.AsyncAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, ch := range doc["channels"].(map[string]any) {
		ch := ch.(map[string]any)
		stream := openapitest.StreamVisitors
		if strings.Contains(ch["address"].(string), "visitor-dashboard") {
			stream = openapitest.StreamDashboard
		}
		for key, m := range ch["messages"].(map[string]any) {
			ref := m.(map[string]any)["$ref"].(string)
			msg := resolve(doc, strings.TrimPrefix(ref, "#")).(map[string]any)
			examples, _ := msg["examples"].([]any)
			if len(examples) == 0 {
				t.Errorf("%s: message %s has no example", name, key)
			}
			for _, ex := range examples {
				b, err := json.Marshal(ex.(map[string]any)["payload"])
				if err != nil {
					t.Fatal(err)
				}
				n++
				if err := v.Message(stream, b); err != nil {
					t.Errorf("%s: example of %s: %v", name, key, err)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no examples checked")
	}
}

func walk(node any, visit func(ref string)) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if s, ok := v.(string); ok && k == "$ref" {
				visit(s)
				continue
			}
			walk(v, visit)
		}
	case []any:
		for _, v := range n {
			walk(v, visit)
		}
	}
}

// resolve follows a JSON pointer ("/a/b") through decoded YAML.
func resolve(doc any, pointer string) any {
	node := doc
	for _, part := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		if node, ok = m[part]; !ok {
			return nil
		}
	}
	return node
}

func TestOperations(t *testing.T) {
	v := openapitest.New(t)
	want := []string{
		"GET /healthz",
		"GET /readyz",
		"GET /openapi.yaml",
		"GET /asyncapi.yaml",
		"GET /",
		"GET /ws/communities/{id}/visitors/",
		"GET /ws/communities/{id}/visitor-dashboard/",
		"GET /sse/communities/{id}/visitors/",
		"GET /sse/communities/{id}/visitor-dashboard/",
		"GET /api/v1/communities/{id}/visitors/count",
		"GET /api/v1/communities/{id}/visitor-dashboard",
		"GET /api/v1/communities/{id}/visitors/history",
		"POST /api/v1/communities/{id}/visitor-events",
		"POST /api/v1/communities/{id}/metrics",
		"POST /api/v1/communities/{id}/conversions",
		"POST /api/v1/communities/{id}/broadcast",
		"POST /api/v1/sessions",
		"DELETE /api/v1/sessions/{session_id}",
		"POST /dev/token",
		"GET /dev/info",
		"GET /metrics",
		"GET /api/v1/communities/{id}/stats",
		"OPTIONS /sse/communities/{id}/visitors/",
		"OPTIONS /sse/communities/{id}/visitor-dashboard/",
		"OPTIONS /api/v1/communities/{id}/visitors/count",
		"OPTIONS /api/v1/communities/{id}/visitor-dashboard",
		"OPTIONS /api/v1/communities/{id}/visitors/history",
	}
	slices.Sort(want)
	if got := v.Operations(); !slices.Equal(got, want) {
		t.Errorf("Operations() = %v\nwant %v", got, want)
	}
}

// Messages exactly as the README and docs/protocol.md show them.
var goodMessages = []struct {
	stream, msg string
}{
	{"visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":42,"timestamp":"2025-10-10T14:30:00Z"}`},
	{"visitors", `{"type":"visitor_joined","community_id":"` + cid + `","count":43,"timestamp":"2025-10-10T14:30:15Z"}`},
	{"visitors", `{"type":"visitor_left","community_id":"` + cid + `","count":42,"timestamp":"2025-10-10T14:30:30Z"}`},
	{"visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":42,"change":0,"timestamp":"2025-10-10T14:31:00Z"}`},
	{"visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":0,"change":-3,"timestamp":"2025-10-10T14:31:00Z"}`},
	{"visitors", `{"type":"pong","timestamp":"2025-10-10T14:30:00Z"}`},
	{"visitors", `{"type":"error","code":"invalid_json","message":"message is not valid JSON"}`},
	{"visitors", `{"type":"error","code":"rate_limited","message":"too many messages: at most 10 a second"}`},
	{"visitors", `{"type":"error","code":"expired"}`},
	{"visitors", `{"type":"auth_ok","expires_at":"2025-10-10T15:30:00Z"}`},
	{"visitors", `{"type":"ping"}`},
	{"visitors", `{"type":"request_count"}`},
	{"visitors", `{"type":"auth","token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}`},
	{"dashboard", `{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":150,"anonymous_visitors":320,"total_unique_visitors":470},"realtime_count":42,"community_id":"` + cid + `"},"timestamp":"2025-10-10T14:30:00Z"}`},
	{"dashboard", `{"type":"analytics_update","metric":"conversion_rate","value":14.5,"timestamp":"2025-10-10T14:31:00Z"}`},
	{"dashboard", `{"type":"analytics_update","metric":"conversion","value":{"session_id":"s-1","converted_at":"2025-10-10T14:31:00Z"},"timestamp":"2025-10-10T14:31:00Z"}`},
	{"dashboard", `{"type":"pong","timestamp":"2025-10-10T14:30:00Z"}`},
	{"dashboard", `{"type":"error","code":"unknown_type","message":"unknown message type; expected ping, request_count or auth"}`},
	{"dashboard", `{"type":"error","code":"forbidden","message":"token is for another user or does not grant this stream"}`},
	{"dashboard", `{"type":"auth_ok","expires_at":"2025-10-10T15:30:00Z"}`},
	{"dashboard", `{"type":"request_count"}`},
}

func TestMessageAccepts(t *testing.T) {
	v := openapitest.New(t)
	for _, tc := range goodMessages {
		if err := v.Message(tc.stream, []byte(tc.msg)); err != nil {
			t.Errorf("Message(%s, %s) = %v; want nil", tc.stream, tc.msg, err)
		}
	}
}

func TestMessageRejects(t *testing.T) {
	v := openapitest.New(t)
	ts := `"timestamp":"2025-10-10T14:30:00Z"`
	for _, tc := range []struct {
		name, stream, msg string
	}{
		{"missing count", "visitors", `{"type":"visitor_count","community_id":"` + cid + `",` + ts + `}`},
		{"count is a string", "visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":"42",` + ts + `}`},
		{"count is fractional", "visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":4.5,` + ts + `}`},
		{"count is negative", "visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":-1,` + ts + `}`},
		{"extra field on visitor_count", "visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":42,"visitors":[],` + ts + `}`},
		{"change on visitor_joined", "visitors", `{"type":"visitor_joined","community_id":"` + cid + `","count":42,"change":1,` + ts + `}`},
		{"missing community_id", "visitors", `{"type":"visitor_left","count":42,` + ts + `}`},
		{"upper-case community id", "visitors", `{"type":"visitor_left","community_id":"123E4567-E89B-12D3-A456-426614174000","count":42,` + ts + `}`},
		{"missing timestamp", "visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":42}`},
		{"timestamp not UTC", "visitors", `{"type":"pong","timestamp":"2025-10-10T16:30:00+02:00"}`},
		{"timestamp with fractions", "visitors", `{"type":"pong","timestamp":"2025-10-10T14:30:00.123Z"}`},
		{"timestamp not a date", "visitors", `{"type":"pong","timestamp":"yesterday"}`},
		{"unknown type", "visitors", `{"type":"visitor_teleported","community_id":"` + cid + `","count":42,` + ts + `}`},
		{"dashboard message on visitors", "visitors", `{"type":"analytics_update","metric":"m","value":1,` + ts + `}`},
		{"visitors message on dashboard", "dashboard", `{"type":"visitor_count","community_id":"` + cid + `","count":42,` + ts + `}`},
		{"unknown error code", "visitors", `{"type":"error","code":"oops","message":"x"}`},
		{"error without code", "visitors", `{"type":"error","message":"x"}`},
		{"auth without token", "visitors", `{"type":"auth"}`},
		{"dashboard total is not the sum", "dashboard", `{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":2,"total_unique_visitors":4},"realtime_count":1,"community_id":"` + cid + `"},` + ts + `}`},
		{"dashboard without realtime_count", "dashboard", `{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":2,"total_unique_visitors":3},"community_id":"` + cid + `"},` + ts + `}`},
		{"analytics value null", "dashboard", `{"type":"analytics_update","metric":"m","value":null,` + ts + `}`},
		{"analytics without value", "dashboard", `{"type":"analytics_update","metric":"m",` + ts + `}`},
		{"not JSON", "visitors", `{"type":`},
		{"not an object", "visitors", `["visitor_count"]`},
		{"no type", "visitors", `{"count":1}`},
		{"unknown stream", "count", `{"type":"ping"}`},
	} {
		if err := v.Message(tc.stream, []byte(tc.msg)); err == nil {
			t.Errorf("%s: Message(%s, %s) = nil; want an error", tc.name, tc.stream, tc.msg)
		}
	}
}

func TestBroadcast(t *testing.T) {
	v := openapitest.New(t)
	for _, tc := range []struct {
		stream, msg string
		ok          bool
	}{
		{"visitors", `{"type":"visitor_count","community_id":"` + cid + `","count":1234,"timestamp":"2025-10-10T14:30:00Z","source":"platform"}`, true},
		{"visitors", `{"type":"visitor_joined","count":3}`, true},
		{"visitors", `{"type":"visitor_count","community_id":"x"}`, false},
		{"visitors", `{"type":"dashboard_update","data":{}}`, false},
		{"dashboard", `{"type":"dashboard_update","data":{"realtime_count":9}}`, true},
		{"dashboard", `{"type":"analytics_update","metric":"m","value":[1,2]}`, true},
		{"dashboard", `{"type":"analytics_update","metric":"m"}`, false},
		{"dashboard", `{"type":"pong","timestamp":"2025-10-10T14:30:00Z"}`, false},
	} {
		err := v.Broadcast(tc.stream, []byte(tc.msg))
		if (err == nil) != tc.ok {
			t.Errorf("Broadcast(%s, %s) = %v; want ok=%v", tc.stream, tc.msg, err, tc.ok)
		}
	}
}

func jsonHeader(extra ...string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return h
}

func TestResponse(t *testing.T) {
	v := openapitest.New(t)
	count := `{"type":"visitor_count","community_id":"` + cid + `","count":42,"timestamp":"2025-10-10T14:30:00Z"}`
	dashboard := `{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":150,"anonymous_visitors":320,"total_unique_visitors":470},"realtime_count":42,"community_id":"` + cid + `"},"timestamp":"2025-10-10T14:30:00Z"}`
	snapshot := jsonHeader("ETag", `"c-42-1760106600"`, "Cache-Control", "no-cache")
	ws := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}, "Sec-Websocket-Protocol": {"bearer"}}
	sse := http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}, "X-Accel-Buffering": {"no"}}
	sseBody := "retry: 3000\n\nevent: visitor_count\nid: 17-0\ndata: " + count + "\n\n: heartbeat\n\nevent: visitor_joined\nid: 18-0\ndata: {\"type\":\"visitor_joined\""
	countPath := "/api/v1/communities/" + cid + "/visitors/count"

	for _, tc := range []struct {
		name           string
		method, target string
		status         int
		header         http.Header
		body           string
		ok             bool
	}{
		{"count 200", "GET", countPath, 200, snapshot, count, true},
		{"count 200 with change", "GET", countPath, 200, snapshot, `{"type":"visitor_count","community_id":"` + cid + `","count":42,"change":1,"timestamp":"2025-10-10T14:30:00Z"}`, true},
		{"count 200, count is a string", "GET", countPath, 200, snapshot, strings.Replace(count, `42`, `"42"`, 1), false},
		{"count 200, extra field", "GET", countPath, 200, snapshot, strings.Replace(count, `"count":42`, `"count":42,"extra":1`, 1), false},
		{"count 200, dashboard body", "GET", countPath, 200, snapshot, dashboard, false},
		{"count 200, no body", "GET", countPath, 200, snapshot, "", false},
		{"count 200 without ETag", "GET", countPath, 200, jsonHeader("Cache-Control", "no-cache"), count, false},
		{"count 200 with a bad ETag", "GET", countPath, 200, jsonHeader("ETag", "unquoted", "Cache-Control", "no-cache"), count, false},
		{"count 200 without Cache-Control", "GET", countPath, 200, jsonHeader("ETag", `"x"`), count, false},
		{"count 200 as text", "GET", countPath, 200, http.Header{"Content-Type": {"text/plain"}, "Etag": {`"x"`}, "Cache-Control": {"no-cache"}}, count, false},
		{"count 200 to a guest with its cookie", "GET", countPath, 200, jsonHeader("ETag", `"x"`, "Cache-Control", "no-cache", "Set-Cookie", "footfall_vid=AbCdEfGhIjKlMnOpQrSt.AbCdEfGhIjKlMnOpQrStUv; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"), count, true},
		{"count 200 with a cookie value over 64 characters", "GET", countPath, 200, jsonHeader("ETag", `"x"`, "Cache-Control", "no-cache", "Set-Cookie", "footfall_vid="+strings.Repeat("a", 65)+"; Path=/"), count, false},
		{"count 200 setting another cookie", "GET", countPath, 200, jsonHeader("ETag", `"x"`, "Cache-Control", "no-cache", "Set-Cookie", "sessionid=abc; Path=/"), count, false},
		{"ws 101 to a guest", "GET", "/ws/communities/" + cid + "/visitors/", 101, http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}, "Set-Cookie": {"footfall_vid=AbCdEfGhIjKlMnOpQrSt.AbCdEfGhIjKlMnOpQrStUv; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"}}, "", true},
		{"count 304", "GET", countPath, 304, http.Header{"Etag": {`"x"`}, "Cache-Control": {"no-cache"}}, "", true},
		{"count 304 without ETag", "GET", countPath, 304, http.Header{"Cache-Control": {"no-cache"}}, "", false},
		{"count 401", "GET", countPath, 401, jsonHeader(), `{"error":"authentication_required","message":"no credential","code":4001}`, true},
		{"count 401 with a mismatched code", "GET", countPath, 401, jsonHeader(), `{"error":"authentication_required","message":"no credential","code":4002}`, false},
		{"count 401 without code", "GET", countPath, 401, jsonHeader(), `{"error":"authentication_required","message":"no credential"}`, false},
		{"count 403", "GET", countPath, 403, jsonHeader(), `{"error":"forbidden","message":"not a member","code":4003}`, true},
		{"count 404", "GET", "/api/v1/communities/xyz/visitors/count", 404, jsonHeader(), `{"error":"not_found","message":"unknown community id"}`, true},
		{"count 418", "GET", countPath, 418, jsonHeader(), `{"error":"teapot","message":"x"}`, false},
		{"dashboard 200", "GET", "/api/v1/communities/" + cid + "/visitor-dashboard", 200, snapshot, dashboard, true},
		{"unknown route", "GET", "/api/v1/nothing", 404, jsonHeader(), `{"error":"not_found","message":"Not Found"}`, false},
		{"healthz", "GET", "/healthz", 200, jsonHeader(), `{"status":"ok"}`, true},
		{"healthz wrong", "GET", "/healthz", 200, jsonHeader(), `{"status":"ready"}`, false},
		{"readyz", "GET", "/readyz", 200, jsonHeader(), `{"status":"ready"}`, true},
		{"readyz 503", "GET", "/readyz", 503, jsonHeader(), `{"error":"shutting_down","message":"the node is shutting down"}`, true},
		{"openapi.yaml", "GET", "/openapi.yaml", 200, http.Header{"Content-Type": {"application/yaml"}}, string(openapi.OpenAPI()), true},
		{"openapi.yaml as text", "GET", "/openapi.yaml", 200, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, string(openapi.OpenAPI()), true},
		{"asyncapi.yaml", "GET", "/asyncapi.yaml", 200, http.Header{"Content-Type": {"application/yaml"}}, string(openapi.AsyncAPI()), true},
		{"asyncapi.yaml is not the openapi", "GET", "/asyncapi.yaml", 200, http.Header{"Content-Type": {"application/yaml"}}, string(openapi.OpenAPI()), false},
		{"demo page", "GET", "/", 200, http.Header{"Content-Type": {"text/html; charset=utf-8"}}, "<!doctype html><title>footfall</title>", true},
		{"ws 101", "GET", "/ws/communities/" + cid + "/visitors/", 101, ws, "", true},
		{"ws 101 without accept", "GET", "/ws/communities/" + cid + "/visitor-dashboard/", 101, http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, "", false},
		{"ws 403", "GET", "/ws/communities/" + cid + "/visitors/", 403, jsonHeader(), `{"error":"origin_not_allowed","message":"origin not allowed"}`, true},
		{"ws 404", "GET", "/ws/communities/nope/visitors/", 404, jsonHeader(), `{"error":"not_found","message":"unknown community id"}`, true},
		{"ws 401 is not documented", "GET", "/ws/communities/" + cid + "/visitors/", 401, jsonHeader(), `{"error":"authentication_required","message":"no credential","code":4001}`, false},
		{"ws 400 not a websocket", "GET", "/ws/communities/" + cid + "/visitors/", 400, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, "Bad Request\n", true},
		{"sse 200", "GET", "/sse/communities/" + cid + "/visitors/", 200, sse, sseBody, true},
		{"sse 200 without body", "GET", "/sse/communities/" + cid + "/visitor-dashboard/", 200, sse, "", true},
		{"sse 200 with a bad event", "GET", "/sse/communities/" + cid + "/visitors/", 200, sse, "event: visitor_count\ndata: {\"type\":\"visitor_count\",\"count\":1}\n\n", false},
		{"sse 200 with a mismatched event name", "GET", "/sse/communities/" + cid + "/visitors/", 200, sse, "event: message\ndata: " + count + "\n\n", false},
		{"sse 200 with a dashboard event on visitors", "GET", "/sse/communities/" + cid + "/visitors/", 200, sse, "event: dashboard_update\ndata: " + dashboard + "\n\n", false},
		{"sse 200 dashboard", "GET", "/sse/communities/" + cid + "/visitor-dashboard/", 200, sse, "event: dashboard_update\nid: 1\ndata: " + dashboard + "\n\nevent: error\ndata: {\"type\":\"error\",\"code\":\"expired\"}\n\n", true},
		{"sse 200 without X-Accel-Buffering", "GET", "/sse/communities/" + cid + "/visitors/", 200, http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}}, "", false},
		{"sse 200 as JSON", "GET", "/sse/communities/" + cid + "/visitors/", 200, jsonHeader("Cache-Control", "no-cache", "X-Accel-Buffering", "no"), count, false},
		{"sse 401 expired", "GET", "/sse/communities/" + cid + "/visitors/", 401, jsonHeader(), `{"error":"expired","message":"token expired","code":4004}`, true},
		{"sse 403 forbidden", "GET", "/sse/communities/" + cid + "/visitor-dashboard/", 403, jsonHeader(), `{"error":"forbidden","message":"moderators only","code":4003}`, true},
		{"sse 403 origin", "GET", "/sse/communities/" + cid + "/visitor-dashboard/", 403, jsonHeader(), `{"error":"origin_not_allowed","message":"origin not allowed"}`, true},
		{"visitor-events 200", "POST", "/api/v1/communities/" + cid + "/visitor-events", 200, jsonHeader(), `{"community_id":"` + cid + `","count":1,"timestamp":"2025-10-10T14:30:00Z"}`, true},
		{"visitor-events 400", "POST", "/api/v1/communities/" + cid + "/visitor-events", 400, jsonHeader(), `{"error":"invalid_body","message":"action must be join, leave or heartbeat","field":"action","index":3}`, true},
		{"visitor-events 400 without field", "POST", "/api/v1/communities/" + cid + "/visitor-events", 400, jsonHeader(), `{"error":"invalid_body","message":"bad"}`, false},
		{"visitor-events 401", "POST", "/api/v1/communities/" + cid + "/visitor-events", 401, jsonHeader(), `{"error":"unauthorized","message":"missing or wrong API key"}`, true},
		{"visitor-events 404", "POST", "/api/v1/communities/" + cid + "/visitor-events", 404, jsonHeader(), `{"error":"not_found","message":"the service API is disabled: set FOOTFALL_API_KEY"}`, true},
		{"visitor-events 413", "POST", "/api/v1/communities/" + cid + "/visitor-events", 413, jsonHeader(), `{"error":"body_too_large","message":"request body over 1 MiB"}`, true},
		{"metrics 202", "POST", "/api/v1/communities/" + cid + "/metrics", 202, jsonHeader(), `{"community_id":"` + cid + `","event_id":"17-0"}`, true},
		{"metrics 200 is not documented", "POST", "/api/v1/communities/" + cid + "/metrics", 200, jsonHeader(), `{"community_id":"` + cid + `","event_id":"17-0"}`, false},
		{"conversions 202", "POST", "/api/v1/communities/" + cid + "/conversions", 202, jsonHeader(), `{"community_id":"` + cid + `","event_id":"18-0"}`, true},
		{"broadcast 202", "POST", "/api/v1/communities/" + cid + "/broadcast", 202, jsonHeader(), `{"community_id":"` + cid + `","event_id":"19-0"}`, true},
		{"sessions 201", "POST", "/api/v1/sessions", 201, jsonHeader(), `{"session_id":"abc","expires_at":"2025-10-10T15:30:00Z"}`, true},
		{"sessions 201 without expires_at", "POST", "/api/v1/sessions", 201, jsonHeader(), `{"session_id":"abc"}`, false},
		{"delete session 204", "DELETE", "/api/v1/sessions/abc", 204, http.Header{}, "", true},
		{"delete session 404", "DELETE", "/api/v1/sessions/abc", 404, jsonHeader(), `{"error":"not_found","message":"no live session with that id"}`, true},
		{"dev token 200", "POST", "/dev/token", 200, jsonHeader(), `{"token":"eyJ.x.y","sub":"dev-abc","expires_at":"2025-10-10T15:30:00Z"}`, true},
		{"dev token 200 without sub", "POST", "/dev/token", 200, jsonHeader(), `{"token":"eyJ.x.y","expires_at":"2025-10-10T15:30:00Z"}`, false},
		{"metrics", "GET", "/metrics", 200, http.Header{"Content-Type": {"text/plain; version=0.0.4; charset=utf-8; escaping=underscores"}}, "# HELP footfall_connections_open x\n", true},
		{"stats 200", "GET", "/api/v1/communities/" + cid + "/stats", 200, jsonHeader(), `{"community_id":"` + cid + `","node_connections":{"websocket":{"visitors":1,"dashboard":0},"sse":{"visitors":0,"dashboard":0}},"present_visitors":1,"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":0,"total_unique_visitors":1},"timestamp":"2025-10-10T14:30:00Z"}`, true},
		{"stats 200 without sse", "GET", "/api/v1/communities/" + cid + "/stats", 200, jsonHeader(), `{"community_id":"` + cid + `","node_connections":{"websocket":{"visitors":1,"dashboard":0}},"present_visitors":1,"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":0,"total_unique_visitors":1},"timestamp":"2025-10-10T14:30:00Z"}`, false},
		{"dev info", "GET", "/dev/info", 200, jsonHeader(), `{"dev":true,"api_key":"k"}`, true},
		{"internal error", "POST", "/api/v1/sessions", 500, jsonHeader(), `{"error":"internal","message":"internal server error"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			err := v.Response(req, tc.status, tc.header, []byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("Response(%s %s, %d) = %v; want ok=%v", tc.method, tc.target, tc.status, err, tc.ok)
			}
			if err != nil {
				u := req.URL.Path
				if want := fmt.Sprintf("%s %s -> %d", tc.method, u, tc.status); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// TestResponseFromRealExchange validates a response read from a real HTTP
// client, with an absolute request URL and the headers net/http adds.
func TestResponseFromRealExchange(t *testing.T) {
	v := openapitest.New(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"c-1"`)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write([]byte(`{"type":"visitor_count","community_id":"` + cid + `","count":1,"timestamp":"2025-10-10T14:30:00Z"}`))
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/communities/" + strings.ToUpper(cid) + "/visitors/count?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Response(resp.Request, resp.StatusCode, resp.Header, body); err != nil {
		t.Errorf("Response(real exchange) = %v", err)
	}
}

// TestConcurrentUse runs the validator from many goroutines (go test -race).
func TestConcurrentUse(t *testing.T) {
	v := openapitest.New(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, tc := range goodMessages {
				if err := v.Message(tc.stream, []byte(tc.msg)); err != nil {
					t.Errorf("goroutine %d: Message = %v", i, err)
				}
			}
			req := httptest.NewRequest("GET", "/healthz", nil)
			if err := v.Response(req, 200, jsonHeader(), []byte(`{"status":"ok"}`)); err != nil {
				t.Errorf("goroutine %d: Response = %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// TestWebhookSchema: the webhook body's schema accepts the events footfall
// sends and refuses a stray field, an unknown type or a missing id.
func TestWebhookSchema(t *testing.T) {
	v := openapitest.New(t)
	for _, ok := range []string{
		`{"id":"c1:e-1","type":"community_occupied","community_id":"c1","timestamp":"2026-12-04T10:00:00Z","data":{"count":1}}`,
		`{"id":"c1:e-2","type":"community_vacated","community_id":"c1","timestamp":"2026-12-04T10:00:05Z","data":{"count":0}}`,
		`{"id":"c1:daily-2026-12-03","type":"daily_summary","community_id":"c1","timestamp":"2026-12-04T00:00:00Z","data":{"authenticated_visitors":1,"anonymous_visitors":0,"total_unique_visitors":1,"peak":1,"peak_at":null}}`,
	} {
		if err := v.Webhook([]byte(ok)); err != nil {
			t.Errorf("Webhook(%s) = %v", ok, err)
		}
	}
	for _, bad := range []string{
		`{"id":"c1:e-1","type":"community_occupied","community_id":"c1","timestamp":"2026-12-04T10:00:00Z","data":{"count":1},"extra":1}`,
		`{"id":"c1:e-1","type":"community_full","community_id":"c1","timestamp":"2026-12-04T10:00:00Z","data":{"count":1}}`,
		`{"type":"community_occupied","community_id":"c1","timestamp":"2026-12-04T10:00:00Z","data":{"count":1}}`,
		`{"id":"c1:e-1","type":"community_occupied","community_id":"c1","timestamp":"2026-12-04T10:00:00Z","data":{"count":-1}}`,
	} {
		if err := v.Webhook([]byte(bad)); err == nil {
			t.Errorf("Webhook(%s) accepted", bad)
		}
	}
}
