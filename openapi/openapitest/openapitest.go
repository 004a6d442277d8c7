// Package openapitest holds footfall's code to its published contract in
// tests: it validates real HTTP exchanges and real WebSocket/SSE messages
// against the embedded openapi.yaml, with github.com/getkin/kin-openapi.
//
// Only responses are validated, never requests: tests send malformed requests
// on purpose, and what matters is that every answer is one the document
// promises.
//
// A Validator is safe for concurrent use.
package openapitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/footfall/footfall/openapi"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The streams of a community, as Message and Broadcast name them.
const (
	StreamVisitors  = "visitors"
	StreamDashboard = "dashboard"
)

// The component schemas whose discriminator mappings say which schema
// describes a message of a given "type".
var (
	serverMessageSchemas = map[string]string{
		StreamVisitors:  "VisitorsServerMessage",
		StreamDashboard: "DashboardServerMessage",
	}
	broadcastSchemas = map[string]string{
		StreamVisitors:  "BroadcastVisitorsMessage",
		StreamDashboard: "BroadcastDashboardMessage",
	}
)

const clientMessageSchema = "ClientMessage"

// Validator validates responses and messages against the embedded OpenAPI
// document. Make one with New.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	// messages maps a stream to the message types that may travel on it
	// (server messages of that stream and client messages) and their schemas.
	messages map[string]map[string]*openapi3.Schema
}

// New loads the embedded openapi.yaml, validates it as an OpenAPI 3.0
// document and builds a router over its paths. It fails the test on any
// error.
func New(t testing.TB) *Validator {
	t.Helper()
	v, err := load(context.Background())
	if err != nil {
		t.Fatalf("openapitest: %v", err)
	}
	return v
}

func load(ctx context.Context) (*Validator, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(openapi.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route openapi.yaml: %w", err)
	}
	v := &Validator{doc: doc, router: router, messages: make(map[string]map[string]*openapi3.Schema)}
	client, err := mapping(doc, clientMessageSchema)
	if err != nil {
		return nil, err
	}
	for stream, name := range serverMessageSchemas {
		server, err := mapping(doc, name)
		if err != nil {
			return nil, err
		}
		m := make(map[string]*openapi3.Schema, len(server)+len(client))
		for typ, s := range client {
			m[typ] = s
		}
		for typ, s := range server {
			m[typ] = s
		}
		v.messages[stream] = m
	}
	return v, nil
}

// mapping resolves the discriminator mapping of the named oneOf schema:
// message type -> schema.
func mapping(doc *openapi3.T, name string) (map[string]*openapi3.Schema, error) {
	ref := doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("openapi.yaml: components/schemas/%s is missing", name)
	}
	d := ref.Value.Discriminator
	if d == nil || d.PropertyName != "type" || len(d.Mapping) == 0 {
		return nil, fmt.Errorf("openapi.yaml: components/schemas/%s needs a discriminator on \"type\" with a mapping", name)
	}
	const prefix = "#/components/schemas/"
	out := make(map[string]*openapi3.Schema, len(d.Mapping))
	for typ, target := range d.Mapping {
		s := doc.Components.Schemas[strings.TrimPrefix(target.Ref, prefix)]
		if !strings.HasPrefix(target.Ref, prefix) || s == nil || s.Value == nil {
			return nil, fmt.Errorf("openapi.yaml: components/schemas/%s maps %q to %q, which is not a component schema", name, typ, target.Ref)
		}
		out[typ] = s.Value
	}
	return out, nil
}

// Operations lists every operation of the document as "METHOD path", with
// the document's {param} placeholders, e.g.
// "GET /ws/communities/{id}/visitors/", sorted.
func (v *Validator) Operations() []string {
	var ops []string
	for path, item := range v.doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}

