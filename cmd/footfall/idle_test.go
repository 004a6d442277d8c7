package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An idle keep-alive connection is closed by the server after the idle
// timeout (there was none, so any client could hold unlimited
// idle connections).
func TestIdleKeepAliveClosed(t *testing.T) {
	base, _ := startMain(t, []string{"--idle-timeout", "300ms"}, map[string]string{"FOOTFALL_JWT_SECRET": testSecret})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for range 2 { // the connection is reused: keep-alive works
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: footfall\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("GET /healthz = %d (close %v); want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("reading an idle keep-alive connection: %v after %v; want the server to close it (EOF)", err, time.Since(start))
	}
}

// The idle timeout is 2 minutes unless configured, and never more.
func TestIdleTimeoutSetting(t *testing.T) {
	c, err := parseConfig(nil, env(map[string]string{"FOOTFALL_JWT_SECRET": testSecret}), &bytes.Buffer{})
	if err != nil || c.IdleTimeout != 2*time.Minute {
		t.Fatalf("default IdleTimeout = %v, %v; want 2m", c.IdleTimeout, err)
	}
	_, err = parseConfig([]string{"--idle-timeout", "3m"}, env(map[string]string{"FOOTFALL_JWT_SECRET": testSecret}), &bytes.Buffer{})
	if !errors.As(err, new(*configError)) || !strings.Contains(err.Error(), "FOOTFALL_IDLE_TIMEOUT") {
		t.Fatalf("--idle-timeout 3m: %v; want a configuration error naming FOOTFALL_IDLE_TIMEOUT", err)
	}
}
