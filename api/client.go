package api

import (
	"encoding/json"
	"runtime/debug"
	"sync"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// countWindow coalesces count messages: at most one per window per
	// client (CONTRACT section 5: at most 10 a second).
	countWindow = 100 * time.Millisecond
	// dashboardWindow coalesces dashboard_update the same way, at most
	// four a second.
	dashboardWindow = 250 * time.Millisecond
	// maxQueued bounds the messages (other than counts, which are state)
	// waiting for one client; a client that lets more pile up is a slow
	// consumer and is disconnected (closeSlowConsumer) so that it never
	// holds back the others.
	maxQueued = 256
	// closeSlowConsumer is the close code for a client that does not keep
	// up: 1013 "try again later", so that clients reconnect.
	closeSlowConsumer = 1013
)

// transport is how a client's messages reach the wire: a WebSocket or an
// SSE response. Only the client's writer goroutine calls it.
type transport interface {
	// write sends one message.
	write(m outMsg) error
	// keepalive sends the transport's heartbeat (a ping frame, an SSE
	// comment).
	keepalive() error
	// end says goodbye with a close code and reason.
	end(code int, reason string)
}

// outMsg is one message on its way to a client: its type (the SSE
// `event:`), the bus event id it reflects (the SSE `id:`, "" for replies)
// and its JSON.
type outMsg struct {
	typ  string
	id   string
	data []byte
	// shared, when set, is the event's cache of per-node encodings, so
	// that a broadcast to N WebSocket clients is framed once.
	shared *streams.FrameCache
}

// maxEarly bounds the events a client buffers between joining its
// community and sending its first message.
const maxEarly = 1024

// client is one open stream of one community: the state it has been sent,
// what is pending, and its writer goroutine. Fanout (Deliver) only records
// and wakes; the writer coalesces and writes, so a slow client never holds
// back the hub.
type client struct {
	srv       *Server
	transport string             // "websocket" or "sse"
	sent      prometheus.Counter // footfall_messages_sent_total of the transport
	id        uint64
	community string
	stream    streams.Stream
	visitor   streams.Visitor // visitors stream only
	sessionID string          // set when opened with a session cookie
	tr        transport

	wake chan struct{} // cap 1: "there is something to do"
	done chan struct{} // closed when the connection ends (reader side)

	mu      sync.Mutex
	ident   *auth.Identity
	begun   bool             // begin ran; before it, events wait in early
	early   []*streams.Event // events delivered before begin
	queue   []outMsg
	closing bool
	code    int
	reason  string
	// handover: the node is stopping; on close, the visitor's source is
	// kept for the presence TTL instead of ending at once.
	handover bool

	// Figures as last seen from the hub (seq-ordered).
	seq    uint64
	lastID string // ID of the event numbered seq, for SSE ids
	count  int
	today  streams.Today
	at     time.Time // time of the latest change

	// Visitors stream: the count last sent and the changes pending since.
	sentCount      int
	countStale     bool // the count changed without an event (refresh)
	pendingChanges int
	pendingType    string
	lastCountSend  time.Time
	dashPending    bool
	lastDashSend   time.Time
	keepaliveEvery time.Duration
}

func (c *client) identity() *auth.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ident
}

// begin records the figures the client starts from and puts the stream's
// first message (visitor_count or dashboard_update) at the head of its
// queue. Events at or before snap.Seq are already reflected in it; those
// that arrived since the client joined its community follow.
func (c *client) begin(snap streams.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq, c.lastID, c.count, c.today, c.at = snap.Seq, snap.LastID, snap.Count, snap.Today, snap.Changed
	now := c.srv.now()
	first := outMsg{id: c.lastID}
	if c.stream == streams.StreamDashboard {
		first.typ, first.data = "dashboard_update", c.dashboardLocked(now)
		c.lastDashSend = now
	} else {
		first.typ = "visitor_count"
		first.data = encodeCount(visitorCount{Type: first.typ, CommunityID: c.community, Count: c.count, Timestamp: rfc3339(now)})
		c.lastCountSend = now
	}
	c.sentCount = c.count
	c.queue = append([]outMsg{first}, c.queue...)
	c.catchUpLocked()
}