// Response validates one real HTTP exchange: req as sent (only its method,
// URL and headers are read), the status, the response headers and the
// already-read body. The operation must exist, the status must be one the
// operation documents, the headers it declares must be present and valid,
// and the body must match the schema of its Content-Type.
//
// A 101 (WebSocket handshake) has its headers checked and no body. A
// text/event-stream response has its headers and Content-Type checked; its
// body is not matched against a schema, but every complete event in it
// (ended by a blank line) must carry data that Message accepts for the
// route's stream, under an `event:` equal to the message's type. Pass a nil
// body to skip that, e.g. for a stream that delivers broadcast messages.
//
// The error names the method, the path and the status.
func (v *Validator) Response(req *http.Request, status int, header http.Header, body []byte) error {
	if err := v.response(req, status, header, body); err != nil {
		path := "?"
		if req != nil && req.URL != nil {
			path = req.URL.Path
		}
		method := "?"
		if req != nil {
			method = req.Method
		}
		return fmt.Errorf("%s %s -> %d: %w", method, path, status, err)
	}
	return nil
}

func (v *Validator) response(req *http.Request, status int, header http.Header, body []byte) error {
	if req == nil || req.URL == nil {
		return errors.New("no request")
	}
	if header == nil {
		header = http.Header{}
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("not an operation of openapi.yaml: %w", err)
	}
	op := route.Method + " " + route.Path
	resp := route.Operation.Responses.Status(status)
	if resp == nil {
		resp = route.Operation.Responses.Default()
	}
	if resp == nil || resp.Value == nil {
		return fmt.Errorf("status %d is not documented for %s", status, op)
	}

	mediaType, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	stream := status == http.StatusSwitchingProtocols || mediaType == "text/event-stream"
	if stream {
		if err := checkContentType(resp.Value, header); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	switch status {
	case http.StatusNotModified, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// openapi3filter skips these statuses altogether; their headers
		// are still part of the contract.
		if err := checkRequiredHeaders(resp.Value, header); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if len(body) > 0 {
			return fmt.Errorf("%s: a %d has no body, got %d bytes", op, status, len(body))
		}
	}

	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		ExcludeResponseBody:   stream,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      route,
			Options:    opts,
		},
		Status:  status,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: opts,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}

	if mediaType == "text/event-stream" && len(body) > 0 {
		s := StreamVisitors
		if strings.Contains(route.Path, "visitor-dashboard") {
			s = StreamDashboard
		}
		if err := v.events(s, body); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

// checkContentType checks the response's Content-Type against the media
// types the response documents (none documented: no Content-Type needed).
func checkContentType(resp *openapi3.Response, header http.Header) error {
	if len(resp.Content) == 0 {
		return nil
	}
	ct := header.Get("Content-Type")
	if ct == "" || resp.Content.Get(ct) == nil {
		return fmt.Errorf("Content-Type %q is not one of %v", ct, slices.Sorted(maps.Keys(resp.Content)))
	}
	return nil
}

// checkRequiredHeaders checks that every header the response declares as
// required is present.
func checkRequiredHeaders(resp *openapi3.Response, header http.Header) error {
	for name, h := range resp.Headers {
		if h == nil || h.Value == nil || !h.Value.Required {
			continue
		}
		if header.Get(name) == "" {
			return fmt.Errorf("response header %q missing", name)
		}
	}
	return nil
}

// events validates the complete events of an SSE body.
func (v *Validator) events(stream string, body []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var event string
	var data []string
	n := 0
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			// The end of an event: dispatch it if it has data.
			if data != nil {
				n++
				msg := strings.Join(data, "\n")
				if err := v.Message(stream, []byte(msg)); err != nil {
					return fmt.Errorf("SSE event %d: %w", n, err)
				}
				var m struct {
					Type string `json:"type"`
				}
				_ = json.Unmarshal([]byte(msg), &m)
				if event != m.Type {
					return fmt.Errorf("SSE event %d: event: %q, want the message type %q", n, event, m.Type)
				}
			}
			event, data = "", nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: the heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event = value
		case "data":
			data = append(data, value)
		}
	}
	return sc.Err()
}

