package api

import (
	"encoding/json"
	"time"

	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
)

// Outbound messages: the seed's JSON, byte for byte in field names, encoded once
// per node for the clients of a community that send the same one.

// countKey identifies a count message; clients of a community that send
// the same one share its encoding and frame.
type countKey struct {
	typ       string
	count     int
	change    int
	hasChange bool
	ts        int64
}

// sharedMsg is an encoding shared through the community's memo.
type sharedMsg struct {
	data   []byte
	frames *transport.SharedFrame
}

// countMessageLocked is the coalesced count message due now.
func (c *client) countMessageLocked(now time.Time) outMsg {
	k := countKey{typ: c.pendingType, count: c.count, ts: c.at.Unix()}
	if c.pendingChanges != 1 || c.countStale {
		k.typ, k.change, k.hasChange, k.ts = "visitor_count", c.count-c.sentCount, true, now.Unix()
	}
	build := func() any {
		m := visitorCount{Type: k.typ, CommunityID: c.community, Count: k.count, Timestamp: rfc3339(time.Unix(k.ts, 0))}
		if k.hasChange {
			m.Change = intPtr(k.change)
		}
		return &sharedMsg{data: encodeCount(m), frames: new(transport.SharedFrame)}
	}
	var sm *sharedMsg
	if c.share != nil {
		sm = c.share.memo.get(k, build).(*sharedMsg)
	} else {
		sm = build().(*sharedMsg)
	}
	return outMsg{typ: k.typ, id: c.lastID, data: sm.data, shared: sm.frames}
}

// dashKey identifies a dashboard_update message, shared like countKey.
type dashKey struct {
	count int
	today streams.Today
	peak  streams.Peak
	ts    int64
}

func (c *client) dashboardMessageLocked(now time.Time) outMsg {
	k := dashKey{count: c.count, today: c.today, peak: c.peak, ts: now.Unix()}
	build := func() any {
		return &sharedMsg{data: encodeDashboard(c.community, k.count, k.today, k.peak, time.Unix(k.ts, 0)), frames: new(transport.SharedFrame)}
	}
	var sm *sharedMsg
	if c.share != nil {
		sm = c.share.memo.get(k, build).(*sharedMsg)
	} else {
		sm = build().(*sharedMsg)
	}
	return outMsg{typ: "dashboard_update", id: c.lastID, data: sm.data, shared: sm.frames}
}

// Server messages (docs/protocol.md, streams), with the seed's field names and
// order.

type visitorCount struct {
	Type        string `json:"type"`
	CommunityID string `json:"community_id"`
	Count       int    `json:"count"`
	Change      *int   `json:"change,omitempty"`
	Timestamp   string `json:"timestamp"`
}

type dashboardUpdate struct {
	Type string `json:"type"`
	Data struct {
		TodayVisitors struct {
			Authenticated int `json:"authenticated_visitors"`
			Anonymous     int `json:"anonymous_visitors"`
			Total         int `json:"total_unique_visitors"`
		} `json:"today_visitors"`
		RealtimeCount int    `json:"realtime_count"`
		CommunityID   string `json:"community_id"`
		// PeakToday is today's highest count and when it was first
		// reached; always sent by footfall (a platform's broadcast may
		// leave it out).
		PeakToday *peakToday `json:"peak_today,omitempty"`
	} `json:"data"`
	Timestamp string `json:"timestamp"`
}

type peakToday struct {
	Count int    `json:"count"`
	At    string `json:"at"`
}

type analyticsUpdate struct {
	Type      string          `json:"type"`
	Metric    string          `json:"metric"`
	Value     json.RawMessage `json:"value"`
	Timestamp string          `json:"timestamp"`
}

type errorMessage struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func encodeCount(m visitorCount) []byte {
	b, _ := json.Marshal(m)
	return b
}

func encodeDashboard(community string, count int, today streams.Today, peak streams.Peak, at time.Time) []byte {
	var m dashboardUpdate
	p := peakToday{Count: peak.Count, At: rfc3339(at)}
	if peak.At != 0 {
		p.At = rfc3339(peak.Time())
	}
	m.Data.PeakToday = &p
	m.Type = "dashboard_update"
	m.Data.TodayVisitors.Authenticated = today.Authenticated
	m.Data.TodayVisitors.Anonymous = today.Anonymous
	m.Data.TodayVisitors.Total = today.Total()
	m.Data.RealtimeCount = count
	m.Data.CommunityID = community
	m.Timestamp = rfc3339(at)
	b, _ := json.Marshal(m)
	return b
}

func encodeAnalytics(e *streams.Event) []byte {
	b, _ := json.Marshal(analyticsUpdate{Type: streams.TypeAnalyticsUpdate, Metric: e.Metric, Value: e.Value, Timestamp: rfc3339(e.Time)})
	return b
}

func encodeError(code, message string) []byte {
	b, _ := json.Marshal(errorMessage{Type: "error", Code: code, Message: message})
	return b
}

// broadcastType reads the type of a broadcast message (validated when it
// was accepted by the service API).
func broadcastType(msg []byte) string {
	var m struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(msg, &m)
	return m.Type
}

// rfc3339 formats t as the seed does: RFC 3339, UTC, whole seconds.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

func intPtr(i int) *int { return &i }
