package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// A Server's life: New, then Run (its background work) while the HTTP
// server serves Handler, then Shutdown, which does the whole of the node's
// own shutdown in one place (docs/protocol.md, Shutdown). The caller's
// order when the node stops:
//
//  1. Server.Shutdown: stop admitting, tell the streams to go over
//     Options.DrainSpread, wait until they have gone, stop Run, release
//     what the Server holds;
//  2. http.Server.Shutdown: the REST requests in flight finish (the
//     streams have gone already: they are hijacked and not its own);
//  3. then whatever uses the bus (the webhook engine), then the bus.

// Run does the server's periodic work (the dashboard push, expiring poll
// leases, re-asking the auth hook) and its work after a bus outage, until
// ctx ends or Shutdown stops it.
func (s *Server) Run(ctx context.Context) {
	s.runMu.Lock()
	if s.stop.Err() != nil { // Shutdown came first
		s.runMu.Unlock()
		return
	}
	s.runs.Add(1)
	s.runMu.Unlock()
	defer s.runs.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	unhook := context.AfterFunc(s.stop, cancel)
	defer unhook()

	t := time.NewTicker(s.opts.DashboardInterval)
	defer t.Stop()
	var hookTick <-chan time.Time
	if s.hook != nil {
		ht := time.NewTicker(s.opts.Timings.HookRecheck)
		defer ht.Stop()
		hookTick = ht.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hookTick:
			s.recheckHooked(ctx)
		case <-s.reconnected:
			s.afterReconnect(ctx)
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s.hub.Refresh(rctx)
			cancel()
			s.polls.expire(s.now())
			s.ipLimits.prune(time.Now())
		}
	}
}

// Shutdown stops the node (docs/protocol.md, Shutdown), in this order:
//
//  1. it stops admitting: /readyz answers 503, and new streams 503 with
//     Retry-After;
//  2. it tells the open streams to go (WebSocket 1001, SSE shutdown event,
//     their visitors kept present for the presence TTL) in evenly spaced
//     batches over Options.DrainSpread;
//  3. it waits until every stream has ended and settled its presence on
//     the bus: the last one to go wakes it;
//  4. it stops Run and releases what the Server holds (its bus
//     subscriptions, polled communities, the hangup watcher).
//
// If ctx ends first, the rest are told at once, the streams still open are
// cut, step 4 runs all the same, and Shutdown returns ctx.Err(). The HTTP
// server is the caller's: shut it down after Shutdown returns. Calling
// Shutdown again waits for the streams again and releases nothing twice.
func (s *Server) Shutdown(ctx context.Context) error {
	s.DrainOver(ctx, s.opts.DrainSpread)
	err := s.waitClients(ctx)
	if err != nil {
		s.cutClients()
	}
	s.released.Do(s.release)
	return err
}

// Drain starts shutdown: /readyz answers 503, new streams are refused, and
// every open stream is told to go at once (WebSockets close with 1001).
// Shutdown does this and the rest.
func (s *Server) Drain() { s.DrainOver(context.Background(), 0) }

// DrainOver starts shutdown like Drain, but tells the open streams to go
// spread evenly over spread, so that a rolling deploy does not send every
// client of the node to the other nodes in the same second. It returns once
// the last one is told, or when ctx ends (the rest are then told at once).
// A stream that registers while the node drains is told at once
// (register).
func (s *Server) DrainOver(ctx context.Context, spread time.Duration) {
	s.draining.Store(true)
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	if spread <= 0 || len(cs) < 2 {
		for _, c := range cs {
			goAway(c)
		}
		return
	}
	// Evenly spaced batches, at most one every drainTick: the streams of
	// one batch go together.
	batches := min(len(cs), max(int(spread/drainTick), 1))
	per := (len(cs) + batches - 1) / batches
	t := time.NewTicker(spread / time.Duration(batches))
	defer t.Stop()
	for i := 0; i < len(cs); i += per {
		if i > 0 {
			select {
			case <-ctx.Done():
				per = len(cs) // the rest at once
			case <-t.C:
			}
		}
		for _, c := range cs[i:min(i+per, len(cs))] {
			goAway(c)
		}
	}
}

// drainTick is the shortest interval between DrainOver's batches.
const drainTick = 20 * time.Millisecond

// goAway tells c that the node stops (1001, or the SSE shutdown event).
func goAway(c *client) {
	c.mu.Lock()
	// The visitor's presence outlives the connection by the presence TTL,
	// so that a client reconnecting to another node causes no leave/join
	// flicker.
	c.handover = true
	c.mu.Unlock()
	c.closeWith(closeGoingAway, "server shutting down")
}

// waitClients returns once no stream is open (unregister wakes it), or
// ctx.Err() when ctx ends first.
func (s *Server) waitClients(ctx context.Context) error {
	s.mu.Lock()
	if len(s.clients) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.gone == nil {
		s.gone = make(chan struct{})
	}
	gone := s.gone
	s.mu.Unlock()
	select {
	case <-gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cutClients ends the streams still open without waiting for their peers:
// their connections are closed (a WebSocket's) or their writes fail at once
// (an SSE stream's).
func (s *Server) cutClients() {
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.fail(nil)
		if sh, ok := c.tr.(interface{ Shut() }); ok {
			sh.Shut()
		}
	}
}

// Close stops Run and releases what the Server holds, without telling the
// streams to go or waiting for them: Shutdown does all of it and is the
// way to stop a node; Close is for callers that drain and wait themselves.
// After Shutdown it does nothing.
func (s *Server) Close() { s.released.Do(s.release) }

// release stops Run and lets go of what the Server holds: its bus
// subscriptions (revocations, reconnects, polled communities) and the
// hangup watcher.
func (s *Server) release() {
	s.runMu.Lock()
	s.stopAll()
	s.runMu.Unlock()
	s.runs.Wait()
	s.stopRevoke()
	s.stopReconnect()
	s.polls.close()
	s.sse.Close()
}

// refuseWhileDraining answers a new stream 503 with a short Retry-After
// once the node is draining: accepted now, it would be cut at once without
// a goodbye; refused, the client goes to another node.
func (s *Server) refuseWhileDraining(c echo.Context) error {
	if !s.draining.Load() {
		return nil
	}
	c.Response().Header().Set("Retry-After", "1")
	return &httpError{Status: http.StatusServiceUnavailable, Slug: "shutting_down", Message: "the node is shutting down; connect again"}
}

// closeGoingAway is the close code of a node that stops (1001).
const closeGoingAway = 1001

// OpenClients returns the number of open streams on this node.
func (s *Server) OpenClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}
