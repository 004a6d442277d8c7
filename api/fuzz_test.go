package api

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeInbound feeds arbitrary client frames to the inbound decoder:
// it must never panic, and every frame is either a known message or one of
// the error codes of CONTRACT section 5.
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
				t.Fatalf("decodeInbound(%q) error code %q is not in the contract", data, err.code)
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
