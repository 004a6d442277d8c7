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

// transport is how a client's messages reach the wire: a WebSocket or an
// SSE response. Only one goroutine at a time calls write, keepalive and end
// (the client's writer, or for an inline transport whoever holds the
// client's lock).
type transport interface {
	// write sends one message.
	write(m outMsg) error
	// keepalive sends the transport's heartbeat (a ping frame, an SSE
	// comment).
	keepalive() error
	// end says goodbye with a close code and reason. It may block briefly
	// and is always called on the client's writer goroutine.
	end(code int, reason string)
	// abort makes the connection end soon after a failed write: the reader
	// side stops waiting for the peer. It must not block.
	abort()
	// inline reports whether write and keepalive never block (they hand the
	// message on, as the SSE transport does to its r3labs stream): then they
	// run at once under the client's lock and no writer goroutine is needed.
	inline() bool
}

// outMsg is one message on its way to a client: its type (the SSE
// `event:`), the bus event id it reflects (the SSE `id:`, "" for replies)
// and its JSON.
type outMsg struct {
	typ  string
	id   string
	data []byte
	// shared, when set, is a cache of per-node encodings of data, so that a
	// message sent alike to N WebSocket clients is framed once.
	shared *streams.FrameCache
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
	srv       *Server
	transport string             // "websocket" or "sse"
	sent      prometheus.Counter // footfall_messages_sent_total of the transport
	id        uint64
	reqID     string // the request id of the connection's upgrade, for logs
	community string
	stream    streams.Stream
	visitor   streams.Visitor // visitors stream only
	sessionID string          // set when opened with a session cookie
	tr        transport
	alarm     *streams.Alarm // nil when the client has no Hub (tests)
	memo      *streams.Memo  // shared encodings of the community; may be nil
	rs        *wsReadState   // WebSocket inbound rate limiting; reader only
	// releaseSlot gives back the connection's per-IP slot (limitConnections)
	// when a hijacked connection ends; nil while the handler holds it.
	releaseSlot func()

	// writers counts the writer goroutine while one runs; the connection's
	// owner waits for it after marking the client finished.
	writers sync.WaitGroup

	mu      sync.Mutex
	ident   *auth.Identity
	begun   bool             // begin ran; before it, events wait in early
	early   []*streams.Event // events delivered before begin
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
			c.deliverLocked(e) // moves seq and lastID on itself
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
	now := c.srv.now()
	c.sentCount = c.count
	c.lastCountSend, c.lastDashSend = now, now
	c.catchUpLocked(now)
}

// catchUpLocked marks c begun, applies the events that arrived before and
// starts the stream's keepalives.
func (c *client) catchUpLocked(now time.Time) {
	c.begun = true
	for _, e := range c.early {
		c.deliverLocked(e)
	}
	c.early = nil
	if c.keepaliveEvery > 0 {
		c.nextKeepalive = now.Add(c.keepaliveEvery)
	}
	c.scheduleLocked()
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
	c.scheduleLocked()
}

