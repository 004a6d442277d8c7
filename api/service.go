package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

const (
	// maxIDLen bounds visitor, session and user ids and metric names.
	maxIDLen = 256
	// maxSessionTTL bounds a session's lifetime.
	maxSessionTTL = 30 * 24 * time.Hour
)

// serviceAPI is the service API (docs/protocol.md, service API): its
// handlers and what they need of the node, no more.
type serviceAPI struct {
	bus streams.Bus
	// hub is the node's: a change made here is observed at once, before
	// the bus's event for it arrives.
	hub *streams.Hub
	// key is the API key; empty disables the service API.
	key string
	// presenceTTL is the lifetime of a source the API touches; maxBatch
	// bounds a visitor-events batch.
	presenceTTL time.Duration
	maxBatch    int
	now         func() time.Time
}

func newServiceAPI(s *Server) *serviceAPI {
	return &serviceAPI{bus: s.bus, hub: s.hub, key: s.opts.APIKey, presenceTTL: s.opts.PresenceTTL, maxBatch: s.limits.MaxBatch, now: s.now}
}

// requireAPIKey guards the service API: 404 when no key is configured
// (docs/protocol.md, service API), 401 on a wrong or missing key.
func (a *serviceAPI) requireAPIKey(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.key == "" {
			return errNotFound("the service API is disabled: set FOOTFALL_API_KEY")
		}
		h := c.Request().Header.Get("Authorization")
		scheme, key, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") ||
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(a.key)) != 1 {
			return &httpError{Status: http.StatusUnauthorized, Slug: "unauthorized", Message: "missing or wrong API key"}
		}
		return next(c)
	}
}

// isServiceKey reports whether r carries the service API key as its
// bearer token.
func (a *serviceAPI) isServiceKey(r *http.Request) bool {
	if a.key == "" {
		return false
	}
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(a.key)) == 1
}

// readBody reads a request body, mapping an oversized one to 413.
func readBody(c echo.Context) ([]byte, error) {
	b, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errBodyTooLarge(mbe.Limit)
		}
		return nil, errBadRequest("body", "could not read the request body")
	}
	return b, nil
}

// decodeObject decodes a JSON object into v, naming the offending field in
// the error.
func decodeObject(data []byte, v any) (field, msg string, ok bool) {
	t := bytes.TrimSpace(data)
	if len(t) == 0 {
		return "body", "request body is empty; expected a JSON object", false
	}
	if t[0] != '{' {
		return "body", "expected a JSON object", false
	}
	if err := json.Unmarshal(t, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return te.Field, te.Field + " must be " + jsonKind(te.Type.Kind().String()), false
		}
		return "body", "body is not valid JSON", false
	}
	return "", "", true
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "float64":
		return "a number"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

// visitorEvent is one element of POST visitor-events.
type visitorEvent struct {
	VisitorID     *string `json:"visitor_id"`
	Authenticated *bool   `json:"authenticated"`
	Action        *string `json:"action"`
}

func (e *visitorEvent) validate() (field, msg string) {
	switch {
	case e.VisitorID == nil || *e.VisitorID == "":
		return "visitor_id", "visitor_id is required"
	case len(*e.VisitorID) > maxIDLen:
		return "visitor_id", "visitor_id is longer than 256 bytes"
	case e.Action == nil:
		return "action", "action is required: join, leave or heartbeat"
	}
	switch *e.Action {
	case "join", "leave", "heartbeat":
		return "", ""
	}
	return "action", "action must be join, leave or heartbeat"
}

