package api

import (
	"runtime/debug"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
)

// Writing a client's messages: scheduling on the node's alarms, writing at once
// where the socket takes it, the writer goroutine otherwise, keepalives and expiry.

// scheduleLocked makes sure that what is ready gets written and that the
// client's alarm rings when the next thing falls due. Callers hold c.mu.
func (c *client) scheduleLocked() {
	if c.writing || c.finished || !c.begun {
		return // a running writer sees the change before it exits
	}
	now := c.env.now()
	next, ready := c.dueLocked(now)
	if !ready {
		c.bookLocked(next)
		return
	}
	if c.tr != nil && c.tr.Inline() && !c.closing {
		c.flushLocked(now)
		return
	}
	if !c.closing && c.writeNowLocked(now) {
		return
	}
	c.startWriterLocked()
}

// writeNowLocked writes what is ready right here, without blocking, when
// the transport allows it: most messages then need no goroutine. If the
// socket is full, what remains is the writer goroutine's. It reports
// whether it dealt with everything that was ready. Callers hold c.mu.
func (c *client) writeNowLocked(now time.Time) bool {
	nw, ok := c.tr.(transport.NonBlocking)
	if !ok {
		return false
	}
	// Keepalives and expiry are the writer goroutine's.
	if (!c.nextKeepalive.IsZero() && !now.Before(c.nextKeepalive)) ||
		(c.ident != nil && !c.ident.ExpiresAt.IsZero() && !now.Before(c.ident.ExpiresAt)) {
		return false
	}
	if !nw.TryLock() {
		return false // someone is writing: the writer goroutine waits for them
	}
	b := c.collectLocked(now)
	for i, m := range b.msgs {
		handed, err := nw.SendNow(m.wire())
		if err != nil {
			nw.Unlock()
			c.failLocked(err)
			return true
		}
		c.sent.Inc()
		if handed {
			// The socket is full: the rest of this frame (the transport
			// kept it, with its write lock), then the messages after it,
			// are the writer goroutine's.
			c.env.metrics.socketFull.Inc()
			c.queue = append(b.msgs[i+1:len(b.msgs):len(b.msgs)], c.queue...)
			c.startWriterLocked()
			return true
		}
	}
	nw.Unlock()
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
	c.env.alarms.Set(c.alarm, at)
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
		if err := c.tr.Send(m.wire()); err != nil {
			c.failLocked(err)
			return
		}
		c.sent.Inc()
	}
	if b.keepalive {
		if err := c.tr.Keepalive(); err != nil {
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
			c.env.log.Error("panic in connection writer", "conn", c.id, "community", c.community, "panic", p, "stack", string(debug.Stack()))
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
	if r, ok := c.tr.(transport.NonBlocking); ok {
		if err := r.Resume(); err != nil {
			c.fail(err)
			return
		}
	}
	for {
		now := c.env.now()
		b := c.collect(now)
		if b.idle {
			return
		}
		for _, m := range b.msgs {
			if err := c.tr.Send(m.wire()); err != nil {
				c.fail(err)
				return
			}
			c.sent.Inc()
		}
		if b.keepalive {
			if err := c.tr.Keepalive(); err != nil {
				c.fail(err)
				return
			}
		}
		if b.closing {
			if !b.finished {
				c.tr.Close(b.code, b.reason)
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
	if err == transport.ErrSlowConsumer {
		c.env.metrics.slowConsumers.Inc()
	}
	c.closing = true
	c.writing = true // no writer starts any more
	c.bookLocked(time.Time{})
	if c.tr != nil {
		c.tr.Abort()
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