// deliverLocked records one event: a count or dashboard change is state
// (pending, coalesced by the writer), anything else is queued.
func (c *client) deliverLocked(e *streams.Event) {
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
	c.scheduleLocked()
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

// scheduleLocked makes sure that what is ready gets written and that the
// client's alarm rings when the next thing falls due. Callers hold c.mu.
func (c *client) scheduleLocked() {
	if c.writing || c.finished || !c.begun {
		return // a running writer sees the change before it exits
	}
	now := c.srv.now()
	next, ready := c.dueLocked(now)
	if !ready {
		c.bookLocked(next)
		return
	}
	if c.tr != nil && c.tr.inline() && !c.closing {
		c.flushLocked(now)
		return
	}
	if !c.closing && c.writeNowLocked(now) {
		return
	}
	c.startWriterLocked()
}

// nonBlockingWriter is a transport that can try a message without blocking
// (a WebSocket on plain TCP).
type nonBlockingWriter interface {
	// tryLock takes the connection's write lock, if no one holds it.
	tryLock() bool
	unlock()
	// writeNow writes m as far as the socket takes it and returns the
	// rest (nil: all written).
	writeNow(m outMsg) (rest []byte, err error)
	// hand passes the write lock and rest to the writer goroutine.
	hand(rest []byte)
}

// writeNowLocked writes what is ready right here, without blocking, when
// the transport allows it: most messages then need no goroutine. If the
// socket is full, what remains is the writer goroutine's. It reports
// whether it dealt with everything that was ready. Callers hold c.mu.
func (c *client) writeNowLocked(now time.Time) bool {
	nw, ok := c.tr.(nonBlockingWriter)
	if !ok {
		return false
	}
	// Keepalives and expiry are the writer goroutine's.
	if (!c.nextKeepalive.IsZero() && !now.Before(c.nextKeepalive)) ||
		(c.ident != nil && !c.ident.ExpiresAt.IsZero() && !now.Before(c.ident.ExpiresAt)) {
		return false
	}
	if !nw.tryLock() {
		return false // someone is writing: the writer goroutine waits for them
	}
	b := c.collectLocked(now)
	for i, m := range b.msgs {
		rest, err := nw.writeNow(m)
		if err != nil {
			nw.unlock()
			c.failLocked(err)
			return true
		}
		c.sent.Inc()
		if rest != nil {
			// The socket is full: the rest of this frame, then the
			// messages after it, are the writer goroutine's.
			c.srv.metrics.socketFull.Inc()
			nw.hand(rest)
			c.queue = append(b.msgs[i+1:len(b.msgs):len(b.msgs)], c.queue...)
			c.startWriterLocked()
			return true
		}
	}
	nw.unlock()
	next, _ := c.dueLocked(now)
	c.bookLocked(next)
	return true
}

// startWriterLocked starts the writer goroutine. Callers hold c.mu and
// have checked that none runs.
func (c *client) startWriterLocked() {
	c.writing = true
	c.writers.Add(1)
	go c.writerGoroutine()
}

func (c *client) writerGoroutine() {
	defer c.writers.Done()
	c.runWriter()
}

// ring is the client's alarm: something may have fallen due.
func (c *client) ring() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alarmAt = time.Time{}
	c.scheduleLocked()
}

// bookLocked books the client's alarm for at (zero: none).
func (c *client) bookLocked(at time.Time) {
	if c.alarm == nil || at.Equal(c.alarmAt) {
		return
	}
	c.alarmAt = at
	c.srv.hub.SetAlarm(c.alarm, at)
}

// dueLocked says whether something is ready to write at now and, if not,
// when the next thing falls due (zero: never).
func (c *client) dueLocked(now time.Time) (next time.Time, ready bool) {
	if len(c.queue) > 0 || c.closing {
		return time.Time{}, true
	}
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if c.pendingChanges > 0 || c.countStale {
		earliest(windowDue(c.lastCountSend, countWindow))
	}
	if c.dashPending {
		earliest(windowDue(c.lastDashSend, dashboardWindow))
	}
	earliest(c.nextKeepalive)
	if c.ident != nil {
		earliest(c.ident.ExpiresAt)
	}
	if !next.IsZero() && !now.Before(next) {
		return time.Time{}, true
	}
	return next, false
}

// windowDue is when the next coalesced message may go out after one sent
// at last: a window later, rounded up to the window's grid, so that the
// clients of a community that have a change pending send it at the same
// moment, alike (and the node encodes it once).
func windowDue(last time.Time, window time.Duration) time.Time {
	if last.IsZero() {
		return time.Time{}.Add(1) // due at once
	}
	due := last.Add(window)
	if t := due.Truncate(window); !t.Equal(due) {
		due = t.Add(window)
	}
	return due
}

// flushLocked writes what is ready through an inline transport. Callers
// hold c.mu.
func (c *client) flushLocked(now time.Time) {
	b := c.collectLocked(now)
	for _, m := range b.msgs {
		if err := c.tr.write(m); err != nil {
			c.failLocked(err)
			return
		}
		c.sent.Inc()
	}
	if b.keepalive {
		if err := c.tr.keepalive(); err != nil {
			c.failLocked(err)
			return
		}
	}
	if c.closing {
		// Saying goodbye may wait: it is the writer goroutine's.
		c.startWriterLocked()
		return
	}
	next, _ := c.dueLocked(now)
	c.bookLocked(next)
}

// runWriter runs writeLoop; a panic in it ends only this connection.
func (c *client) runWriter() {
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("panic in connection writer", "conn", c.id, "community", c.community, "panic", p, "stack", string(debug.Stack()))
			c.fail(nil)
		}
	}()
	c.writeLoop()
}

