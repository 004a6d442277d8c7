package api

import (
	"sync"
	"sync/atomic"

	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
)

// Shared encodings: the clients of a community on this node that send the
// same message share one encoding of it and one WebSocket frame.

// memo is a small cache that a community's local clients share, for the
// messages many of them send alike (the same coalesced count, framed once
// instead of once per client). It forgets everything when it grows past
// memoSize entries: entries are only worth keeping for a moment.
type memo struct {
	mu sync.Mutex
	m  map[any]any
}

const memoSize = 64

// get returns the value cached under key, building and caching it first if
// needed. key must be comparable. It is safe for concurrent use.
func (m *memo) get(key any, build func() any) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.m[key]; ok {
		return v
	}
	if m.m == nil || len(m.m) >= memoSize {
		m.m = make(map[any]any, memoSize)
	}
	v := build()
	m.m[key] = v
	return v
}

// shared is what the clients of one community on this node share: the memo
// of coalesced messages, and the frame of the event the Hub is fanning out
// to them (it hands the same *streams.Event to each).
type shared struct {
	refs int // guarded by Server.mu
	memo memo
	last atomic.Pointer[eventFrames]
}

// eventFrames is the frame cache of one fanned-out event.
type eventFrames struct {
	ev     *streams.Event
	frames transport.SharedFrame
}

// framesFor returns the frame cache that the clients e is fanned out to
// share; nil for an event without a message, or without a shared (tests).
// The first client of a fanout makes it; the others find it.
func (sh *shared) framesFor(e *streams.Event) *transport.SharedFrame {
	if sh == nil || e.Message == nil {
		return nil
	}
	if p := sh.last.Load(); p != nil && p.ev == e {
		return &p.frames
	}
	p := &eventFrames{ev: e}
	sh.last.Store(p)
	return &p.frames
}

// acquireShared returns community's shared encodings, made for its first
// client; release gives them back.
func (s *Server) acquireShared(community string) (sh *shared, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh = s.shared[community]
	if sh == nil {
		sh = new(shared)
		s.shared[community] = sh
	}
	sh.refs++
	return sh, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if sh.refs--; sh.refs == 0 && s.shared[community] == sh {
			delete(s.shared, community)
		}
	}
}