// resume starts an SSE client that reconnected with a Last-Event-ID still
// in history: it replays exactly the missed events, in order, without a
// snapshot (CONTRACT section 7). snap (the node's state when the client
// joined) supplies the figures if no presence event was missed.
func (c *client) resume(missed []streams.Event, snap streams.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count, c.today, c.at = snap.Count, snap.Today, snap.Changed
	for i := range missed {
		e := &missed[i]
		if !e.IsPresence() {
			c.deliverLocked(e) // moves seq and lastID on itself
			continue
		}
		c.seq, c.lastID = e.Seq, e.ID
		{
			c.count, c.today, c.at = e.Count, e.Today, e.Time
			if c.stream == streams.StreamDashboard {
				c.enqueueLocked(outMsg{typ: "dashboard_update", id: e.ID, data: c.dashboardLocked(e.Time)})
			} else {
				c.enqueueLocked(outMsg{typ: e.Type, id: e.ID, data: encodeCount(visitorCount{Type: e.Type, CommunityID: c.community, Count: e.Count, Timestamp: rfc3339(e.Time)})})
			}
		}
	}
	now := c.srv.now()
	c.sentCount = c.count
	c.lastCountSend, c.lastDashSend = now, now
	c.catchUpLocked()
}

// catchUpLocked marks c begun and applies the events that arrived before.
func (c *client) catchUpLocked() {
	c.begun = true
	for _, e := range c.early {
		c.deliverLocked(e)
	}
	c.early = nil
	c.signal()
}

// Deliver implements streams.Subscriber. It never blocks.
func (c *client) Deliver(e *streams.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if !c.begun {
		if len(c.early) < maxEarly {
			c.early = append(c.early, e)
		}
		return
	}
	c.deliverLocked(e)
	c.signal()
}

// deliverLocked records one event: a count or dashboard change is state
// (pending, coalesced by the writer), anything else is queued.
func (c *client) deliverLocked(e *streams.Event) {
	if e.Type == streams.TypeRefresh {
		if e.Seq >= c.seq {
			c.seq, c.lastID, c.count, c.today = e.Seq, e.ID, e.Count, e.Today
		}
		if c.stream == streams.StreamDashboard {
			c.dashPending = true
		} else if c.count != c.sentCount {
			// The node re-read the truth (a bus reconnect): converge.
			c.countStale = true
		}
		return
	}
	if e.Seq <= c.seq {
		return // already reflected in what the client was sent
	}
	c.seq, c.lastID = e.Seq, e.ID
	switch {
	case e.IsPresence():
		c.count, c.today, c.at = e.Count, e.Today, e.Time
		if c.stream == streams.StreamVisitors {
			c.pendingChanges++
			c.pendingType = e.Type
		} else {
			c.dashPending = true
		}
	case e.Type == streams.TypeAnalyticsUpdate:
		if c.stream == streams.StreamDashboard {
			if e.Message == nil { // published without its encoding
				c.enqueueLocked(outMsg{typ: e.Type, id: e.ID, data: encodeAnalytics(e)})
			} else {
				c.enqueueLocked(outMsg{typ: e.Type, id: e.ID, data: e.Message, shared: e.Frames})
			}
		}
	case e.Type == streams.TypeBroadcast:
		if e.Stream == c.stream {
			typ := e.MessageType
			if typ == "" { // published without it
				typ = broadcastType(e.Message)
			}
			c.enqueueLocked(outMsg{typ: typ, id: e.ID, data: e.Message, shared: e.Frames})
		}
	}
}

// send queues a message for the writer (replies: pong, error, auth_ok).
func (c *client) send(msgType string, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.enqueueLocked(outMsg{typ: msgType, data: msg})
	c.signal()
}

func (c *client) enqueueLocked(m outMsg) {
	if len(c.queue) >= maxQueued {
		c.srv.metrics.dropped.Inc()
		if !c.closing {
			c.srv.metrics.slowConsumers.Inc()
		}
		c.closeLocked(closeSlowConsumer, "slow consumer")
		return
	}
	c.queue = append(c.queue, m)
}

// closeWith asks the writer to say goodbye with code and end the stream.
func (c *client) closeWith(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
	c.signal()
}