// writeLoop is the body of the writer goroutine. It owns the transport's
// write side while it runs; it returns when nothing is ready (after
// booking the alarm for what falls due next), after writing a goodbye, or
// on a write error.
func (c *client) writeLoop() {
	// First the rest of a frame an inline write could not finish.
	if r, ok := c.tr.(interface{ resume() error }); ok {
		if err := r.resume(); err != nil {
			c.fail(err)
			return
		}
	}
	for {
		now := c.srv.now()
		b := c.collect(now)
		if b.idle {
			return
		}
		for _, m := range b.msgs {
			if err := c.tr.write(m); err != nil {
				c.fail(err)
				return
			}
			c.sent.Inc()
		}
		if b.keepalive {
			if err := c.tr.keepalive(); err != nil {
				c.fail(err)
				return
			}
		}
		if b.closing {
			if !b.finished {
				c.tr.end(b.code, b.reason)
			}
			return
		}
	}
}

// fail marks a client whose transport failed (or whose writer panicked) as
// closing for good and makes its connection end.
func (c *client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *client) failLocked(err error) {
	if err == errSlowConsumer {
		c.srv.metrics.slowConsumers.Inc()
	}
	c.closing = true
	c.writing = true // no writer starts any more
	c.bookLocked(time.Time{})
	if c.tr != nil {
		c.tr.abort()
	}
}

// finish marks the connection ended: no writer starts any more and the
// alarm is cancelled. The caller then closes the transport and waits for
// c.writers.
func (c *client) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished, c.closing = true, true
	c.bookLocked(time.Time{})
}

// batch is what a writer takes from the client in one go.
type batch struct {
	msgs      []outMsg
	keepalive bool
	closing   bool
	finished  bool // the connection ended under the writer
	code      int
	reason    string
	// idle: nothing was ready; the writer has been released (the alarm is
	// booked for what falls due next) and must return.
	idle bool
}

// collect takes what is ready for the writer goroutine at now; when
// nothing is, it releases the writer.
func (c *client) collect(now time.Time) batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return batch{closing: true, finished: true}
	}
	b := c.collectLocked(now)
	if len(b.msgs) == 0 && !b.keepalive && !b.closing {
		next, ready := c.dueLocked(now)
		if !ready {
			c.writing = false
			c.bookLocked(next)
			return batch{idle: true}
		}
	}
	return b
}

// collectLocked takes the messages that are ready at now, with coalesced
// counts and dashboard updates whose window has passed, and the keepalive
// and expiry that are due.
func (c *client) collectLocked(now time.Time) (b batch) {
	b.msgs = c.queue
	c.queue = nil
	if c.pendingChanges > 0 || c.countStale {
		if !now.Before(windowDue(c.lastCountSend, countWindow)) {
			b.msgs = append(b.msgs, c.countMessageLocked(now))
			c.sentCount = c.count
			c.pendingChanges, c.pendingType, c.countStale = 0, "", false
			c.lastCountSend = now
		}
	}
	if c.dashPending {
		if !now.Before(windowDue(c.lastDashSend, dashboardWindow)) {
			b.msgs = append(b.msgs, c.dashboardMessageLocked(now))
			c.dashPending = false
			c.lastDashSend = now
		}
	}
	if !c.nextKeepalive.IsZero() && !now.Before(c.nextKeepalive) {
		b.keepalive = true
		c.nextKeepalive = now.Add(c.keepaliveEvery)
	}
	if c.ident != nil {
		if exp := c.ident.ExpiresAt; !exp.IsZero() && !now.Before(exp) {
			c.closeLocked(int(auth.CodeExpired), "credential expired")
		}
	}
	b.closing, b.code, b.reason = c.closing, c.code, c.reason
	return b
}

// countKey identifies a count message; clients of a community that send
// the same one share its encoding and frame.
type countKey struct {
	typ       string
	count     int
	change    int
	hasChange bool
	ts        int64
}

// sharedMsg is an encoding shared through the community's Memo.
type sharedMsg struct {
	data   []byte
	frames *streams.FrameCache
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
		return &sharedMsg{data: encodeCount(m), frames: new(streams.FrameCache)}
	}
	var sm *sharedMsg
	if c.memo != nil {
		sm = c.memo.Get(k, build).(*sharedMsg)
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
		return &sharedMsg{data: encodeDashboard(c.community, k.count, k.today, k.peak, time.Unix(k.ts, 0)), frames: new(streams.FrameCache)}
	}
	var sm *sharedMsg
	if c.memo != nil {
		sm = c.memo.Get(k, build).(*sharedMsg)
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
