package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestMain lets a test run the real program in a child process (the test
// binary itself), to see its exit code and stderr as an operator would.
func TestMain(m *testing.M) {
	if os.Getenv("FOOTFALL_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"footfall"}, strings.Fields(os.Getenv("FOOTFALL_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs the program as a child process with environ added to the
// test's environment and returns its exit code, stderr and run time.
func runChild(t *testing.T, environ map[string]string) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FOOTFALL_TEST_RUN_MAIN=1", "FOOTFALL_TEST_ARGS=--addr 127.0.0.1:0")
	for k, v := range environ {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("footfall still running 30s after start; stderr %s", stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String(), time.Since(start)
}

// An unreachable Valkey at start is a configuration error: exit 2, one
// clear line, well under 10 s (README, configuration).
func TestValkeyUnreachableAtStart(t *testing.T) {
	// A port that was free a moment ago: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	// A listener that accepts and never answers: a hung server.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cases := map[string]string{
		"refused":       "redis://" + refused,
		"hung":          "redis://" + hung.Addr().String(),
		"cluster seeds": refused + "," + refused,
		"bad scheme":    "http://" + refused,
	}
	for name, url := range cases {
		t.Run(name, func(t *testing.T) {
			code, stderr, took := runChild(t, map[string]string{
				"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_VALKEY_URL": url,
			})
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 {
				t.Fatalf("exit code %d; want 2 (stderr %q)", code, stderr)
			}
			if len(lines) != 1 || !strings.Contains(lines[0], "FOOTFALL_VALKEY_URL") {
				t.Fatalf("stderr %q; want one line naming FOOTFALL_VALKEY_URL", stderr)
			}
			if took >= 10*time.Second {
				t.Fatalf("took %v to give up; want under 10s", took)
			}
		})
	}
}

// Two real nodes (the whole program) on one Valkey count a visitor once
// and deliver a broadcast made on one node to a dashboard on the other.
func TestTwoNodesOnValkey(t *testing.T) {
	const twoNodesSecret, twoNodesKey = "two-nodes-secret-0123456789abcdef", "two-nodes-api-key-0123456789abcdef"
	srv := valkeytest.Start(t)
	environ := map[string]string{
		"FOOTFALL_JWT_SECRET": twoNodesSecret, "FOOTFALL_API_KEY": twoNodesKey,
		"FOOTFALL_VALKEY_URL": srv.URL(),
	}
	a, logsA := startMain(t, nil, environ)
	b, _ := startMain(t, nil, environ)
	if !strings.Contains(logsA.String(), `"bus":"valkey"`) {
		t.Fatalf("node log does not say it runs on valkey: %s", logsA.String())
	}
	for _, base := range []string{a, b} {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/readyz = %d; want 200", base, resp.StatusCode)
		}
	}
	const community = "123e4567-e89b-12d3-a456-426614174000"
	tok, _, err := auth.Mint([]byte(twoNodesSecret), auth.Claims{Subject: "user-42", TTL: time.Hour,
		Communities: map[string]auth.Role{community: auth.RoleModerator}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dial := func(base, stream string) *websocket.Conn {
		d := websocket.Dialer{Subprotocols: []string{"bearer", tok}}
		c, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws/communities/"+community+"/"+stream+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	read := func(c *websocket.Conn) map[string]any {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	// The same user with a tab on each node counts once.
	if m := read(dial(a, "visitors")); m["count"] != 1.0 {
		t.Fatalf("first tab on node A: %v; want count 1", m)
	}
	if m := read(dial(b, "visitors")); m["count"] != 1.0 {
		t.Fatalf("second tab of the same user on node B: %v; want count 1", m)
	}
	dash := dial(b, "visitor-dashboard")
	if m := read(dash); m["type"] != "dashboard_update" {
		t.Fatalf("dashboard first message %v", m)
	}
	// A metric posted to node A's service API reaches node B's dashboard.
	body := `{"metric":"signups","value":7}`
	req, _ := http.NewRequest(http.MethodPost, a+"/api/v1/communities/"+community+"/metrics", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+twoNodesKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("metric on node A = %d; want 202", resp.StatusCode)
	}
	for {
		m := read(dash)
		if m["type"] == "analytics_update" {
			if m["metric"] != "signups" {
				t.Fatalf("node B got %v; want the broadcast", m)
			}
			break
		}
	}
}