func (c *client) closeLocked(code int, reason string) {
	if c.closing {
		return
	}
	c.closing, c.code, c.reason = true, code, reason
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// requestCount answers request_count at once with the current figures.
func (c *client) requestCount(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == streams.StreamDashboard {
		c.enqueueLocked(outMsg{typ: "dashboard_update", id: c.lastID, data: c.dashboardLocked(now)})
		c.dashPending = false
		c.lastDashSend = now
	} else {
		c.enqueueLocked(outMsg{typ: "visitor_count", id: c.lastID, data: encodeCount(visitorCount{
			Type: "visitor_count", CommunityID: c.community, Count: c.count,
			Change: intPtr(c.count - c.sentCount), Timestamp: rfc3339(now),
		})})
		c.sentCount = c.count
		c.pendingChanges, c.pendingType, c.countStale = 0, "", false
		c.lastCountSend = now
	}
	c.signal()
}

func (c *client) dashboardLocked(now time.Time) []byte {
	return encodeDashboard(c.community, c.count, c.today, now)
}

// runWriter runs writeLoop; a panic in it ends only this connection.
func (c *client) runWriter() {
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("panic in connection writer", "conn", c.id, "community", c.community, "panic", p, "stack", string(debug.Stack()))
			c.fail()
		}
	}()
	c.writeLoop()
}

// writeLoop is the client's writer goroutine. It owns the transport's
// write side; it returns when the stream ends (done closed), after writing
// a goodbye, or on a write error. The caller waits for it.
func (c *client) writeLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	keepalive := time.NewTicker(c.keepaliveEvery)
	defer keepalive.Stop()
	for {
		now := c.srv.now()
		msgs, next, closing, code, reason := c.collect(now)
		for _, m := range msgs {
			if err := c.tr.write(m); err != nil {
				if err == errSlowConsumer {
					c.srv.metrics.slowConsumers.Inc()
				}
				c.fail()
				return
			}
			c.sent.Inc()
		}
		if closing {
			c.tr.end(code, reason)
			return
		}
		// The credential's expiry is checked here so that one goroutine
		// owns every timer of the connection.
		exp := c.identity().ExpiresAt
		if !exp.IsZero() && !now.Before(exp) {
			c.closeWith(int(auth.CodeExpired), "credential expired")
			continue
		}
		wait := time.Hour
		if !exp.IsZero() {
			wait = exp.Sub(now)
		}
		if next > 0 && next < wait {
			wait = next
		}
		timer.Reset(wait)
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-timer.C:
		case <-keepalive.C:
			if err := c.tr.keepalive(); err != nil {
				c.fail()
				return
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (c *client) fail() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// collect takes what is ready to write now, and says how long until the
// next coalesced message is due (0: nothing pending).
func (c *client) collect(now time.Time) (msgs []outMsg, next time.Duration, closing bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msgs = c.queue
	c.queue = nil
	if c.pendingChanges > 0 || c.countStale {
		if due := c.lastCountSend.Add(countWindow); now.Before(due) {
			next = due.Sub(now)
		} else {
			m := visitorCount{Type: c.pendingType, CommunityID: c.community, Count: c.count, Timestamp: rfc3339(c.at)}
			if c.pendingChanges != 1 || c.countStale {
				m.Type = "visitor_count"
				m.Change = intPtr(c.count - c.sentCount)
				m.Timestamp = rfc3339(now)
			}
			msgs = append(msgs, outMsg{typ: m.Type, id: c.lastID, data: encodeCount(m)})
			c.sentCount = c.count
			c.pendingChanges, c.pendingType, c.countStale = 0, "", false
			c.lastCountSend = now
		}
	}
	if c.dashPending {
		if due := c.lastDashSend.Add(dashboardWindow); now.Before(due) {
			if d := due.Sub(now); next == 0 || d < next {
				next = d
			}
		} else {
			msgs = append(msgs, outMsg{typ: "dashboard_update", id: c.lastID, data: c.dashboardLocked(now)})
			c.dashPending = false
			c.lastDashSend = now
		}
	}
	return msgs, next, c.closing, c.code, c.reason
}

// Server messages (CONTRACT section 5), with the seed's field names and
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
	} `json:"data"`
	Timestamp string `json:"timestamp"`
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

func encodeDashboard(community string, count int, today streams.Today, at time.Time) []byte {
	var m dashboardUpdate
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
