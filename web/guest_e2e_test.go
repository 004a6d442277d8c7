package web_test

// The browser test of guests and the leave grace (e2e/guest.mjs): tabs of
// one browser on a public community are one guest, a reload in one tab
// leaves the count in the others alone, and another browser is another
// guest, who leaves once, the grace after its tab closed.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/web"
)

// guestGrace is the leave grace of the guest browser test: longer than a
// page reload takes on a loaded machine, short enough to wait out.
const guestGrace = 3 * time.Second

// startGuestGateway is a dev-mode node on the memory bus serving the
// embedded page, with a leave grace and one public community.
func startGuestGateway(t *testing.T, public string) *httptest.Server {
	t.Helper()
	bus := memory.New(memory.Options{ReapInterval: 50 * time.Millisecond})
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(e2eSecret)})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	srv := api.New(api.Options{
		Bus: bus, Verifier: v, APIKey: hex.EncodeToString(key),
		PresenceTTL: 10 * time.Second, DashboardInterval: 5 * time.Second,
		LeaveGrace:        guestGrace,
		PublicCommunities: []string{public},
		Dev:               true, DevSecret: []byte(e2eSecret),
		Web: web.FS(),
	})
	ts := httptest.NewServer(srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	t.Cleanup(func() {
		srv.Drain()
		ts.CloseClientConnections()
		ts.Close()
		cancel()
		<-done
		srv.Close()
		bus.Close()
	})
	return ts
}

// TestBrowserGuests runs e2e/guest.mjs in headless Chromium: two tabs of one
// browser context (one cookie jar) as guests of a public community count 1;
// a reload in one (WebSocket to WebSocket, then to SSE) never moves the
// other's count; a second context is a second guest, whose leave comes
// once, after the grace; a community that is not public refuses guests.
func TestBrowserGuests(t *testing.T) {
	nodePath(t)
	requireNodeModules(t)
	chromium := chromiumPath(t)

	const (
		public  = "9e5e5e5e-0000-4000-8000-0000000009e5"
		private = "9e5e5e5e-0000-4000-8000-00000000a11e"
	)
	ts := startGuestGateway(t, public)
	out := filepath.Join("e2e", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"e2e/guest.mjs", "--chromium", chromium, "--base", ts.URL, "--out", out,
		"--community", public, "--private", private, "--grace-ms", strconv.FormatInt(guestGrace.Milliseconds(), 10)}
	if err := runNode(t, 120*time.Second, args...); err != nil {
		t.Fatalf("guest browser tests failed (screenshots in web/e2e/out): %v", err)
	}
}
