package web_test

// The browser test of guests and the leave grace (e2e/guest.mjs): tabs of
// one browser on a public community are one guest, a reload in one tab
// leaves the count in the others alone, and another browser is another
// guest, who leaves once, the grace after its tab closed.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// guestGateway is a dev-mode node on the memory bus serving the embedded
// page, with a leave grace and one public community, on two listeners: ts,
// and page, another origin of the same site (127.0.0.1, another port) that
// footfall allows, for the client's cross-origin SSE and REST.
type guestGateway struct {
	ts, page *httptest.Server

	mu sync.Mutex
	// crossOrigin records the cross-origin SSE and REST requests from page's
	// origin: "sse" or "rest", and whether they carried footfall_vid.
	crossOrigin []crossOriginRequest
}

type crossOriginRequest struct {
	kind   string
	cookie bool
}

func startGuestGateway(t *testing.T, public string) *guestGateway {
	t.Helper()
	g := &guestGateway{ts: httptest.NewUnstartedServer(nil), page: httptest.NewUnstartedServer(nil)}
	origin := func(s *httptest.Server) string { return "http://" + s.Listener.Addr().String() }
	bus := memory.New(memory.Options{ReapInterval: 50 * time.Millisecond})
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(e2eSecret)})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	srv := api.New(api.Options{
		Bus: bus, Verifier: v, APIKey: hex.EncodeToString(key),
		AllowedOrigins: []string{origin(g.ts), origin(g.page)},
		PresenceTTL:    10 * time.Second, DashboardInterval: 5 * time.Second,
		LeaveGrace:        guestGrace,
		PublicCommunities: []string{public},
		Dev:               true, DevSecret: []byte(e2eSecret),
		Web: web.FS(),
	})
	h := g.cors(origin(g.page), srv.Handler())
	g.ts.Config.Handler, g.page.Config.Handler = h, h
	g.ts.Start()
	g.page.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	t.Cleanup(func() {
		srv.Drain()
		for _, s := range []*httptest.Server{g.ts, g.page} {
			s.CloseClientConnections()
			s.Close()
		}
		cancel()
		<-done
		srv.Close()
		bus.Close()
	})
	return g
}

// cors records the cross-origin SSE and REST requests of origin and
// whether they carried footfall_vid; footfall's own CORS answers (api) let
// the page read them with its cookies.
func (g *guestGateway) cors(origin string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := ""
		switch {
		case strings.HasPrefix(r.URL.Path, "/sse/"):
			kind = "sse"
		case strings.HasPrefix(r.URL.Path, "/api/v1/") && r.Method == http.MethodGet:
			kind = "rest"
		}
		if kind != "" && r.Header.Get("Origin") == origin {
			_, err := r.Cookie(api.GuestCookie)
			g.mu.Lock()
			g.crossOrigin = append(g.crossOrigin, crossOriginRequest{kind: kind, cookie: err == nil})
			g.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// TestBrowserGuests runs e2e/guest.mjs in headless Chromium: two tabs of one
// browser context (one cookie jar) as guests of a public community count 1;
// a reload in one (WebSocket to WebSocket, then to SSE and back) never moves
// the other's count; the seed's hook and the client's SSE and polling from
// another origin of the site are the same guest; a second context is a
// second guest, whose leave comes once, after the grace; a community that is
// not public refuses guests.
func TestBrowserGuests(t *testing.T) {
	nodePath(t)
	requireNodeModules(t)
	chromium := chromiumPath(t)

	const (
		public  = "9e5e5e5e-0000-4000-8000-0000000009e5"
		private = "9e5e5e5e-0000-4000-8000-00000000a11e"
	)
	g := startGuestGateway(t, public)
	out := filepath.Join("e2e", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"e2e/guest.mjs", "--chromium", chromium, "--base", g.ts.URL, "--other-origin", g.page.URL, "--out", out,
		"--community", public, "--private", private, "--grace-ms", strconv.FormatInt(guestGrace.Milliseconds(), 10)}
	if err := runNode(t, 120*time.Second, args...); err != nil {
		t.Fatalf("guest browser tests failed (screenshots in web/e2e/out): %v", err)
	}

	// The cross-origin SSE and REST requests carried the guest's cookie,
	// except those of the client told not to send it.
	g.mu.Lock()
	defer g.mu.Unlock()
	with := map[string]int{}
	without := map[string]int{}
	for _, r := range g.crossOrigin {
		if r.cookie {
			with[r.kind]++
		} else {
			without[r.kind]++
		}
	}
	t.Logf("cross-origin requests with footfall_vid: %v; without: %v", with, without)
	if with["sse"] == 0 || with["rest"] == 0 {
		t.Errorf("cross-origin requests with footfall_vid: %v; want SSE and REST ones", with)
	}
	if without["sse"] != 1 || without["rest"] != 0 {
		t.Errorf("cross-origin requests without footfall_vid: %v; want only the one SSE stream of withCredentials: false", without)
	}
}
