// Package auth decides who a footfall client is and what it may see
// (docs/protocol.md: credentials, outcomes and fine print).
//
// It has three steps, each usable alone:
//
//   - Extract reads the credential a request presents (Authorization
//     header, WebSocket subprotocols, ?token=, session cookie; first found
//     wins).
//   - Verifier.Resolve turns that credential into an Identity: it verifies a
//     JWT (Verifier.Verify) or looks a session up in a SessionStore.
//   - Identity.Allows says whether that identity may open a stream of a
//     community; Verifier.Authorize does Resolve and Allows in one call.
//
// Every authentication outcome that a client may see is an *Error carrying
// the close code of docs/protocol.md, outcomes. Anything else (a session store that
// is down) is a plain error that the caller maps to 5xx or close code 1011.
//
// The package knows nothing about echo or gorilla: it works on net/http
// requests so that WebSocket, SSE and REST share one implementation. It
// never logs, and no Error it returns contains a token or a session id.
package auth

import (
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/streams"
)

// Code is an authentication outcome of docs/protocol.md, outcomes: the WebSocket
// close code, also sent as "code" in the JSON body of an SSE or REST error.
type Code int

// The authentication outcomes of docs/protocol.md, outcomes.
const (
	// CodeMissing: the request presented no credential (HTTP 401).
	CodeMissing Code = 4001
	// CodeInvalid: a malformed credential, a bad signature, a wrong
	// alg/aud/iss, a token without sub or not valid yet, or an unknown
	// session (HTTP 401).
	CodeInvalid Code = 4002
	// CodeForbidden: a valid credential that does not grant the stream
	// (HTTP 403).
	CodeForbidden Code = 4003
	// CodeExpired: an expired token without a live session, or an expired
	// or revoked session (HTTP 401).
	CodeExpired Code = 4004
)

// Slug returns the machine-readable error name of c, used as "error" in
// HTTP error bodies and as "code" of WebSocket error messages (docs/protocol.md,
// fine print, refreshing): "authentication_required" (4001),
// "invalid_token" (4002), "forbidden" (4003) and "expired" (4004). An
// unknown code gives "error".
func (c Code) Slug() string {
	switch c {
	case CodeMissing:
		return "authentication_required"
	case CodeInvalid:
		return "invalid_token"
	case CodeForbidden:
		return "forbidden"
	case CodeExpired:
		return "expired"
	}
	return "error"
}

// Error is an authentication outcome. Reason is safe to log and to show to
// the client: it never contains a token or a session id.
type Error struct {
	Code   Code
	Reason string
}

// Error returns "<slug> (<code>): <reason>".
func (e *Error) Error() string {
	return e.Code.Slug() + " (" + strconv.Itoa(int(e.Code)) + "): " + e.Reason
}

func fail(c Code, reason string) *Error { return &Error{Code: c, Reason: reason} }

// Role is what a user is in one community.
type Role string

// The roles of the communities claim (docs/protocol.md, credentials). RoleAdmin is
// also the value of the top-level "role" claim of a site admin.
const (
	RoleMember    Role = "member"
	RoleModerator Role = "moderator"
	RoleAdmin     Role = "admin"
)

// Valid reports whether r is one of the three known roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// rank orders the roles: a higher rank grants at least what a lower one
// does. Unknown roles rank 0 and grant nothing.
func (r Role) rank() int {
	switch r {
	case RoleMember:
		return 1
	case RoleModerator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Identity is an authenticated client.
type Identity struct {
	// Subject is the user: the JWT's sub or the session's user_id.
	Subject string
	// Communities maps lower-case community ids to the user's role there.
	Communities map[string]Role
	// Admin is true for a site admin (role "admin"), allowed everywhere.
	Admin bool
	// ExpiresAt is when the credential stops being valid.
	ExpiresAt time.Time
	// SessionID is non-empty when the identity came from a session cookie;
	// the caller closes the connection when that session is revoked.
	SessionID string
	// Anonymous marks an anonymous visitor: a token with "anon": true, or
	// a guest of a public community. It is the anonymous visitor named by
	// Subject, may open the visitors stream of its communities only, and
	// never a dashboard, whatever its roles (docs/protocol.md, anonymous
	// visitors).
	Anonymous bool
	// Guest marks an identity admitted without any credential on a public
	// community; Subject is the id its footfall_vid cookie carries.
	Guest bool
}

// Allows reports whether id may open stream s of community: a member,
// moderator or admin of the community may open its visitors stream, only a
// moderator or admin its dashboard, and a site admin may open everything.
// Allows does not look at ExpiresAt; a nil identity is allowed nothing.
func (id *Identity) Allows(community string, s streams.Stream) bool {
	if id == nil {
		return false
	}
	if id.Anonymous {
		// Any role of its communities opens the visitors stream; nothing
		// opens a dashboard, not even role "admin".
		return s == streams.StreamVisitors && id.Communities[strings.ToLower(community)].Valid()
	}
	if id.Admin {
		return s == streams.StreamVisitors || s == streams.StreamDashboard
	}
	// Callers pass a normalized id; lower-casing again is free when it is.
	role := id.Communities[strings.ToLower(community)]
	switch s {
	case streams.StreamVisitors:
		return role.rank() >= RoleMember.rank()
	case streams.StreamDashboard:
		return role.rank() >= RoleModerator.rank()
	}
	return false
}

// Visitor returns the presence visitor of id: the visitor named by the
// subject, authenticated unless id is Anonymous. An anonymous token's
// visitor is the service API's visitor_id of the same value with
// authenticated: false.
func (id *Identity) Visitor() streams.Visitor {
	return streams.Visitor{ID: id.Subject, Authenticated: !id.Anonymous}
}

// normalizeRoles returns in with lower-case keys and only known roles.
// When two keys differ only in case, the higher role wins, so the result
// does not depend on map order.
func normalizeRoles[R ~string](in map[string]R) map[string]Role {
	out := make(map[string]Role, len(in))
	for k, r := range in {
		role := Role(r)
		if !role.Valid() {
			continue
		}
		k = strings.ToLower(k)
		if old, ok := out[k]; !ok || role.rank() > old.rank() {
			out[k] = role
		}
	}
	return out
}
