package api

import (
	"context"
	"strconv"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/alarm"
	"github.com/footfall/footfall/streams"
)

// Connection set-up shared by WebSocket and SSE: the client of a stream, its
// subscription to the community and its presence (with the leave grace).

// newClient returns a client of one stream; the caller sets its transport.
func (s *Server) newClient(transport, community string, stream streams.Stream, ident *auth.Identity) *client {
	c := &client{
		env:       s.clientEnv,
		transport: transport,
		sent:      s.metrics.sent.WithLabelValues(transport),
		id:        s.connSeq.Add(1),
		community: community,
		stream:    stream,
		sessionID: ident.SessionID,
		ident:     ident,
	}
	c.alarm = alarm.New(c.ring)
	if stream == streams.StreamVisitors {
		c.visitor = ident.Visitor()
	}
	return c
}

// attach subscribes c to its community and, on the visitors stream, makes
// its visitor present. The returned cleanup undoes both.
func (s *Server) attach(ctx context.Context, c *client) (streams.Snapshot, func(), error) {
	// Before Join: the events fanned out to c share their frames with the
	// community's other clients from the first.
	sh, release := s.acquireShared(c.community)
	c.share = sh
	leave, snap, err := s.hub.Join(ctx, c.community, c)
	if err != nil {
		release()
		return snap, nil, err
	}
	var sourceID string
	if c.stream == streams.StreamVisitors {
		sourceID = s.nodeID + "-" + strconv.FormatUint(c.id, 10)
		res, err := s.bus.Touch(ctx, streams.Source{Community: c.community, Visitor: c.visitor, ID: sourceID})
		if err != nil {
			leave()
			release()
			return snap, nil, err
		}
		s.hub.Observe(c.community, res, s.now())
		if res.Seq >= snap.Seq {
			snap.Seq, snap.LastID, snap.Count, snap.Today = res.Seq, res.ID, res.Count, res.Today
		}
	}
	s.register(c)
	cleanup := func() {
		// Unregistered last: OpenClients counts the connection until its
		// presence is settled on the bus (shutdown waits for it).
		defer s.unregister(c)
		leave()
		release()
		if sourceID != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.mu.Lock()
			handover := c.handover
			c.mu.Unlock()
			// The source outlives the connection by the leave grace (by
			// the presence TTL when the node stops, at least the grace):
			// a reload, or a client moving to another node, that comes
			// back within it is the same presence and nobody hears of it.
			// Turning the held source into one with a TTL costs the bus
			// what a leave does; the bus ends it, and publishes the
			// visitor_left if it was the last, when the time runs out,
			// whichever node is still up.
			linger := s.opts.LeaveGrace
			if handover {
				linger = max(linger, s.opts.PresenceTTL)
			}
			var res streams.PresenceResult
			var err error
			if linger > 0 {
				res, err = s.bus.Touch(ctx, streams.Source{Community: c.community, Visitor: c.visitor, ID: sourceID, TTL: linger})
			} else {
				res, err = s.bus.Leave(ctx, c.community, c.visitor, sourceID)
			}
			if err != nil {
				s.log.Warn("presence leave failed", "community", c.community, "err", err)
				return
			}
			s.hub.Observe(c.community, res, s.now())
		}
	}
	return snap, cleanup, nil
}
