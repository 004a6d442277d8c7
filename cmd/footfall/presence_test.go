package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

func TestPresenceConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
	}{
		{"negative grace", "FOOTFALL_LEAVE_GRACE", "-1s"},
		{"grace not a duration", "FOOTFALL_LEAVE_GRACE", "soon"},
		{"public community not an id", "FOOTFALL_PUBLIC_COMMUNITIES", "123e4567,lobby"},
		{"drain spread over the shutdown timeout", "FOOTFALL_DRAIN_SPREAD", "20s"},
		{"negative drain spread", "FOOTFALL_DRAIN_SPREAD", "-1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), nil, env(map[string]string{"FOOTFALL_JWT_SECRET": testSecret, tc.key: tc.value}), &out, &errOut)
			var ce *configError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("run with %s=%q = %v; want a configuration error naming it", tc.key, tc.value, err)
			}
		})
	}
}

func TestGuestKeyIsShared(t *testing.T) {
	a, b := guestKey([]byte(testSecret), "k"), guestKey([]byte(testSecret), "k")
	if !bytes.Equal(a, b) || len(a) != 32 {
		t.Fatalf("guestKey is not the same for the same secrets: %x, %x", a, b)
	}
	if bytes.Equal(a, guestKey([]byte(testSecret), "other")) || bytes.Equal(a, guestKey(nil, "k")) {
		t.Fatalf("guestKey does not depend on both secrets")
	}
	if guestKey(nil, "") != nil {
		t.Fatalf("guestKey(nil, \"\") = non-nil; want nil (a random key per node)")
	}
}

// Two real nodes (the whole program) on one Valkey with a public community
// and the default grace: a guest's cookie issued by node A is the same
// visitor on node B, and a guest reloading from A onto B is silent to a
// watcher.
func TestGuestsAcrossNodes(t *testing.T) {
	const secret, key = "guest-nodes-secret-0123456789abcdef", "guest-nodes-api-key-0123456789abcde"
	const community = "123e4567-e89b-12d3-a456-426614174000"
	srv := valkeytest.Start(t)
	environ := map[string]string{
		"FOOTFALL_JWT_SECRET": secret, "FOOTFALL_API_KEY": key,
		"FOOTFALL_VALKEY_URL": srv.URL(), "FOOTFALL_PUBLIC_COMMUNITIES": community,
	}
	a, _ := startMain(t, nil, environ)
	b, _ := startMain(t, nil, environ)
	wsURL := func(base string) string {
		return "ws" + strings.TrimPrefix(base, "http") + "/ws/communities/" + community + "/visitors/"
	}
	read := func(c *websocket.Conn, d time.Duration) (map[string]any, error) {
		_ = c.SetReadDeadline(time.Now().Add(d))
		var m map[string]any
		err := c.ReadJSON(&m)
		return m, err
	}
	tok, _, err := auth.Mint([]byte(secret), auth.Claims{Subject: "watcher", TTL: time.Hour,
		Communities: map[string]auth.Role{community: auth.RoleMember}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	watcher, _, err := (&websocket.Dialer{Subprotocols: []string{"bearer", tok}}).Dial(wsURL(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	if m, err := read(watcher, 5*time.Second); err != nil || m["count"] != 1.0 {
		t.Fatalf("watcher's first message = %v, %v; want count 1", m, err)
	}

	guest, resp, err := websocket.DefaultDialer.Dial(wsURL(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == api.GuestCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("guest upgrade on node A set no %s cookie", api.GuestCookie)
	}
	if m, err := read(guest, 5*time.Second); err != nil || m["count"] != 2.0 {
		t.Fatalf("guest's first message = %v, %v; want count 2", m, err)
	}
	if m, err := read(watcher, 5*time.Second); err != nil || m["type"] != "visitor_joined" {
		t.Fatalf("watcher = %v, %v; want visitor_joined", m, err)
	}
	// The reload lands on node B, with the cookie: the same guest.
	guest.Close()
	hdr := http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}}
	again, resp, err := websocket.DefaultDialer.Dial(wsURL(b), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, c := range resp.Cookies() {
		if c.Name == api.GuestCookie {
			t.Fatalf("node B replaced node A's cookie: the nodes do not share the guest key")
		}
	}
	if m, err := read(again, 5*time.Second); err != nil || m["count"] != 2.0 {
		t.Fatalf("guest back on node B: %v, %v; want count 2", m, err)
	}
	// Nothing reaches the watcher while the default grace (5s) runs out
	// for the old connection.
	if m, err := read(watcher, 6*time.Second); err == nil {
		t.Fatalf("watcher got %v during the reload; want nothing", m)
	}
}

// TestDrainSpreadDefault: unset, the drain spread is half the shutdown
// timeout, at most 5 s, so that a short shutdown timeout alone still
// starts; set, it must stay under the timeout.
func TestDrainSpreadDefault(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{map[string]string{}, 5 * time.Second},
		{map[string]string{"FOOTFALL_SHUTDOWN_TIMEOUT": "4s"}, 2 * time.Second},
		{map[string]string{"FOOTFALL_SHUTDOWN_TIMEOUT": "4s", "FOOTFALL_DRAIN_SPREAD": "0s"}, 0},
		{map[string]string{"FOOTFALL_DRAIN_SPREAD": "7s"}, 7 * time.Second},
	} {
		tc.env["FOOTFALL_JWT_SECRET"] = testSecret
		cfg, err := parseConfig(nil, env(tc.env), io.Discard)
		if err != nil || cfg.DrainSpread != tc.want {
			t.Errorf("parseConfig(%v).DrainSpread = %v, %v; want %v", tc.env, cfg.DrainSpread, err, tc.want)
		}
	}
}