// visitorEvents is POST /api/v1/communities/{id}/visitor-events.
func (a *serviceAPI) visitorEvents(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var events []visitorEvent
	t := bytes.TrimSpace(body)
	if len(t) > 0 && t[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(t, &raws); err != nil {
			return errBadRequest("body", "body is not a valid JSON array")
		}
		if len(raws) == 0 {
			return errBadRequest("body", "the batch is empty")
		}
		if len(raws) > a.maxBatch {
			return errBadRequest("body", "a batch holds at most "+strconv.Itoa(a.maxBatch)+" events")
		}
		events = make([]visitorEvent, len(raws))
		for i, raw := range raws {
			if field, msg, ok := decodeObject(raw, &events[i]); !ok {
				return errBadElement(i, field, msg)
			}
			if field, msg := events[i].validate(); field != "" {
				return errBadElement(i, field, msg)
			}
		}
	} else {
		var e visitorEvent
		if field, msg, ok := decodeObject(body, &e); !ok {
			return errBadRequest(field, msg)
		}
		if field, msg := e.validate(); field != "" {
			return errBadRequest(field, msg)
		}
		events = []visitorEvent{e}
	}
	ctx := c.Request().Context()
	var res streams.PresenceResult
	for _, e := range events {
		v := streams.Visitor{ID: *e.VisitorID, Authenticated: e.Authenticated != nil && *e.Authenticated}
		if *e.Action == "leave" {
			res, err = a.bus.Leave(ctx, community, v, "api")
		} else {
			res, err = a.bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "api", TTL: a.presenceTTL})
		}
		if err != nil {
			return err
		}
		a.hub.Observe(community, res, a.now())
	}
	return c.JSON(http.StatusOK, map[string]any{
		"community_id": community,
		"count":        res.Count,
		"timestamp":    rfc3339(a.now()),
	})
}

// postMetric is POST /api/v1/communities/{id}/metrics.
func (a *serviceAPI) postMetric(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var m struct {
		Metric *string          `json:"metric"`
		Value  *json.RawMessage `json:"value"`
	}
	if field, msg, ok := decodeObject(body, &m); !ok {
		return errBadRequest(field, msg)
	}
	switch {
	case m.Metric == nil || *m.Metric == "":
		return errBadRequest("metric", "metric is required")
	case len(*m.Metric) > maxIDLen:
		return errBadRequest("metric", "metric is longer than 256 bytes")
	case m.Value == nil || string(*m.Value) == "null":
		return errBadRequest("value", "value is required")
	}
	return a.publishAnalytics(c, community, *m.Metric, compactJSON(*m.Value))
}

// conversions is POST /api/v1/communities/{id}/conversions: the seed's
// conversion signal, an analytics_update with metric "conversion".
func (a *serviceAPI) conversions(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var m struct {
		SessionID   *string `json:"session_id"`
		ConvertedAt *string `json:"converted_at"`
	}
	if field, msg, ok := decodeObject(body, &m); !ok {
		return errBadRequest(field, msg)
	}
	switch {
	case m.SessionID == nil || *m.SessionID == "":
		return errBadRequest("session_id", "session_id is required")
	case len(*m.SessionID) > maxIDLen:
		return errBadRequest("session_id", "session_id is longer than 256 bytes")
	}
	at := rfc3339(a.now())
	if m.ConvertedAt != nil {
		t, err := parseTimestamp(*m.ConvertedAt)
		if err != nil {
			return errBadRequest("converted_at", "converted_at must be an RFC 3339 / ISO 8601 timestamp")
		}
		at = rfc3339(t) // shown like every timestamp: RFC 3339, UTC, whole seconds
	}
	value, _ := json.Marshal(struct {
		SessionID   string `json:"session_id"`
		ConvertedAt string `json:"converted_at"`
	}{*m.SessionID, at})
	return a.publishAnalytics(c, community, "conversion", value)
}

// parseTimestamp accepts RFC 3339 and the ISO 8601 forms Python's
// isoformat() writes (the seed's platform), with or without a zone.
func parseTimestamp(v string) (time.Time, error) {
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05.999999999-07:00"} {
		var t time.Time
		if t, err = time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

func (a *serviceAPI) publishAnalytics(c echo.Context, community, metric string, value []byte) error {
	e := streams.Event{
		Community: community, Type: streams.TypeAnalyticsUpdate, Metric: metric, Value: value,
		Stream: streams.StreamDashboard, Time: a.now().UTC().Truncate(time.Second),
	}
	// The client message is encoded once here, not once per client.
	e.Message = encodeAnalytics(&e)
	ev, err := a.bus.Publish(c.Request().Context(), e)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"community_id": community, "event_id": ev.ID})
}

// broadcastMessageTypes lists, per stream, the server messages a platform
// may broadcast (docs/protocol.md, service API).
var broadcastMessageTypes = map[streams.Stream]map[string]bool{
	streams.StreamVisitors:  {"visitor_count": true, "visitor_joined": true, "visitor_left": true},
	streams.StreamDashboard: {"dashboard_update": true, "analytics_update": true},
}

