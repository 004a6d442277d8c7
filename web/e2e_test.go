package web_test

// End-to-end tests of the browser client and the demo page, run by `go test`
// with Node.js: the client's unit tests (node --test), the page in Debian's
// headless Chromium driven by playwright-core (e2e/e2e.mjs), and a
// spec-following EventSource client (the npm `eventsource` package,
// e2e/eventsource.mjs) that must resume with Last-Event-ID by itself.
//
// They need node, web/node_modules (npm ci --prefix web) and, for the
// browser, chromium. Without them the tests skip, unless
// FOOTFALL_TEST_REQUIRE_BROWSER=1 (as in .ci/run), where they fail.
//
// FOOTFALL_UPDATE_SCREENSHOT=1 also writes docs/screenshot.png (the README's
// picture); every run writes web/e2e/out/page.png.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/internal/cutproxy"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/web"
)

const e2eSecret = "e2e-secret-0123456789abcdef"

// requireTool skips the test (or fails it under
// FOOTFALL_TEST_REQUIRE_BROWSER=1) with why.
func requireTool(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("FOOTFALL_TEST_REQUIRE_BROWSER") == "1" {
		t.Fatalf("%s (FOOTFALL_TEST_REQUIRE_BROWSER=1)", why)
	}
	t.Skipf("%s; set FOOTFALL_TEST_REQUIRE_BROWSER=1 to make this a failure", why)
}

func nodePath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		requireTool(t, "node is not installed: the browser client's tests need Node.js 20+")
	}
	return p
}

func requireNodeModules(t *testing.T) {
	t.Helper()
	for _, pkg := range []string{"playwright-core", "eventsource"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg, "package.json")); err != nil {
			requireTool(t, "web/node_modules/"+pkg+" is missing: run `npm ci --prefix web`")
		}
	}
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	requireTool(t, "chromium is not installed: `apt-get install chromium`")
	return ""
}

// e2eGateway is a dev-mode footfall node on the memory bus, serving the
// embedded page, on a real listener.
type e2eGateway struct {
	srv    *api.Server
	bus    *memory.Bus
	ts     *httptest.Server
	apiKey string
}

func startGateway(t *testing.T, wrap func(http.Handler) http.Handler) *e2eGateway {
	t.Helper()
	bus := memory.New(memory.Options{ReapInterval: 50 * time.Millisecond})
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(e2eSecret)})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	g := &e2eGateway{bus: bus, apiKey: hex.EncodeToString(key)}
	g.srv = api.New(api.Options{
		Bus: bus, Verifier: v, APIKey: g.apiKey,
		PresenceTTL: 5 * time.Second, DashboardInterval: 5 * time.Second,
		Dev: true, DevSecret: []byte(e2eSecret),
		Web: web.FS(),
	})
	var h http.Handler = g.srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	g.ts = httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.srv.Run(ctx) }()
	t.Cleanup(func() {
		g.srv.Drain()
		g.ts.CloseClientConnections()
		g.ts.Close()
		cancel()
		<-done
		g.srv.Close()
		bus.Close()
	})
	return g
}

// lineLog writes a command's output to the test log, line by line.
type lineLog struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.t.Log(l.prefix + strings.TrimRight(line, "\n"))
	}
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.t.Log(l.prefix + l.buf.String())
		l.buf.Reset()
	}
}

// node runs a Node.js command in web/ with a deadline; SIGTERM first, so
// that playwright closes its browser.
func runNode(t *testing.T, timeout time.Duration, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodePath(t), args...)
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	out := &lineLog{t: t, prefix: "node: "}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	if ctx.Err() != nil {
		return fmt.Errorf("node %s: no result within %v", strings.Join(args, " "), timeout)
	}
	return err
}

// TestClientUnit runs the browser client's unit tests (backoff, fallback
// ladder, transports on fakes, the React hook) with node's test runner.
func TestClientUnit(t *testing.T) {
	nodePath(t)
	if err := runNode(t, 60*time.Second, "--test", "--test-reporter=spec", "test/"); err != nil {
		t.Fatalf("node --test test/: %v", err)
	}
}

// TestBrowser runs e2e/e2e.mjs in headless Chromium against two listeners
// of one gateway: the plain one, and one that refuses WebSocket upgrades
// with 403 until POST /__e2e/allow-websocket.
func TestBrowser(t *testing.T) {
	nodePath(t)
	requireNodeModules(t)
	chromium := chromiumPath(t)

	g := startGateway(t, nil)
	var allowWS atomic.Bool
	blocked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/__e2e/allow-websocket" && r.Method == http.MethodPost {
			allowWS.Store(true)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !allowWS.Load() && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "WebSocket upgrades are refused here", http.StatusForbidden)
			return
		}
		g.ts.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		blocked.CloseClientConnections()
		blocked.Close()
	})

	out := filepath.Join("e2e", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"e2e/e2e.mjs", "--chromium", chromium, "--base", g.ts.URL, "--blocked", blocked.URL, "--out", out}
	docs := filepath.Join("..", "docs", "screenshot.png")
	if _, err := os.Stat(docs); os.Getenv("FOOTFALL_UPDATE_SCREENSHOT") == "1" || os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(docs), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--docs", docs)
	}
	if err := runNode(t, 80*time.Second, args...); err != nil {
		t.Fatalf("browser end-to-end tests failed (screenshots in web/e2e/out): %v", err)
	}
}

