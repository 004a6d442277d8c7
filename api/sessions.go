package api

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// The service API's sessions: created and revoked by the platform, presented
// by browsers as the footfall_session cookie.

var validRoles = map[string]auth.Role{"member": auth.RoleMember, "moderator": auth.RoleModerator, "admin": auth.RoleAdmin}

// createSession is POST /api/v1/sessions.
func (a *serviceAPI) createSession(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var m struct {
		UserID      *string           `json:"user_id"`
		Communities map[string]string `json:"communities"`
		Role        *string           `json:"role"`
		TTLSeconds  *int64            `json:"ttl_seconds"`
	}
	if field, msg, ok := decodeObject(body, &m); !ok {
		return errBadRequest(field, msg)
	}
	if m.UserID == nil || *m.UserID == "" {
		return errBadRequest("user_id", "user_id is required")
	}
	if len(*m.UserID) > maxIDLen {
		return errBadRequest("user_id", "user_id is longer than 256 bytes")
	}
	communities, field, msg := normalizeCommunities(m.Communities)
	if field != "" {
		return errBadRequest(field, msg)
	}
	role := ""
	if m.Role != nil && *m.Role != "" {
		if *m.Role != "admin" {
			return errBadRequest("role", "role must be \"admin\" or absent")
		}
		role = "admin"
	}
	ttl := time.Hour
	if m.TTLSeconds != nil {
		ttl = time.Duration(*m.TTLSeconds) * time.Second
		if *m.TTLSeconds <= 0 || ttl > maxSessionTTL {
			return errBadRequest("ttl_seconds", "ttl_seconds must be between 1 and 2592000")
		}
	}
	id, err := newSessionID()
	if err != nil {
		return err
	}
	sess := streams.Session{ID: id, UserID: *m.UserID, Communities: communities, Role: role, ExpiresAt: a.now().Add(ttl).UTC().Truncate(time.Second)}
	if err := a.bus.CreateSession(c.Request().Context(), sess); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]string{"session_id": id, "expires_at": rfc3339(sess.ExpiresAt)})
}

// normalizeCommunities validates a communities map (ids and roles) and
// lower-cases its ids.
func normalizeCommunities(in map[string]string) (map[string]string, string, string) {
	if len(in) > 1000 {
		return nil, "communities", "communities holds at most 1000 entries"
	}
	out := make(map[string]string, len(in))
	for id, role := range in {
		cid, ok := streams.NormalizeCommunityID(id)
		if !ok {
			return nil, "communities", "community id " + truncate(id, 70) + " is not a valid id"
		}
		if _, ok := validRoles[role]; !ok {
			return nil, "communities", "role must be member, moderator or admin"
		}
		out[cid] = role
	}
	return out, "", ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func newSessionID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// deleteSession is DELETE /api/v1/sessions/{session_id}.
func (a *serviceAPI) deleteSession(c echo.Context) error {
	err := a.bus.RevokeSession(c.Request().Context(), c.Param("session_id"))
	switch {
	case errors.Is(err, streams.ErrSessionNotFound):
		return errNotFound("no live session with that id")
	case err != nil:
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
