package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/http"
	"strings"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// GuestCookie is the cookie that names a guest (docs/protocol.md, guests).
const GuestCookie = "footfall_vid"

// guestCookieMaxAge is the cookie's Max-Age in seconds (a day).
const guestCookieMaxAge = 86400

// guestPolicy admits guests to the visitors streams and count of public
// communities, and issues and verifies their footfall_vid cookies.
//
// A cookie is "<id>.<mac>": 15 random bytes and the first 16 bytes of
// HMAC-SHA256(key, id), both base64url (43 characters). Every node of a
// cluster derives the same key from the same configuration, so a cookie
// issued by one node is valid on all; a value footfall did not issue fails
// the MAC and is replaced, so a client cannot choose its visitor id.
type guestPolicy struct {
	all    bool
	public map[string]bool
	key    []byte
	// trusted tells whether a TCP peer is a trusted proxy, whose
	// X-Forwarded-Proto: https makes the cookie Secure.
	trusted func(net.IP) bool
}

func newGuestPolicy(communities []string, key []byte, proxies []*net.IPNet) *guestPolicy {
	g := &guestPolicy{public: make(map[string]bool)}
	for _, c := range communities {
		c = strings.TrimSpace(c)
		if c == "*" {
			g.all = true
			continue
		}
		if id, ok := streams.NormalizeCommunityID(c); ok {
			g.public[id] = true
		}
	}
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	}
	g.key = key
	g.trusted = func(ip net.IP) bool {
		for _, n := range proxies {
			if n.Contains(ip) {
				return true
			}
		}
		return false
	}
	return g
}

// isPublic reports whether community (normalized) admits guests.
func (g *guestPolicy) isPublic(community string) bool {
	return g.all || g.public[community]
}

// enabled reports whether any community admits guests.
func (g *guestPolicy) enabled() bool { return g.all || len(g.public) > 0 }

// guestIDLen is the length of the id part of a cookie (15 bytes, base64url).
const guestIDLen = 20

func (g *guestPolicy) mac(id string) string {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte("footfall_vid:"))
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// verify returns the visitor id a cookie value names, or ok false when
// footfall did not issue it.
func (g *guestPolicy) verify(value string) (id string, ok bool) {
	id, mac, found := strings.Cut(value, ".")
	if !found || len(id) != guestIDLen || len(mac) != 22 {
		return "", false
	}
	if !hmac.Equal([]byte(mac), []byte(g.mac(id))) {
		return "", false
	}
	return id, true
}

// issue returns a new cookie value and the id it names.
func (g *guestPolicy) issue() (value, id string) {
	var b [15]byte
	_, _ = rand.Read(b[:])
	id = base64.RawURLEncoding.EncodeToString(b[:])
	return id + "." + g.mac(id), id
}

// visitorOf returns the guest id of r's footfall_vid cookie, if valid.
func (g *guestPolicy) visitorOf(r *http.Request) (id string, ok bool) {
	for _, ck := range r.Cookies() {
		if ck.Name == GuestCookie {
			if id, ok := g.verify(ck.Value); ok {
				return id, true
			}
		}
	}
	return "", false
}

// admit returns the identity of a guest of community: the visitor r's
// valid cookie names, or a new one whose cookie is set in h. fresh is true
// when the cookie was issued now.
func (g *guestPolicy) admit(r *http.Request, h http.Header, community string) (ident *auth.Identity, fresh bool) {
	id, ok := g.visitorOf(r)
	if !ok {
		var value string
		value, id = g.issue()
		h.Add("Set-Cookie", g.cookie(r, value))
		fresh = true
	}
	return &auth.Identity{
		Subject:     guestVisitorPrefix + id,
		Communities: map[string]auth.Role{community: auth.RoleMember},
		Anonymous:   true,
		Guest:       true,
	}, fresh
}

// guestVisitorPrefix starts every guest's visitor id, so that a guest
// never takes the anonymous id a platform gave one of its own visitors.
const guestVisitorPrefix = "guest-"

// cookie is the Set-Cookie value for value: Secure over TLS, or when a
// trusted proxy says the client used https.
func (g *guestPolicy) cookie(r *http.Request, value string) string {
	ck := &http.Cookie{
		Name:     GuestCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   guestCookieMaxAge,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   r.TLS != nil || g.behindHTTPS(r),
	}
	return ck.String()
}

func (g *guestPolicy) behindHTTPS(r *http.Request) bool {
	if !strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && g.trusted(ip)
}

// guest returns the identity of r as a guest of stream of community, or
// nil when the stream is a dashboard or the community is not public. A
// cookie issued to it is set in h (the response's headers, or the
// WebSocket upgrade's); fresh says so. Callers ask only for requests that
// carry no credential.
func (s *Server) guest(r *http.Request, h http.Header, community string, stream streams.Stream) (ident *auth.Identity, fresh bool) {
	if stream != streams.StreamVisitors || !s.guests.isPublic(community) {
		return nil, false
	}
	return s.guests.admit(r, h, community)
}

// identified is who a request is, as identify decides it.
type identified struct {
	ident *auth.Identity
	// fresh: a guest whose footfall_vid was issued with this answer.
	fresh bool
	// grant: the auth hook admitted it; an open stream is asked about
	// again when the verdict runs out.
	grant *hookGrant
}

// identify decides who r is for stream of community, in the credential
// order of docs/protocol.md: a footfall credential (token, then session
// cookie) decides when present, good or bad; otherwise the platform's auth
// hook for a request with the platform's cookies; otherwise a guest of a
// public community's visitors stream; otherwise 4001.
func (s *Server) identify(r *http.Request, h http.Header, clientIP string, cred auth.Credential, community string, stream streams.Stream, transport string) (identified, error) {
	if cred.Source != auth.SourceNone {
		ident, err := s.verifier.Authorize(r.Context(), cred, s.bus, community, stream)
		return identified{ident: ident}, err
	}
	return s.withoutCredential(r, h, clientIP, community, stream, transport)
}

// withoutCredential is identify for a request with no footfall credential.
func (s *Server) withoutCredential(r *http.Request, h http.Header, clientIP, community string, stream streams.Stream, transport string) (identified, error) {
	ident, grant, decided, err := s.viaHook(r, clientIP, community, stream, transport)
	if decided {
		return identified{ident: ident, grant: grant}, err
	}
	if ident, fresh := s.guest(r, h, community, stream); ident != nil {
		return identified{ident: ident, fresh: fresh}, nil
	}
	return identified{}, &auth.Error{Code: auth.CodeMissing, Reason: "no credential"}
}
