package auth

import (
	"net/http"
	"strings"
)

// SessionCookie is the name of the session cookie (docs/protocol.md, credentials).
const SessionCookie = "footfall_session"

// Subprotocol names that carry a token (docs/protocol.md, credentials).
const (
	// SubprotocolBearer is offered as ["bearer", "<jwt>"].
	SubprotocolBearer = "bearer"
	// SubprotocolAuthorization is the seed's ["Authorization", "Bearer <jwt>"].
	SubprotocolAuthorization = "Authorization"
)

// Source is where a credential was found.
type Source int

// The credential sources, in the order Extract looks for them.
const (
	SourceNone Source = iota
	SourceHeader
	SourceSubprotocol
	SourceQuery
	SourceCookie
)

// String returns "none", "header", "subprotocol", "query" or "cookie"; it
// is meant for logs and metrics labels.
func (s Source) String() string {
	switch s {
	case SourceNone:
		return "none"
	case SourceHeader:
		return "header"
	case SourceSubprotocol:
		return "subprotocol"
	case SourceQuery:
		return "query"
	case SourceCookie:
		return "cookie"
	}
	return "unknown"
}

// Credential is what a request presented (docs/protocol.md, credentials). It holds
// secrets: never log it, log Source instead.
type Credential struct {
	// Source is where the deciding credential was found; SourceNone if
	// nowhere.
	Source Source
	// Token is the JWT, for SourceHeader, SourceSubprotocol and SourceQuery.
	Token string
	// SessionID is the value of the session cookie. It is filled whatever
	// the Source, so that an expired token can fall back to the session.
	SessionID string
	// Subprotocol is the protocol the server must select in its WebSocket
	// handshake answer (as the client spelled it: "bearer" or
	// "Authorization"); "" when the credential came from elsewhere.
	Subprotocol string
	// Malformed is true when the deciding credential is not a bearer token:
	// an Authorization header, or the seed's subprotocol pair, that is not
	// "Bearer <token>". Resolve answers CodeInvalid.
	Malformed bool
}

// Extract reads the credential of r. The first credential found decides:
//
//  1. the Authorization header, "Bearer <jwt>" with the scheme in any case;
//     any other value (another scheme, no token, several header lines) is
//     Malformed. An empty or blank header counts as absent.
//  2. the Sec-WebSocket-Protocol header offering "bearer" followed by the
//     jwt as the next protocol, or the seed's "Authorization" followed by
//     "Bearer <jwt>" (Malformed if that is not a bearer value), whichever
//     comes first. The header may be split across several lines and
//     comma-separated; spaces around items and empty items are ignored, and
//     the names match in any case. A name with nothing after it is ignored.
//  3. the first non-empty query parameter token; an empty one is absent.
//  4. the footfall_session cookie; an empty one is absent.
//
// Extract does not check the token, and never logs.
func Extract(r *http.Request) Credential {
	var c Credential
	if ck, err := r.Cookie(SessionCookie); err == nil && ck.Value != "" {
		c.SessionID = ck.Value
	}

	if vals := r.Header.Values("Authorization"); len(vals) > 1 || (len(vals) == 1 && strings.TrimSpace(vals[0]) != "") {
		c.Source = SourceHeader
		if len(vals) == 1 {
			c.Token, c.Malformed = parseBearer(vals[0])
		} else {
			c.Malformed = true // two Authorization lines: ambiguous
		}
		return c
	}

	if proto, token, malformed, ok := fromSubprotocols(r.Header.Values("Sec-WebSocket-Protocol")); ok {
		c.Source = SourceSubprotocol
		c.Subprotocol, c.Token, c.Malformed = proto, token, malformed
		return c
	}

	if r.URL != nil {
		for _, t := range r.URL.Query()["token"] {
			if t != "" {
				c.Source, c.Token = SourceQuery, t
				return c
			}
		}
	}

	if c.SessionID != "" {
		c.Source = SourceCookie
	}
	return c
}

// parseBearer parses "Bearer <token>". malformed is true for anything else.
func parseBearer(v string) (token string, malformed bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	rest = strings.TrimSpace(rest)
	if !ok || !strings.EqualFold(scheme, "Bearer") || rest == "" || strings.ContainsAny(rest, " \t") {
		return "", true
	}
	return rest, false
}

// fromSubprotocols finds a token among the offered WebSocket subprotocols.
// ok is false when none is offered.
func fromSubprotocols(lines []string) (proto, token string, malformed, ok bool) {
	var offered []string
	for _, line := range lines {
		for p := range strings.SplitSeq(line, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offered = append(offered, p)
			}
		}
	}
	for i := 0; i+1 < len(offered); i++ {
		switch p, next := offered[i], offered[i+1]; {
		case strings.EqualFold(p, SubprotocolBearer):
			return p, next, false, true
		case strings.EqualFold(p, SubprotocolAuthorization):
			token, malformed = parseBearer(next)
			return p, token, malformed, true
		}
	}
	return "", "", false, false
}
