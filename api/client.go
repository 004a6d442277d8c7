package api

import (
	"log/slog"
	"sync"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// countWindow coalesces count messages: at most one per window per
	// client (docs/protocol.md, streams: at most 10 a second).
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

// outMsg is one message on its way to a client: its type (the SSE
// `event:`), the bus event id it reflects (the SSE `id:`, "" for replies)
// and its JSON.
type outMsg struct {
	typ  string
	id   string
	data []byte
	// shared, when set, is a cache of per-node encodings of data, so that a
	// message sent alike to N WebSocket clients is framed once.
	shared *transport.SharedFrame
}

// wire is m as its transport takes it.
func (m outMsg) wire() transport.Message {
	return transport.Message{Type: m.typ, ID: m.id, Data: m.data, Frame: m.shared}
}

// clientEnv is what a node's clients need of it, shared by all of them: the
// clock, the log, the alarm wheel and the counters they move. A client holds
// no pointer to its Server.
type clientEnv struct {
	now     func() time.Time
	log     *slog.Logger
	alarms  *alarm.Wheel
	metrics *metrics // nil in some tests
}

func newClientEnv(s *Server) *clientEnv {
	return &clientEnv{now: s.now, log: s.log, alarms: &s.alarms, metrics: s.metrics}
}

// maxEarly bounds the events a client buffers between joining its
// community and sending its first message.
const maxEarly = 1024

// client is one open stream of one community: the state it has been sent
// and what is pending. Whoever changes it (the Hub's fanout in Deliver,
// the reader with a reply, the alarm) records under the client's lock and
// makes sure the ready messages get written:
//
//   - A WebSocket on plain TCP tries them at once without blocking
//     (writeNowLocked). Only what a full socket does not take goes to a
//     writer goroutine, started on demand, which writes until nothing is
//     ready and exits; keepalives and goodbyes are always its job (and
//     everything, on TLS). An idle connection has no writer goroutine and
//     no timer; a slow client only ever holds up its own writer.
//   - An inline transport (SSE, whose r3labs stream has goroutines of its
//     own) is written at once by whoever changed the state.
//
// Anything due later (a coalesced count, a keepalive, the credential's
// expiry) is booked as one alarm with the Hub, which serves every alarm of
// the node with a single timer.
type client struct {
	env       *clientEnv
	transport string             // "websocket" or "sse"
	sent      prometheus.Counter // footfall_messages_sent_total of the transport
	id        uint64
	reqID     string // the request id of the connection's upgrade, for logs
	community string
	stream    streams.Stream
	visitor   streams.Visitor // visitors stream only
	sessionID string          // set when opened with a session cookie
	tr        transport.Conn  // the connection (api/internal/transport)
	alarm     *alarm.Alarm    // nil in some tests
	share     *shared         // shared encodings of the community; may be nil
	rs        *wsReadState    // WebSocket inbound rate limiting; reader only
	// releaseSlot gives back the connection's per-IP slot (limitConnections)
	// when a hijacked connection ends; nil while the handler holds it.
	releaseSlot func()

	// writers counts the writer goroutine while one runs; the connection's
	// owner waits for it after marking the client finished.
	writers sync.WaitGroup

	mu      sync.Mutex
	ident   *auth.Identity
	begun   bool         // begin ran; before it, events wait in early
	early   []earlyEvent // events delivered before begin
	queue   []outMsg
	closing bool
	code    int
	reason  string
	// hook: the auth hook admitted this stream; it is asked again when its
	// verdict runs out (guarded by mu; nil otherwise).
	hook *hookGrant
	// handover: the node is stopping; on close, the visitor's source is
	// kept for the presence TTL instead of ending at once.
	handover bool
	// writing: a writer goroutine runs (it sees every change made under mu
	// before it exits), or the client has said goodbye or failed.
	writing bool
	// finished: the connection has ended; nothing is written any more.
	finished bool
	alarmAt  time.Time // when the booked alarm rings; zero if none

	// Figures as last seen from the hub (seq-ordered).
	seq    uint64
	lastID string // ID of the event numbered seq, for SSE ids
	count  int
	today  streams.Today
	peak   streams.Peak
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
	nextKeepalive  time.Time
}

// Closing reports whether the client is saying goodbye (transport.Peer).
func (c *client) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
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
	c.seq, c.lastID, c.count, c.today, c.peak, c.at = snap.Seq, snap.LastID, snap.Count, snap.Today, snap.Peak, snap.Changed
	now := c.env.now()
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
	c.catchUpLocked(now)
}

