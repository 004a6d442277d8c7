package auth

import (
	"context"
	"errors"

	"github.com/footfall/footfall/streams"
)

// maxSessionIDLen bounds the session ids Resolve looks up: a longer cookie
// is an unknown session without a trip to the store.
const maxSessionIDLen = 256

// SessionStore is what Resolve needs from the bus; streams.Bus satisfies
// it.
type SessionStore interface {
	// Session returns a live session, or streams.ErrSessionNotFound,
	// streams.ErrSessionRevoked or streams.ErrSessionExpired.
	Session(ctx context.Context, id string) (streams.Session, error)
}

var _ SessionStore = streams.Bus(nil)

// Resolve turns c into an identity, applying the credential precedence of
// docs/protocol.md, fine print: the credential c.Source names decides, except that a
// correctly signed but expired JWT falls back to a live session cookie.
//
//   - no credential: CodeMissing;
//   - a Malformed credential: CodeInvalid;
//   - a token: as Verify; when it is signed but expired and the session
//     cookie names a live session, the session's identity; when that
//     session is unknown, revoked or expired, the token's CodeExpired;
//   - a session cookie: the session's identity; CodeInvalid for a session
//     that never existed, CodeExpired for a revoked or expired one.
//
// Any other error of store is returned as it is (not an *Error): the caller
// maps it to 5xx or close code 1011. Resolve returns a nil identity with
// every error. A nil store is only consulted when a session is needed, and
// is then an error.
func (v *Verifier) Resolve(ctx context.Context, c Credential, store SessionStore) (*Identity, error) {
	switch c.Source {
	case SourceHeader, SourceSubprotocol, SourceQuery:
		if c.Malformed {
			return nil, fail(CodeInvalid, "credential is not a bearer token")
		}
		id, err := v.Verify(c.Token)
		if err == nil {
			return id, nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.Code == CodeExpired && c.SessionID != "" {
			sid, serr := v.session(ctx, c.SessionID, store)
			if serr == nil {
				return sid, nil
			}
			if !errors.As(serr, new(*Error)) {
				return nil, serr // the store failed: we cannot tell
			}
			// No live session: the expired token's outcome stands.
		}
		return nil, err
	case SourceCookie:
		return v.session(ctx, c.SessionID, store)
	}
	return nil, fail(CodeMissing, "no credential")
}

// errNoStore is returned when a session must be looked up without a store.
var errNoStore = errors.New("auth: no session store")

// session looks up the session id and returns its identity.
func (v *Verifier) session(ctx context.Context, id string, store SessionStore) (*Identity, error) {
	if id == "" || len(id) > maxSessionIDLen {
		return nil, fail(CodeInvalid, "unknown session")
	}
	if store == nil {
		return nil, errNoStore
	}
	s, err := store.Session(ctx, id)
	switch {
	case errors.Is(err, streams.ErrSessionNotFound):
		return nil, fail(CodeInvalid, "unknown session")
	case errors.Is(err, streams.ErrSessionRevoked):
		return nil, fail(CodeExpired, "session revoked")
	case errors.Is(err, streams.ErrSessionExpired):
		return nil, fail(CodeExpired, "session expired")
	case err != nil:
		return nil, err
	}
	if s.UserID == "" {
		return nil, fail(CodeInvalid, "session has no user")
	}
	// The store only returns live sessions, but one may expire between its
	// check and ours.
	if !s.ExpiresAt.IsZero() && !v.now().Before(s.ExpiresAt) {
		return nil, fail(CodeExpired, "session expired")
	}
	return &Identity{
		Subject:     s.UserID,
		Communities: normalizeRoles(s.Communities),
		Admin:       s.Role == string(RoleAdmin),
		ExpiresAt:   s.ExpiresAt,
		SessionID:   id,
	}, nil
}

// Authorize resolves c (see Resolve) and checks that the identity may open
// stream s of community (see Identity.Allows); when it may not, the error
// is an *Error with CodeForbidden. It returns a nil identity with every
// error.
func (v *Verifier) Authorize(ctx context.Context, c Credential, store SessionStore, community string, s streams.Stream) (*Identity, error) {
	id, err := v.Resolve(ctx, c, store)
	if err != nil {
		return nil, err
	}
	if err := id.Permit(community, s); err != nil {
		return nil, err
	}
	return id, nil
}

// Permit is Allows as an outcome: nil when id may open stream s of
// community, else an *Error with CodeForbidden saying why.
func (id *Identity) Permit(community string, s streams.Stream) error {
	switch {
	case id.Allows(community, s):
		return nil
	case s == streams.StreamDashboard && id != nil && id.Anonymous:
		return fail(CodeForbidden, "an anonymous visitor cannot open a dashboard")
	case s == streams.StreamDashboard:
		return fail(CodeForbidden, "the dashboard needs a moderator or admin role")
	}
	return fail(CodeForbidden, "not a member of this community")
}
