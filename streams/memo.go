package streams

import (
	"sync"
)

// Shared encodings: a community's clients that send the same message share
// one encoding of it.

// Memo is a small cache that a community's local subscribers share, for
// the messages many of them send alike (the same coalesced count, framed
// once instead of once per client). It forgets everything when it grows past
// memoSize entries: entries are only worth keeping for a moment.
type Memo struct {
	mu sync.Mutex
	m  map[any]any
}

const memoSize = 64

// Get returns the value cached under key, building and caching it first if
// needed. key must be comparable. It is safe for concurrent use.
func (m *Memo) Get(key any, build func() any) any {
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

// Memo returns the cache shared by community's local subscribers, or nil if
// the node holds no subscriber of it. A subscriber takes it after Join.
func (h *Hub) Memo(community string) *Memo {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.topics[community]; t != nil {
		return &t.memo
	}
	return nil
}
