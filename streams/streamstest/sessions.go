package streamstest

import (
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Sessions

func checkSession(t testing.TB, got, want streams.Session) {
	t.Helper()
	if got.ID != want.ID || got.UserID != want.UserID || got.Role != want.Role ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !maps.Equal(got.Communities, want.Communities) {
		t.Errorf("Session(%s) = %+v; want %+v", want.ID, got, want)
	}
}

func (s *suite) testSessionCreateGet(t *testing.T) {
	bus := s.bus(t)
	sess := streams.Session{
		ID:          newID("sess-"),
		UserID:      "user-1",
		Communities: map[string]string{newCommunity(): "member", newCommunity(): "moderator"},
		Role:        "admin",
		ExpiresAt:   time.Now().Add(time.Hour).Truncate(time.Second).UTC(),
	}
	if err := bus.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession error = %v; want nil", err)
	}
	got, err := bus.Session(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("Session(%s) error = %v; want nil", sess.ID, err)
	}
	checkSession(t, got, sess)
	// The caller owns what it gets: changing it changes nothing stored.
	for k := range got.Communities {
		got.Communities[k] = "admin"
	}
	again, err := bus.Session(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("Session(%s) error = %v; want nil", sess.ID, err)
	}
	checkSession(t, again, sess)
}

func (s *suite) testSessionNotFound(t *testing.T) {
	bus := s.bus(t)
	id := newID("missing-")
	if _, err := bus.Session(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("Session(unknown) error = %v; want %v", err, streams.ErrSessionNotFound)
	}
	if err := bus.RevokeSession(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(unknown) error = %v; want %v", err, streams.ErrSessionNotFound)
	}
}

func (s *suite) testSessionExpire(t *testing.T) {
	bus := s.bus(t)
	sess := streams.Session{ID: newID("sess-"), UserID: "user-2", ExpiresAt: time.Now().Add(2 * shortTTL).Truncate(time.Millisecond)}
	if err := bus.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession error = %v; want nil", err)
	}
	if _, err := bus.Session(t.Context(), sess.ID); err != nil {
		t.Fatalf("Session(%s) before expiry error = %v; want nil", sess.ID, err)
	}
	eventually(t, func() string {
		_, err := bus.Session(t.Context(), sess.ID)
		switch {
		case errors.Is(err, streams.ErrSessionExpired):
			return ""
		case err != nil:
			t.Fatalf("Session(%s) error = %v; want nil, then %v", sess.ID, err, streams.ErrSessionExpired)
		}
		return fmt.Sprintf("Session(%s) error = nil; want %v", sess.ID, streams.ErrSessionExpired)
	})
	if time.Now().Before(sess.ExpiresAt) {
		t.Errorf("Session(%s) expired before its ExpiresAt", sess.ID)
	}
	if err := bus.RevokeSession(t.Context(), sess.ID); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(expired) error = %v; want %v (nothing to revoke)", err, streams.ErrSessionNotFound)
	}
	if _, err := bus.Session(t.Context(), sess.ID); !errors.Is(err, streams.ErrSessionExpired) {
		t.Errorf("Session(%s) after RevokeSession(expired) error = %v; want %v", sess.ID, err, streams.ErrSessionExpired)
	}
}

func (s *suite) testSessionRevoke(t *testing.T) {
	bus := s.bus(t)
	type handler struct {
		ids    chan string
		cancel func()
	}
	var hs []handler
	for range 2 {
		ids := make(chan string, 10)
		cancel := bus.OnRevoke(func(id string) {
			select {
			case ids <- id:
			default:
			}
		})
		t.Cleanup(cancel)
		hs = append(hs, handler{ids, cancel})
	}
	create := func() string {
		t.Helper()
		sess := streams.Session{ID: newID("sess-"), UserID: "user-3", ExpiresAt: time.Now().Add(time.Hour)}
		if err := bus.CreateSession(t.Context(), sess); err != nil {
			t.Fatalf("CreateSession error = %v; want nil", err)
		}
		return sess.ID
	}
	expect := func(h handler, want string) {
		t.Helper()
		select {
		case got := <-h.ids:
			if got != want {
				t.Errorf("OnRevoke handler got %q; want %q", got, want)
			}
		case <-time.After(waitTimeout):
			t.Errorf("OnRevoke handler not called within %v; want %q", waitTimeout, want)
		}
	}

	id := create()
	if err := bus.RevokeSession(t.Context(), id); err != nil {
		t.Fatalf("RevokeSession(%s) error = %v; want nil", id, err)
	}
	expect(hs[0], id)
	expect(hs[1], id)
	if _, err := bus.Session(t.Context(), id); !errors.Is(err, streams.ErrSessionRevoked) {
		t.Errorf("Session(revoked) error = %v; want %v", err, streams.ErrSessionRevoked)
	}
	if err := bus.RevokeSession(t.Context(), id); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Errorf("RevokeSession(revoked) error = %v; want %v (nothing to revoke)", err, streams.ErrSessionNotFound)
	}

	hs[1].cancel()
	hs[1].cancel() // idempotent
	id2 := create()
	if err := bus.RevokeSession(t.Context(), id2); err != nil {
		t.Fatalf("RevokeSession(%s) error = %v; want nil", id2, err)
	}
	expect(hs[0], id2)
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-hs[0].ids:
		t.Errorf("OnRevoke handler got %q; want nothing more (revoking a revoked session notifies nobody)", got)
	case got := <-hs[1].ids:
		t.Errorf("cancelled OnRevoke handler got %q; want nothing", got)
	default:
	}
}
