package api_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/api"
)

// lockedBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestIDFromClient: a client's X-Request-ID is answered and logged
// only when it is short and of safe characters; any other is replaced by a
// fresh one (it was logged as given).
func TestRequestIDFromClient(t *testing.T) {
	logs := &lockedBuffer{}
	g := newGateway(t, func(o *api.Options) { o.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	cases := []struct {
		id   string
		kept bool
	}{
		{"abc-123_X.y", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("b", 65), false},
		{`x" injected="1`, false},
		{"with space", false},
		{"<script>alert(1)</script>", false},
		{"caf\u00e9", false},
		{"a/b", false},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodGet, g.ts.URL+"/healthz", nil)
		req.Header.Set("X-Request-ID", tc.id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("X-Request-ID")
		if tc.kept && got != tc.id {
			t.Errorf("X-Request-ID %q answered as %q; want it kept", tc.id, got)
		}
		if !tc.kept && (got == tc.id || got == "") {
			t.Errorf("X-Request-ID %q answered as %q; want a fresh id", tc.id, got)
		}
	}
	time.Sleep(50 * time.Millisecond) // the access log line follows the answer
	out := logs.String()
	for _, tc := range cases {
		if in := strings.Contains(out, `"request_id":"`+tc.id+`"`) || strings.Contains(out, tc.id); in != tc.kept {
			t.Errorf("X-Request-ID %q in the logs: %v; want %v", tc.id, in, tc.kept)
		}
	}
}
