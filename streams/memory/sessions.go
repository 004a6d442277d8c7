package memory

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Sessions

type sessionRecord struct {
	s       streams.Session
	revoked bool
	forget  time.Time // when the record may be dropped
}

func cloneSession(s streams.Session) streams.Session {
	s.Communities = maps.Clone(s.Communities)
	return s
}

// CreateSession stores s. An id already in use (even by a revoked or
// expired session still remembered) is an error: a revoked session must
// not come back to life.
func (b *Bus) CreateSession(ctx context.Context, s streams.Session) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if s.ID == "" {
		return errors.New("memory: create session: empty id")
	}
	if s.ExpiresAt.IsZero() {
		return errors.New("memory: create session: zero expiry")
	}
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	if _, ok := b.sessions[s.ID]; ok {
		return errors.New("memory: create session: id already in use")
	}
	r := &sessionRecord{s: cloneSession(s), forget: s.ExpiresAt.Add(sessionRetention)}
	b.sessions[s.ID] = r
	b.schedulePrune(r.forget)
	return nil
}

func (b *Bus) schedulePrune(at time.Time) {
	if b.sessPruneAt.IsZero() || at.Before(b.sessPruneAt) {
		b.sessPruneAt = at
	}
}

// Session returns the live session id.
func (b *Bus) Session(ctx context.Context, id string) (streams.Session, error) {
	if err := b.check(ctx); err != nil {
		return streams.Session{}, err
	}
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	r := b.sessions[id]
	switch {
	case r == nil:
		return streams.Session{}, streams.ErrSessionNotFound
	case r.revoked:
		return streams.Session{}, streams.ErrSessionRevoked
	case !b.now().Before(r.s.ExpiresAt):
		return streams.Session{}, streams.ErrSessionExpired
	}
	return cloneSession(r.s), nil
}

// RevokeSession revokes the live session id and tells the OnRevoke
// handlers. A session that never existed, is forgotten, already revoked or
// expired has nothing left to revoke: ErrSessionNotFound.
func (b *Bus) RevokeSession(ctx context.Context, id string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	r := b.sessions[id]
	now := b.now()
	if r == nil || r.revoked || !now.Before(r.s.ExpiresAt) {
		return streams.ErrSessionNotFound
	}
	// The record stays until sessionRetention after the expiry (later
	// than now: the session was live), as set by CreateSession.
	r.revoked = true
	b.queue.Push(item{revoked: id})
	return nil
}

// pruneSessions forgets the records whose retention ran out.
func (b *Bus) pruneSessions(now time.Time) {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	if b.sessPruneAt.IsZero() || now.Before(b.sessPruneAt) {
		return
	}
	b.sessPruneAt = time.Time{}
	for id, r := range b.sessions {
		if !now.Before(r.forget) {
			delete(b.sessions, id)
		} else {
			b.schedulePrune(r.forget)
		}
	}
}

// OnRevoke calls h, from the delivery goroutine, with the id of every
// session revoked from now on, until cancel is called. Cancel is
// idempotent and waits for a running call of h (so h must not call it).
// After Close it returns a no-op cancel.
func (b *Bus) OnRevoke(h func(sessionID string)) (cancel func()) {
	if b.closed.Load() || h == nil {
		return func() {}
	}
	return b.revokers.Add(h)
}
