package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// restCount is GET /api/v1/communities/{id}/visitors/count: the visitors
// stream's snapshot for polling clients. A member's poll (even one answered
// 304) is a presence heartbeat.
func (s *Server) restCount(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	who, err := s.identify(c.Request(), c.Response().Header(), c.RealIP(), auth.Extract(c.Request()), community, streams.StreamVisitors, "rest")
	if err != nil {
		return err
	}
	ident, fresh := who.ident, who.fresh
	// A guest's poll is a heartbeat only with a cookie footfall issued
	// before: a client that keeps no cookies would count anew each time.
	if !fresh {
		if err := s.polls.heartbeat(ctx, community, ident.Visitor()); err != nil {
			return err
		}
	}
	state, err := s.polls.state(ctx, community)
	if err != nil {
		return err
	}
	body, etag := s.polls.countSnapshot(community, state)
	return taggedResponse(c, body, etag)
}

// restDashboard is GET /api/v1/communities/{id}/visitor-dashboard.
func (s *Server) restDashboard(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := s.identify(c.Request(), c.Response().Header(), c.RealIP(), auth.Extract(c.Request()), community, streams.StreamDashboard, "rest"); err != nil {
		return err
	}
	state, err := s.polls.state(ctx, community)
	if err != nil {
		return err
	}
	return snapshotResponse(c, encodeDashboard(community, state.Count, state.Today, state.Peak, state.Changed))
}

// snapshotResponse answers body with a strong ETag (its hash: the
// timestamp is the time of the last change, so the tag is stable while
// nothing changes) and 304 to a matching If-None-Match.
func snapshotResponse(c echo.Context, body []byte) error {
	return taggedResponse(c, body, etagOf(body))
}

func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}

// taggedResponse answers body with its ETag, or 304.
//
// Every poll comes here, so the headers are stored under their canonical
// names with values shared by every response (net/http only reads them),
// rather than through Header.Set, which canonicalises and allocates.
func taggedResponse(c echo.Context, body []byte, etag string) error {
	h := c.Response().Header()
	h["Etag"] = []string{etag}
	h["Cache-Control"] = noCache
	if inm := c.Request().Header["If-None-Match"]; len(inm) > 0 && etagMatches(inm[0], etag) {
		return c.NoContent(http.StatusNotModified)
	}
	h["Content-Type"] = jsonContentType
	c.Response().WriteHeader(http.StatusOK)
	_, err := c.Response().Write(body)
	return err
}

var (
	noCache         = []string{"no-cache"}
	jsonContentType = []string{echo.MIMEApplicationJSON}
)

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// pollLeases keeps the node subscribed to the communities that REST
// clients poll, so that a poll is answered from state the node holds (no
// bus round trip), and throttles poll heartbeats: a visitor's poll touches
// the bus at most every third of the presence TTL.
type pollLeases struct {
	srv *Server

	mu     sync.Mutex
	leases map[string]*pollLease
	beats  map[string]time.Time // community + "\x00" + sub -> last touch
	// counts holds each polled community's count answer, encoded with its
	// ETag, while the count and its time stay the same: most polls then
	// encode and hash nothing.
	counts map[string]encodedCount
	// closed: the Server has shut down; a poll still in flight asks the
	// bus and takes no lease.
	closed bool
}

type encodedCount struct {
	count   int
	changed time.Time
	body    []byte
	etag    string
}

// countSnapshot returns the visitor_count answer to a poll of community in
// state, and its ETag.
func (p *pollLeases) countSnapshot(community string, state streams.Snapshot) ([]byte, string) {
	p.mu.Lock()
	e, ok := p.counts[community]
	p.mu.Unlock()
	if ok && e.count == state.Count && e.changed.Equal(state.Changed) {
		return e.body, e.etag
	}
	body := encodeCount(visitorCount{Type: "visitor_count", CommunityID: community, Count: state.Count, Timestamp: rfc3339(state.Changed)})
	e = encodedCount{count: state.Count, changed: state.Changed, body: body, etag: etagOf(body)}
	p.mu.Lock()
	p.counts[community] = e
	p.mu.Unlock()
	return e.body, e.etag
}

type pollLease struct {
	ready chan struct{}
	err   error
	leave func()
	last  time.Time // guarded by pollLeases.mu
}

// pollSubscriber holds a community for polls; it needs no events.
type pollSubscriber struct{}

func (pollSubscriber) Deliver(*streams.Event) {}

func newPollLeases(s *Server) *pollLeases {
	return &pollLeases{srv: s, leases: make(map[string]*pollLease), beats: make(map[string]time.Time), counts: make(map[string]encodedCount)}
}

// state returns the node's state of community, subscribing to it first if
// no one on this node does.
func (p *pollLeases) state(ctx context.Context, community string) (streams.Snapshot, error) {
	now := p.srv.now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return p.srv.bus.Snapshot(ctx, community)
	}
	l := p.leases[community]
	if l == nil {
		l = &pollLease{ready: make(chan struct{})}
		p.leases[community] = l
		p.mu.Unlock()
		leave, _, err := p.srv.hub.Join(ctx, community, pollSubscriber{})
		l.leave, l.err = leave, err
		close(l.ready)
		if err != nil {
			p.mu.Lock()
			delete(p.leases, community)
			p.mu.Unlock()
			return streams.Snapshot{}, err
		}
		p.mu.Lock()
	}
	l.last = now
	p.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return streams.Snapshot{}, ctx.Err()
	}
	if l.err != nil {
		return streams.Snapshot{}, l.err
	}
	state, ok := p.srv.hub.State(community)
	if !ok {
		return p.srv.bus.Snapshot(ctx, community)
	}
	return state, nil
}

// heartbeat makes sub present through a poll source, touching the bus only
// when the last touch is older than a third of the TTL.
func (p *pollLeases) heartbeat(ctx context.Context, community string, v streams.Visitor) error {
	ttl := p.srv.opts.PresenceTTL
	now := p.srv.now()
	key := community + "\x00" + v.Key()
	p.mu.Lock()
	last, ok := p.beats[key]
	if ok && now.Sub(last) < ttl/3 {
		p.mu.Unlock()
		return nil
	}
	p.beats[key] = now
	p.mu.Unlock()
	res, err := p.srv.bus.Touch(ctx, streams.Source{
		Community: community, Visitor: v, ID: "poll", TTL: ttl,
	})
	if err != nil {
		p.mu.Lock()
		delete(p.beats, key)
		p.mu.Unlock()
		return err
	}
	p.srv.hub.Observe(community, res, now)
	return nil
}

// expire drops leases not polled for two TTLs and forgets old heartbeats.
func (p *pollLeases) expire(now time.Time) {
	ttl := p.srv.opts.PresenceTTL
	var drop []*pollLease
	p.mu.Lock()
	for id, l := range p.leases {
		select {
		case <-l.ready:
		default:
			continue
		}
		if now.Sub(l.last) > 2*ttl {
			delete(p.leases, id)
			delete(p.counts, id)
			drop = append(drop, l)
		}
	}
	for k, t := range p.beats {
		if now.Sub(t) > ttl {
			delete(p.beats, k)
		}
	}
	p.mu.Unlock()
	for _, l := range drop {
		if l.leave != nil {
			l.leave()
		}
	}
}

// close releases every lease (shutdown).
func (p *pollLeases) close() {
	p.mu.Lock()
	leases := p.leases
	p.leases = make(map[string]*pollLease)
	p.closed = true
	p.mu.Unlock()
	for _, l := range leases {
		<-l.ready
		if l.leave != nil {
			l.leave()
		}
	}
}
