package web_test

// The browser test of the dashboard's peak and visitor history
// (e2e/history.mjs): a moderator's page shows today's peak as footfall has
// it and a chart of exactly the points the history endpoint answers
// (docs/protocol.md, history); a member's page shows no chart and asks for
// none; FootfallClient.visitorHistory works against the real endpoint.

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBrowserHistory runs e2e/history.mjs in headless Chromium against a
// dev-mode gateway on the memory bus. It writes web/e2e/out/history.png
// (the dashboard card), history-minutes.png, history-phone.png and
// history-page.png.
func TestBrowserHistory(t *testing.T) {
	nodePath(t)
	requireNodeModules(t)
	chromium := chromiumPath(t)

	g := startGateway(t, nil)
	out := filepath.Join("e2e", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := runNode(t, 90*time.Second, "e2e/history.mjs", "--chromium", chromium, "--base", g.ts.URL, "--out", out); err != nil {
		t.Fatalf("history browser tests failed (screenshots in web/e2e/out): %v", err)
	}
}