// Message validates one WebSocket or SSE message (a JSON text) of the given
// stream, "visitors" or "dashboard", against the schema of its "type": a
// server message of that stream (as footfall builds it: no field missing,
// none extra) or a client message (ping, request_count, auth). A type that
// does not belong to the stream is an error. On a dashboard_update it also
// checks that total_unique_visitors is the sum of the other two.
//
// Messages a platform broadcasts are delivered as given and may carry other
// fields; validate them with Broadcast.
func (v *Validator) Message(stream string, data []byte) error {
	types, ok := v.messages[stream]
	if !ok {
		return fmt.Errorf("unknown stream %q: want %q or %q", stream, StreamVisitors, StreamDashboard)
	}
	value, typ, err := decodeMessage(data)
	if err != nil {
		return fmt.Errorf("%s message %s: %w", stream, snippet(data), err)
	}
	schema, ok := types[typ]
	if !ok {
		return fmt.Errorf("%s message %s: unknown type %q on the %s stream", stream, snippet(data), typ, stream)
	}
	if err := schema.VisitJSON(value, openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("%s message %s: %w", stream, snippet(data), err)
	}
	if typ == "dashboard_update" {
		if err := checkTotals(value); err != nil {
			return fmt.Errorf("%s message %s: %w", stream, snippet(data), err)
		}
	}
	return nil
}

// Broadcast validates a message as the broadcast endpoint of the service API
// accepts it for the given stream (and then delivers it, as given).
func (v *Validator) Broadcast(stream string, data []byte) error {
	name, ok := broadcastSchemas[stream]
	if !ok {
		return fmt.Errorf("unknown stream %q: want %q or %q", stream, StreamVisitors, StreamDashboard)
	}
	value, _, err := decodeMessage(data)
	if err != nil {
		return fmt.Errorf("%s broadcast %s: %w", stream, snippet(data), err)
	}
	schema := v.doc.Components.Schemas[name]
	if schema == nil || schema.Value == nil {
		return fmt.Errorf("openapi.yaml: components/schemas/%s is missing", name)
	}
	if err := schema.Value.VisitJSON(value, openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("%s broadcast %s: %w", stream, snippet(data), err)
	}
	return nil
}

// Webhook validates the body of a webhook delivery against
// components/schemas/WebhookEvent.
func (v *Validator) Webhook(body []byte) error {
	value, _, err := decodeMessage(body)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", snippet(body), err)
	}
	schema := v.doc.Components.Schemas["WebhookEvent"]
	if schema == nil || schema.Value == nil {
		return fmt.Errorf("openapi.yaml: components/schemas/WebhookEvent is missing")
	}
	if err := schema.Value.VisitJSON(value, openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("webhook %s: %w", snippet(body), err)
	}
	return nil
}

// decodeMessage decodes a JSON object with a string "type".
func decodeMessage(data []byte) (any, string, error) {
	var value any
	if err := json.Unmarshal(data, &value); err != nil {
		return nil, "", fmt.Errorf("not JSON: %w", err)
	}
	obj, ok := value.(map[string]any)
	if !ok {
		return nil, "", errors.New("not a JSON object")
	}
	typ, ok := obj["type"].(string)
	if !ok {
		return nil, "", errors.New(`no string "type"`)
	}
	return value, typ, nil
}

// checkTotals checks what a schema cannot say: the day's total is the sum
// of its parts.
func checkTotals(value any) error {
	data, _ := value.(map[string]any)["data"].(map[string]any)
	today, _ := data["today_visitors"].(map[string]any)
	a, _ := today["authenticated_visitors"].(float64)
	b, _ := today["anonymous_visitors"].(float64)
	total, _ := today["total_unique_visitors"].(float64)
	if a+b != total {
		return fmt.Errorf("total_unique_visitors = %v; want authenticated_visitors + anonymous_visitors = %v", total, a+b)
	}
	return nil
}

func snippet(data []byte) string {
	const max = 200
	if len(data) > max {
		return string(data[:max]) + "…"
	}
	return string(data)
}