// resume starts an SSE client that reconnected with a Last-Event-ID still
// in history: it replays exactly the missed events, in order, without a
// snapshot (docs/protocol.md, fine print). snap (the node's state when the client
// joined) supplies the figures if no presence event was missed.
func (c *client) resume(missed []streams.Event, snap streams.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count, c.today, c.peak, c.at = snap.Count, snap.Today, snap.Peak, snap.Changed
	for i := range missed {
		e := &missed[i]
		if !e.IsPresence() {
			c.deliverLocked(e, nil) // moves seq and lastID on itself
			continue
		}
		c.seq, c.lastID = e.Seq, e.ID
		{
			c.count, c.today, c.peak, c.at = e.Count, e.Today, e.Peak, e.Time
			if c.stream == streams.StreamDashboard {
				c.enqueueLocked(outMsg{typ: "dashboard_update", id: e.ID, data: c.dashboardLocked(e.Time)})
			} else {
				c.enqueueLocked(outMsg{typ: e.Type, id: e.ID, data: encodeCount(visitorCount{Type: e.Type, CommunityID: c.community, Count: e.Count, Timestamp: rfc3339(e.Time)})})
			}
		}
	}
	now := c.env.now()
	c.sentCount = c.count
	c.lastCountSend, c.lastDashSend = now, now
	c.catchUpLocked(now)
}

// catchUpLocked marks c begun, applies the events that arrived before and
// starts the stream's keepalives.
func (c *client) catchUpLocked(now time.Time) {
	c.begun = true
	for _, e := range c.early {
		c.deliverLocked(e.ev, e.frames)
	}
	c.early = nil
	if c.keepaliveEvery > 0 {
		c.nextKeepalive = now.Add(c.keepaliveEvery)
	}
	c.scheduleLocked()
}

// Deliver implements streams.Subscriber. It never blocks.
func (c *client) Deliver(e *streams.Event) {
	frames := c.share.framesFor(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if !c.begun {
		if len(c.early) < maxEarly {
			c.early = append(c.early, earlyEvent{e, frames})
		}
		return
	}
	c.deliverLocked(e, frames)
	c.scheduleLocked()
}

// earlyEvent is an event delivered before begin, with its shared frame.
type earlyEvent struct {
	ev     *streams.Event
	frames *transport.SharedFrame
}

// deliverLocked records one event: a count or dashboard change is state
// (pending, coalesced by the writer), anything else is queued. frames is
// the frame the event's other clients share (nil: none).
func (c *client) deliverLocked(e *streams.Event, frames *transport.SharedFrame) {
	if e.Type == streams.TypeRefresh {
		if e.Seq >= c.seq {
			c.seq, c.lastID, c.count, c.today, c.peak = e.Seq, e.ID, e.Count, e.Today, e.Peak
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
		c.count, c.today, c.peak, c.at = e.Count, e.Today, e.Peak, e.Time
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
				c.enqueueLocked(outMsg{typ: e.Type, id: e.ID, data: e.Message, shared: frames})
			}
		}
	case e.Type == streams.TypeBroadcast:
		if e.Stream == c.stream {
			typ := e.MessageType
			if typ == "" { // published without it
				typ = broadcastType(e.Message)
			}
			c.enqueueLocked(outMsg{typ: typ, id: e.ID, data: e.Message, shared: frames})
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
	c.scheduleLocked()
}

func (c *client) enqueueLocked(m outMsg) {
	if len(c.queue) >= maxQueued {
		c.env.metrics.dropped.Inc()
		if !c.closing {
			c.env.metrics.slowConsumers.Inc()
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
	c.scheduleLocked()
}

func (c *client) closeLocked(code int, reason string) {
	if c.closing {
		return
	}
	c.closing, c.code, c.reason = true, code, reason
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
	c.scheduleLocked()
}

func (c *client) dashboardLocked(now time.Time) []byte {
	return encodeDashboard(c.community, c.count, c.today, c.peak, now)
}
