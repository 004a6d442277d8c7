package api

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeInbound feeds arbitrary client frames to the inbound decoder:
// it must never panic, and every frame is either a known message or one of
// the error codes of docs/protocol.md, streams.
func FuzzDecodeInbound(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`, `{"type":"request_count"}`, `{"type":"auth","token":"a.b.c"}`,
		`{"type":"auth","token":5}`, `{"type":5}`, `{"type":null}`, `[]`, `"ping"`, `{`, ``, `null`,
		`{"type":"ping","type":"auth"}`, "{\"type\":\"p\\u0069ng\"}", `{"type":"dance"}`, ` {"type":"ping"} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeInbound(data, DefaultLimits.MaxMessageBytes)
		if err != nil {
			switch err.code {
			case "invalid_json", "invalid_message", "unknown_type", "message_too_large":
			default:
				t.Fatalf("decodeInbound(%q) error code %q is not one docs/protocol.md lists", data, err.code)
			}
			if err.message == "" {
				t.Fatalf("decodeInbound(%q) error has no message", data)
			}
			return
		}
		if !json.Valid(data) || len(data) > DefaultLimits.MaxMessageBytes {
			t.Fatalf("decodeInbound(%q) = %+v; want an error for invalid or oversized input", data, m)
		}
		switch m.Type {
		case "ping", "request_count":
		case "auth":
			if m.Token == "" {
				t.Fatalf("decodeInbound(%q) = auth without a token", data)
			}
		default:
			t.Fatalf("decodeInbound(%q) type = %q; want a known type", data, m.Type)
		}
	})
}

// FuzzServiceBodies feeds arbitrary bodies to the service API's decoders:
// no panic, and whatever passes validation really is what it claims.
func FuzzServiceBodies(f *testing.F) {
	const community = "123e4567-e89b-12d3-a456-426614174000"
	for _, s := range []string{
		`{"visitor_id":"anon-1","authenticated":false,"action":"join"}`,
		`{"visitor_id":5,"action":"join"}`, `{"visitor_id":"a","action":"dance"}`, `[]`, `{}`, `null`,
		`{"type":"visitor_count","community_id":"` + community + `","count":1,"timestamp":"2025-10-10T14:30:00Z"}`,
		`{"type":"dashboard_update","data":{"today_visitors":{"authenticated_visitors":1,"anonymous_visitors":2,"total_unique_visitors":3},"realtime_count":1,"community_id":"` + community + `"},"timestamp":"2025-10-10T14:30:00Z"}`,
		`{"type":"analytics_update","metric":"m","value":{"a":[1,2]},"timestamp":"2025-10-10T14:30:00Z"}`,
		`{"type":"visitor_count","count":-1}`, `{"type":"visitor_count","count":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e visitorEvent
		if field, msg, ok := decodeObject(data, &e); !ok {
			if field == "" || msg == "" {
				t.Fatalf("decodeObject(%q) failed without naming a field", data)
			}
		} else if field, _ := e.validate(); field == "" {
			if e.VisitorID == nil || *e.VisitorID == "" || e.Action == nil {
				t.Fatalf("visitor event %q validated without visitor_id and action", data)
			}
		}
		for stream, allowed := range broadcastMessageTypes {
			field, msg := validateServerMessage(data, allowed, community)
			if field != "" {
				if msg == "" {
					t.Fatalf("validateServerMessage(%q) = field %q without a message", data, field)
				}
				continue
			}
			var m struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(data, &m) != nil || !allowed[m.Type] {
				t.Fatalf("validateServerMessage(%q) accepted a message of type %q on %s", data, m.Type, stream)
			}
		}
	})
}
