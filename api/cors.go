package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// CORS on the SSE and REST snapshot routes (docs/protocol.md, CORS), so
// that a page on another origin can use the browser client's fallbacks
// with the site's cookies: an allowed Origin (FOOTFALL_ALLOWED_ORIGINS, or
// the same host by default) is echoed with credentials allowed, except
// under "*", where it is echoed without; a refused Origin gets no CORS
// header (SSE then keeps its 403, REST answers as usual). Every answer
// varies on Origin.

// corsAllowHeaders are the request headers a page may send.
const corsAllowHeaders = "Authorization, Last-Event-ID, If-None-Match"

// corsOrigin returns the Origin to echo for r ("" for none), and whether
// credentials may go with it.
func (s *Server) corsOrigin(r *http.Request) (origin string, credentials bool) {
	origin = r.Header.Get("Origin")
	if origin == "" || strings.EqualFold(origin, "null") || !s.origins.check(r) {
		return "", false
	}
	return origin, !s.origins.any
}

// setCORS writes the CORS answer headers of r into h.
func (s *Server) setCORS(r *http.Request, h http.Header) (origin string) {
	h.Add("Vary", "Origin")
	origin, credentials := s.corsOrigin(r)
	if origin == "" {
		return ""
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	return origin
}

// cors adds the CORS headers to an SSE or REST answer.
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.setCORS(c.Request(), c.Response().Header()) != "" {
			c.Response().Header().Set("Access-Control-Expose-Headers", "ETag")
		}
		return next(c)
	}
}

// preflight answers a CORS preflight (OPTIONS) of an SSE or REST route:
// 204, with the allowed method and headers when the Origin is allowed.
func (s *Server) preflight(c echo.Context) error {
	h := c.Response().Header()
	if s.setCORS(c.Request(), h) != "" {
		h.Set("Access-Control-Allow-Methods", http.MethodGet)
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", "600")
	}
	return c.NoContent(http.StatusNoContent)
}

// originPolicy decides which browser origins may open streams.
type originPolicy struct {
	any     bool
	allowed map[string]bool // lower-case origins; nil = same host
}

func newOriginPolicy(list []string) originPolicy {
	var p originPolicy
	for _, o := range list {
		o = strings.TrimRight(strings.ToLower(strings.TrimSpace(o)), "/")
		if o == "" {
			continue
		}
		if o == "*" {
			p.any = true
			continue
		}
		if p.allowed == nil {
			p.allowed = make(map[string]bool)
		}
		p.allowed[o] = true
	}
	return p
}

// check applies docs/protocol.md, fine print: no Origin is allowed (not a browser),
// "null" is refused, otherwise the list (or the same host:port as Host).
func (p originPolicy) check(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	origin = strings.ToLower(origin)
	if origin == "null" {
		return false
	}
	if p.any {
		return true
	}
	if p.allowed != nil {
		return p.allowed[origin]
	}
	scheme, host, ok := strings.Cut(origin, "://")
	if !ok || scheme == "" || host == "" {
		return false
	}
	return host == strings.ToLower(r.Host)
}
