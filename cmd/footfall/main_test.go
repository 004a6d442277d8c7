package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testSecret is a JWT secret of the minimum length (32 bytes).
const testSecret = "0123456789abcdef0123456789abcdef"

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no credentials", nil, nil, "FOOTFALL_JWT_SECRET"},
		{"bad ttl", []string{"--presence-ttl", "soon"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "FOOTFALL_PRESENCE_TTL"},
		{"bad ttl from env", nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_DASHBOARD_INTERVAL": "-1s"}, "FOOTFALL_DASHBOARD_INTERVAL"},
		{"bad zone", nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_TIMEZONE": "Mars/Olympus"}, "FOOTFALL_TIMEZONE"},
		{"bad log format", []string{"--log-format", "xml"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "FOOTFALL_LOG_FORMAT"},
		{"cert without key", nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_TLS_CERT": "c.pem"}, "FOOTFALL_TLS_KEY"},
		{"missing public key file", nil, map[string]string{"FOOTFALL_JWT_PUBLIC_KEY": "/nonexistent.pem"}, "FOOTFALL_JWT_PUBLIC_KEY"},
		{"bad proxy", nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_TRUSTED_PROXIES": "10.0.0.0/8,nonsense"}, "FOOTFALL_TRUSTED_PROXIES"},
		{"bad limit", []string{"--max-conns-per-ip", "0"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "FOOTFALL_MAX_CONNS_PER_IP"},
		{"bad rate", nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_MESSAGE_RATE": "fast"}, "FOOTFALL_MESSAGE_RATE"},
		{"message over frame", []string{"--max-message-bytes", "100000"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "FOOTFALL_MAX_FRAME_BYTES"},
		{"unknown flag", []string{"--frobnicate"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "frobnicate"},
		{"token without sub", []string{"token"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, "--sub"},
		{"token without secret", []string{"token", "--sub", "u"}, nil, "FOOTFALL_JWT_SECRET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tc.args, env(tc.env), &out, &errOut)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("run(%v) = %v; want a configuration error (exit 2)", tc.args, err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("run(%v) = %q; want one line naming %s", tc.args, err, tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMain runs the whole program on a free port and returns its base URL.
func startMain(t *testing.T, args []string, environ map[string]string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), env(environ), pw, logs)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v; want nil after a graceful stop", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return 15s after cancel")
		}
	})
	sc := bufio.NewScanner(pr)
	lines := make(chan string)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var out []string
	for line := range lines {
		out = append(out, line)
		if _, url, ok := strings.Cut(line, "footfall listening on "); ok {
			go func() {
				for range lines {
				}
			}()
			return url, logs
		}
	}
	t.Fatalf("footfall did not start: stdout %q, logs %s", out, logs.String())
	return "", nil
}

func TestDevModeEndToEnd(t *testing.T) {
	base, logs := startMain(t, []string{"--dev"}, nil)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /healthz = %d; want 200", resp.StatusCode)
	}
	const community = "123e4567-e89b-12d3-a456-426614174000"
	resp, err = http.Post(base+"/dev/token", "application/json", strings.NewReader(`{"community":"`+community+`","role":"member"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.Token == "" {
		t.Fatalf("POST /dev/token gave no token")
	}
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok.Token}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws/communities/"+community+"/visitors/?token="+tok.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var first map[string]any
	if err := conn.ReadJSON(&first); err != nil || first["type"] != "visitor_count" || first["count"] != 1.0 {
		t.Fatalf("first message = %v (%v); want visitor_count 1", first, err)
	}
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(logs.String(), tok.Token) {
		t.Fatalf("the logs contain the token")
	}
	if !strings.Contains(logs.String(), `"msg":"connection open"`) {
		t.Fatalf("logs = %s; want JSON lines with the connection", logs.String())
	}
}

func TestTokenSubcommand(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"token", "--sub", "user-42", "--community", "123E4567-e89b-12d3-a456-426614174000=moderator", "--ttl", "10m"}
	if err := run(context.Background(), args, env(map[string]string{"FOOTFALL_JWT_SECRET": testSecret}), &out, &errOut); err != nil {
		t.Fatalf("token: %v (%s)", err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	base, _ := startMain(t, nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret})
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws/communities/123e4567-e89b-12d3-a456-426614174000/visitor-dashboard/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var first map[string]any
	if err := conn.ReadJSON(&first); err != nil || first["type"] != "dashboard_update" {
		t.Fatalf("first message = %v (%v); want dashboard_update", first, err)
	}
}
