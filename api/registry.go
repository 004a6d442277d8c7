package api

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// The node's open streams: the indexes the Server keeps of them (by
// session, by community, those the auth hook admitted), revocations, and the
// re-check of sessions after a bus outage.

func (s *Server) register(c *client) {
	switch {
	case s.index(c):
		// Revoked while this connection was being set up.
		c.closeWith(int(auth.CodeExpired), "session revoked")
	case s.draining.Load():
		// Admitted just before the node began to drain, and missed by
		// DrainOver (which took the clients after draining was set).
		goAway(c)
	}
}

// index adds c to the server's indexes; revoked says that c's session was
// revoked meanwhile.
func (s *Server) index(c *client) (revoked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sessionID != "" {
		_, revoked = s.revokedRecent[c.sessionID]
	}
	s.clients[c] = struct{}{}
	if c.hook != nil {
		s.hooked[c] = struct{}{}
	}
	n := s.perCommunity[c.community]
	if n == nil {
		n = new(streamCounts)
		s.perCommunity[c.community] = n
	}
	n.add(c, 1)
	s.metrics.opened(c)
	if sid := c.sessionID; sid != "" {
		m := s.sessions[sid]
		if m == nil {
			m = make(map[*client]struct{})
			s.sessions[sid] = m
		}
		m[c] = struct{}{}
	}
	return revoked
}

// streamCounts is a community's open streams on this node, by transport
// (WebSocket, SSE) and stream (visitors, dashboard).
type streamCounts [2][2]int

// add adds d to c's cell and returns the community's total.
func (n *streamCounts) add(c *client, d int) int {
	t, st := 0, 0
	if c.transport == "sse" {
		t = 1
	}
	if c.stream == streams.StreamDashboard {
		st = 1
	}
	n[t][st] += d
	return n[0][0] + n[0][1] + n[1][0] + n[1][1]
}

func (s *Server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[c]; !ok {
		return
	}
	delete(s.clients, c)
	if len(s.clients) == 0 && s.gone != nil {
		close(s.gone) // the last one: Shutdown waits no more
		s.gone = nil
	}
	delete(s.hooked, c)
	if n := s.perCommunity[c.community]; n != nil && n.add(c, -1) == 0 {
		delete(s.perCommunity, c.community)
	}
	if sid := c.sessionID; sid != "" {
		if m := s.sessions[sid]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(s.sessions, sid)
			}
		}
	}
}

// revoked closes every local connection of a revoked session. The bus calls
// it for revocations made on any node.
//
// A connection of that session may be in set-up right now, authenticated
// before the revocation but not yet registered: the revocation is
// remembered for revokedMemory, and register closes such a connection.
func (s *Server) revoked(sessionID string) {
	now := time.Now()
	s.mu.Lock()
	if len(s.revokedRecent) >= revokedRecentMax {
		for id, at := range s.revokedRecent {
			if now.Sub(at) > revokedMemory {
				delete(s.revokedRecent, id)
			}
		}
	}
	if len(s.revokedRecent) < revokedRecentMax {
		s.revokedRecent[sessionID] = now
	}
	s.mu.Unlock()
	s.closeSession(sessionID, "session revoked")
}

// revokedMemory is how long a revocation is remembered for connections in
// set-up (which takes a few round trips to the bus, bounded by their
// timeouts); revokedRecentMax bounds the memory of them.
const (
	revokedMemory    = time.Minute
	revokedRecentMax = 100_000
)

// closeSession closes every local connection of a session with 4004.
func (s *Server) closeSession(sessionID, reason string) {
	s.mu.Lock()
	var cs []*client
	for c := range s.sessions[sessionID] {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.closeWith(int(auth.CodeExpired), reason)
	}
}

// afterReconnect runs once the bus is back from an outage: every open
// stream gets a fresh snapshot (visitors may have come and gone meanwhile),
// and the sessions of open streams are re-checked, because revocations
// published while this node was cut off never reached it.
func (s *Server) afterReconnect(ctx context.Context) {
	// Other nodes may still be re-registering their visitors in a Valkey
	// that lost its data: read the state once they are done, so that
	// clients see the true count, not a partial one on the way.
	select {
	case <-ctx.Done():
		return
	case <-time.After(streams.ResyncSettle):
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s.hub.Refresh(rctx)
	cancel()
	s.recheckSessions(ctx)
}

// recheckConcurrency bounds the session lookups in flight after an outage:
// one round trip each, so a node with many session-backed streams is not
// checked one session after another.
const recheckConcurrency = 32

// recheckSessions closes the streams of sessions revoked or expired while
// the node was cut off from the bus.
func (s *Server) recheckSessions(ctx context.Context) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
		sem    = make(chan struct{}, recheckConcurrency)
	)
	for _, id := range ids {
		if failed.Load() || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := s.bus.Session(ctx, id)
			switch {
			case errors.Is(err, streams.ErrSessionRevoked):
				s.closeSession(id, "session revoked")
			case errors.Is(err, streams.ErrSessionExpired):
				s.closeSession(id, "session expired")
			case err != nil && !errors.Is(err, streams.ErrSessionNotFound):
				// Still unreachable: the next reconnect checks again.
				if failed.CompareAndSwap(false, true) {
					s.log.Warn("re-checking sessions after a bus outage", "err", err)
				}
			}
			// ErrSessionNotFound: a Valkey that restarted empty lost its
			// sessions. The stream was authorized when it opened and
			// still ends at the session's expiry; closing every
			// session-backed stream of the site for a data loss would be
			// worse.
		}()
	}
	wg.Wait()
}