// broadcast is POST /api/v1/communities/{id}/broadcast: the seed's
// VisitorBroadcaster, a message delivered as given.
func (a *serviceAPI) broadcast(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var m struct {
		Stream  *string          `json:"stream"`
		Message *json.RawMessage `json:"message"`
	}
	if field, msg, ok := decodeObject(body, &m); !ok {
		return errBadRequest(field, msg)
	}
	if m.Stream == nil {
		return errBadRequest("stream", "stream is required: visitors or dashboard")
	}
	stream := streams.Stream(*m.Stream)
	allowed, ok := broadcastMessageTypes[stream]
	if !ok {
		return errBadRequest("stream", "stream must be visitors or dashboard")
	}
	if m.Message == nil {
		return errBadRequest("message", "message is required")
	}
	if field, msg := validateServerMessage(*m.Message, allowed, community); field != "" {
		return errBadRequest(field, msg)
	}
	ev, err := a.bus.Publish(c.Request().Context(), streams.Event{
		Community: community, Type: streams.TypeBroadcast, Stream: stream, Message: compactJSON(*m.Message),
		MessageType: broadcastType(*m.Message),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"community_id": community, "event_id": ev.ID})
}

// validateServerMessage checks that raw is one of the server messages of
// docs/protocol.md, streams allowed on the stream, with every field the contract
// gives it (fields beyond those are delivered as given).
func validateServerMessage(raw []byte, allowed map[string]bool, community string) (field, msg string) {
	m, ok := jsonObject(raw)
	if !ok {
		return "message", "message must be a JSON object"
	}
	var typ string
	if json.Unmarshal(m["type"], &typ) != nil || typ == "" {
		return "message.type", "message.type must be a string"
	}
	if !allowed[typ] {
		return "message.type", "message.type " + truncate(typ, 40) + " is not a server message of this stream"
	}
	if !isTimestamp(m["timestamp"]) {
		return "message.timestamp", "message.timestamp must be an RFC 3339 timestamp"
	}
	switch typ {
	case "visitor_count", "visitor_joined", "visitor_left":
		if !isCommunity(m["community_id"], community) {
			return "message.community_id", "message.community_id must be this community's id"
		}
		if !isCount(m["count"]) {
			return "message.count", "message.count must be a non-negative integer"
		}
		if v, ok := m["change"]; ok && !isInt(v) {
			return "message.change", "message.change must be an integer"
		}
	case "dashboard_update":
		d, ok := jsonObject(m["data"])
		if !ok {
			return "message.data", "message.data must be an object"
		}
		today, ok := jsonObject(d["today_visitors"])
		if !ok {
			return "message.data.today_visitors", "message.data.today_visitors must be an object"
		}
		for _, k := range []string{"authenticated_visitors", "anonymous_visitors", "total_unique_visitors"} {
			if !isCount(today[k]) {
				return "message.data.today_visitors." + k, k + " must be a non-negative integer"
			}
		}
		if !isCount(d["realtime_count"]) {
			return "message.data.realtime_count", "realtime_count must be a non-negative integer"
		}
		if !isCommunity(d["community_id"], community) {
			return "message.data.community_id", "message.data.community_id must be this community's id"
		}
	case "analytics_update":
		var metric string
		if json.Unmarshal(m["metric"], &metric) != nil || metric == "" {
			return "message.metric", "message.metric must be a non-empty string"
		}
		if v, ok := m["value"]; !ok || string(v) == "null" {
			return "message.value", "message.value is required"
		}
	}
	return "", ""
}

func jsonObject(raw []byte) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &m) != nil {
		return nil, false
	}
	return m, true
}

func isInt(raw json.RawMessage) bool {
	var v int64
	return raw != nil && json.Unmarshal(raw, &v) == nil
}

func isCount(raw json.RawMessage) bool {
	var v int64
	return raw != nil && json.Unmarshal(raw, &v) == nil && v >= 0
}

func isTimestamp(raw json.RawMessage) bool {
	var v string
	if raw == nil || json.Unmarshal(raw, &v) != nil {
		return false
	}
	_, err := time.Parse(time.RFC3339, v)
	return err == nil
}

func isCommunity(raw json.RawMessage, community string) bool {
	var v string
	if raw == nil || json.Unmarshal(raw, &v) != nil {
		return false
	}
	id, ok := streams.NormalizeCommunityID(v)
	return ok && id == community
}

func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
