package web_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/footfall/footfall/web"
)

// TestFS checks that the page, its script and style and the browser client
// are all at the root of the served tree, and that the tree is a well-formed
// fs.FS (listings, Stat, reads).
func TestFS(t *testing.T) {
	fsys := web.FS()
	if err := fstest.TestFS(fsys, "index.html", "app.js", "style.css", "footfall-client.js"); err != nil {
		t.Fatal(err)
	}
	page, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, hook := range []string{"visitor-count", "connection-status", "transport", "dashboard-realtime", "dashboard-total"} {
		if !strings.Contains(string(page), `data-testid="`+hook+`"`) {
			t.Errorf("index.html has no data-testid=%q", hook)
		}
	}
	if _, err := fs.Stat(fsys, "static/index.html"); err == nil {
		t.Error("static/ is visible inside the served tree")
	}
	if _, err := fs.Stat(fsys, "web.go"); err == nil {
		t.Error("web.go is served")
	}
}