// esLine is one line of e2e/eventsource.mjs.
type esLine struct {
	Kind string         `json:"kind"`
	Type string         `json:"type"`
	ID   string         `json:"id"`
	Data map[string]any `json:"data"`
}

func (l esLine) count() int { f, _ := l.Data["count"].(float64); return int(f) }

// TestEventSourceResume: a spec-following EventSource client that loses its
// connection reconnects by itself with Last-Event-ID and gets exactly the
// events it missed, without a snapshot first (docs/protocol.md, fine print).
func TestEventSourceResume(t *testing.T) {
	node := nodePath(t)
	requireNodeModules(t)

	// Record each SSE request's Last-Event-ID; hold resuming requests until
	// the events to miss have happened.
	lastIDs := make(chan string, 16)
	gate := make(chan struct{})
	g := startGateway(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/sse/") {
				id := r.Header.Get("Last-Event-ID")
				select {
				case lastIDs <- id:
				default:
				}
				if id != "" {
					select {
					case <-gate:
					case <-r.Context().Done():
						return
					case <-time.After(15 * time.Second):
					}
				}
			}
			h.ServeHTTP(w, r)
		})
	})

	const community = "5e5e5e5e-0000-4000-8000-00000000e5e5"
	token, _, err := auth.Mint([]byte(e2eSecret), auth.Claims{
		Subject: "es-visitor", Communities: map[string]auth.Role{community: auth.RoleMember}, TTL: time.Hour,
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The client goes through a proxy that the test cuts: footfall hijacks
	// its streams, so the test server cannot close them itself.
	proxy, err := cutproxy.New(strings.TrimPrefix(g.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	url := "http://" + proxy.Addr() + "/sse/communities/" + community + "/visitors/?token=" + token

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e/eventsource.mjs", url)
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lineLog{t: t, prefix: "eventsource.mjs: "}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan esLine, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l esLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = esLine{Kind: "garbage: " + sc.Text()}
			}
			lines <- l
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		for range lines {
		}
		_ = cmd.Wait()
		stderr.flush()
	})

	// next returns the next event line (logging the others).
	next := func(what string) esLine {
		t.Helper()
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("eventsource.mjs ended while waiting for %s", what)
				}
				t.Logf("client: %+v", l)
				if l.Kind == "event" {
					return l
				}
			case <-timer.C:
				t.Fatalf("no event within 10s while waiting for %s", what)
			}
		}
	}
	nextLastID := func() string {
		t.Helper()
		select {
		case id := <-lastIDs:
			return id
		case <-time.After(10 * time.Second):
			t.Fatal("no SSE request within 10s")
			return ""
		}
	}

	if id := nextLastID(); id != "" {
		t.Fatalf("first request carried Last-Event-ID %q", id)
	}
	first := next("the first event")
	if first.Type != "visitor_count" || first.count() != 1 || first.ID == "" {
		t.Fatalf("first event = %+v; want a visitor_count of 1 with an id", first)
	}

	// Cut the connection; the client is gone, so count 0. New connections
	// go through again at once: the resuming request waits at the gate.
	proxy.Cut()
	proxy.Restore()
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap, err := g.bus.Snapshot(context.Background(), community)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("count still %d 5s after the connection was cut", snap.Count)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// What the client misses: two anonymous visitors join.
	for _, id := range []string{"anon-1", "anon-2"} {
		body := fmt.Sprintf(`{"visitor_id":%q,"authenticated":false,"action":"join"}`, id)
		req, _ := http.NewRequest(http.MethodPost, g.ts.URL+"/api/v1/communities/"+community+"/visitor-events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+g.apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("visitor-events: HTTP %d", resp.StatusCode)
		}
	}

	// The client reconnects by itself, with the id of the last event it got.
	if id := nextLastID(); id != first.ID {
		t.Fatalf("reconnect carried Last-Event-ID %q; want %q", id, first.ID)
	}
	close(gate)

	// Exactly the missed events, in order, no snapshot first; then live.
	want := []struct {
		typ   string
		count int
	}{{"visitor_left", 0}, {"visitor_joined", 1}, {"visitor_joined", 2}}
	seen := map[string]bool{first.ID: true}
	for i, w := range want {
		e := next(fmt.Sprintf("missed event %d", i+1))
		if e.Type != w.typ || e.count() != w.count {
			t.Fatalf("event %d after the reconnect = %s count %d; want %s count %d", i+1, e.Type, e.count(), w.typ, w.count)
		}
		if e.ID == "" || seen[e.ID] {
			t.Fatalf("event %d after the reconnect has id %q (empty or seen before)", i+1, e.ID)
		}
		seen[e.ID] = true
	}
	if e := next("the client's own rejoin"); e.count() != 3 {
		t.Fatalf("live event after the replay = %s count %d; want count 3", e.Type, e.count())
	}
}
