package streams

import (
	"context"
	"errors"
	"time"
)

// Session is a server-side credential created by the platform.
type Session struct {
	ID          string            `json:"id"`
	UserID      string            `json:"user_id"`
	Communities map[string]string `json:"communities,omitempty"`
	Role        string            `json:"role,omitempty"`
	ExpiresAt   time.Time         `json:"expires_at"`
}

// Errors of Sessions.
var (
	// ErrSessionNotFound: no session with that id ever existed (or it is
	// long forgotten).
	ErrSessionNotFound = errors.New("session not found")
	// ErrSessionRevoked: the session existed and was revoked.
	ErrSessionRevoked = errors.New("session revoked")
	// ErrSessionExpired: the session existed and has expired.
	ErrSessionExpired = errors.New("session expired")
)

// Sessions stores the sessions the platform creates and tells every node
// when one is revoked. Bus embeds it; each bus keeps its session code in
// its own sessions.go. (Code that only looks sessions up, such as
// api/auth's SessionStore, asks for the Session method alone.)
//
// Every method is safe for concurrent use.
type Sessions interface {
	// CreateSession stores s until s.ExpiresAt.
	CreateSession(ctx context.Context, s Session) error
	// Session returns a live session, or ErrSessionNotFound,
	// ErrSessionRevoked or ErrSessionExpired.
	Session(ctx context.Context, id string) (Session, error)
	// RevokeSession revokes a live session and tells every node's
	// revocation handlers; ErrSessionNotFound if there is none to revoke.
	RevokeSession(ctx context.Context, id string) error
	// OnRevoke calls h with the id of every session revoked on any node,
	// until cancel is called. h must not block.
	OnRevoke(h func(sessionID string)) (cancel func())
}
