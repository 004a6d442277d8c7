package api

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// Dev mode's endpoints (footfall --dev only): demo tokens and what the demo
// page needs to play the platform.

// devToken is POST /dev/token (dev mode only): mints a demo token.
func (s *Server) devToken(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var m struct {
		Sub         *string           `json:"sub"`
		Community   *string           `json:"community"`
		Role        *string           `json:"role"`
		Communities map[string]string `json:"communities"`
		Admin       *bool             `json:"admin"`
		TTLSeconds  *int64            `json:"ttl_seconds"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if field, msg, ok := decodeObject(body, &m); !ok {
			return errBadRequest(field, msg)
		}
	}
	communities, field, msg := normalizeCommunities(m.Communities)
	if field != "" {
		return errBadRequest(field, msg)
	}
	if m.Community != nil {
		cid, ok := streams.NormalizeCommunityID(*m.Community)
		if !ok {
			return errBadRequest("community", "community is not a valid id")
		}
		role := "member"
		if m.Role != nil {
			role = *m.Role
		}
		if _, ok := validRoles[role]; !ok {
			return errBadRequest("role", "role must be member, moderator or admin")
		}
		communities[cid] = role
	}
	sub := ""
	if m.Sub != nil {
		sub = *m.Sub
	}
	if sub == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		sub = "dev-" + base64.RawURLEncoding.EncodeToString(b[:])
	}
	ttl := time.Hour
	if m.TTLSeconds != nil {
		ttl = time.Duration(*m.TTLSeconds) * time.Second
		if *m.TTLSeconds <= 0 || ttl > maxSessionTTL {
			return errBadRequest("ttl_seconds", "ttl_seconds must be between 1 and 2592000")
		}
	}
	roles := make(map[string]auth.Role, len(communities))
	for id, r := range communities {
		roles[id] = validRoles[r]
	}
	token, exp, err := auth.Mint(s.opts.DevSecret, auth.Claims{
		Subject: sub, Communities: roles, Admin: m.Admin != nil && *m.Admin, TTL: ttl,
		Audience: s.opts.DevAudience, Issuer: s.opts.DevIssuer,
	}, s.now())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"token": token, "sub": sub, "expires_at": rfc3339(exp)})
}

// devInfo is GET /dev/info (dev mode only): what the demo page needs to
// simulate a platform, the service API key included. Dev mode is for a
// developer's own machine; it prints the same key at start.
func (s *Server) devInfo(c echo.Context) error {
	public := s.opts.PublicCommunities
	if public == nil {
		public = []string{}
	}
	return c.JSON(http.StatusOK, map[string]any{"dev": true, "api_key": s.opts.APIKey,
		"leave_grace": s.opts.LeaveGrace.String(), "public_communities": public})
}
