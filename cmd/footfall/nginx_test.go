package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.yaml.in/yaml/v4"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestBehindNginx runs the deployment of docker-compose.yml without Docker:
// Valkey, two footfall nodes (the whole program) and nginx with
// deploy/nginx.conf in front, its upstream pointed at the two nodes. It
// shows that the shipped nginx configuration passes WebSocket upgrades and
// streams SSE without buffering, and that the nodes behind it act as one.
// It needs nginx (Debian: nginx-light); it skips without it unless
// FOOTFALL_TEST_REQUIRE_NGINX=1, which .ci/run sets.
func TestBehindNginx(t *testing.T) {
	const nginxSecret, nginxAPIKey = "behind-nginx-secret-0123456789abcdef", "behind-nginx-api-key-0123456789abcdef"
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx" // not on a non-root PATH
		if _, serr := os.Stat(nginx); serr != nil {
			if os.Getenv("FOOTFALL_TEST_REQUIRE_NGINX") == "1" {
				t.Fatalf("nginx not found and FOOTFALL_TEST_REQUIRE_NGINX=1 (apt-get install nginx-light)")
			}
			t.Skip("nginx not installed (apt-get install nginx-light); set FOOTFALL_TEST_REQUIRE_NGINX=1 to fail instead")
		}
	}
	srv := valkeytest.Start(t)
	environ := map[string]string{
		"FOOTFALL_JWT_SECRET": nginxSecret, "FOOTFALL_API_KEY": nginxAPIKey,
		"FOOTFALL_VALKEY_URL":      srv.URL(),
		"FOOTFALL_TRUSTED_PROXIES": "127.0.0.1",
	}
	nodeA, _ := startMain(t, nil, environ)
	nodeB, _ := startMain(t, nil, environ)
	front, accessLog := startNginx(t, nginx, strings.TrimPrefix(nodeA, "http://"), strings.TrimPrefix(nodeB, "http://"))

	const community = "123e4567-e89b-12d3-a456-426614174000"
	tok := func(sub string, role auth.Role) string {
		s, _, err := auth.Mint([]byte(nginxSecret), auth.Claims{Subject: sub, TTL: time.Hour,
			Communities: map[string]auth.Role{community: role}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dial := func(sub string) *websocket.Conn {
		d := websocket.Dialer{Subprotocols: []string{"bearer", tok(sub, auth.RoleMember)}}
		c, resp, err := d.Dial("ws://"+front+"/ws/communities/"+community+"/visitors/", http.Header{"Origin": {"http://" + front}})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("WebSocket through nginx: %v (HTTP %d)", err, status)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	readCount := func(c *websocket.Conn) (string, int) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m struct {
			Type  string
			Count int
		}
		if err := c.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m.Type, m.Count
	}

	// SSE through nginx: each event must arrive on its own, not when a
	// buffer fills or the stream ends.
	req, _ := http.NewRequest(http.MethodGet, "http://"+front+"/sse/communities/"+community+"/visitor-dashboard/", nil)
	req.Header.Set("Authorization", "Bearer "+tok("moderator", auth.RoleModerator))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE through nginx = %d %s; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
	}()
	nextEvent := func(want string) string {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case data, ok := <-events:
				if !ok {
					t.Fatalf("the SSE stream through nginx ended")
				}
				if strings.Contains(data, want) {
					return data
				}
			case <-timeout:
				t.Fatalf("no SSE event with %s through nginx within 5s (buffered?)", want)
			}
		}
	}
	nextEvent(`"dashboard_update"`)

	// Two visitors through the balancer (least_conn: one per node) count
	// as two on both; the dashboard sees them arrive.
	first := dial("alice")
	if typ, n := readCount(first); typ != "visitor_count" || n != 1 {
		t.Fatalf("alice's first message: %s %d; want visitor_count 1", typ, n)
	}
	second := dial("bob")
	if typ, n := readCount(second); typ != "visitor_count" || n != 2 {
		t.Fatalf("bob's first message: %s %d; want visitor_count 2", typ, n)
	}
	if typ, n := readCount(first); typ != "visitor_joined" || n != 2 {
		t.Fatalf("alice saw %s %d; want visitor_joined 2", typ, n)
	}
	nextEvent(`"realtime_count":2`)
	// Both nodes hold one stream each: the balancer spread them.
	for _, node := range []string{nodeA, nodeB} {
		if n := openStreams(t, node); n < 1 {
			t.Errorf("node %s holds %d streams; want the balancer to use both nodes", node, n)
		}
	}
	// A metric through the balancer reaches the dashboard at once.
	body := strings.NewReader(`{"metric":"through_nginx","value":1}`)
	post, _ := http.NewRequest(http.MethodPost, "http://"+front+"/api/v1/communities/"+community+"/metrics", body)
	post.Header.Set("Authorization", "Bearer "+nginxAPIKey)
	post.Header.Set("Content-Type", "application/json")
	presp, err := http.DefaultClient.Do(post)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != http.StatusAccepted {
		t.Fatalf("metric through nginx = %d; want 202", presp.StatusCode)
	}
	nextEvent(`"through_nginx"`)

	// /metrics is not served to the outside.
	for _, path := range []string{"/metrics", "/metrics/", "//metrics", "/%6detrics"} {
		mresp, err := http.Get("http://" + front + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(mresp.Body)
		mresp.Body.Close()
		if mresp.StatusCode == http.StatusOK || strings.Contains(string(body), "footfall_") {
			t.Errorf("GET %s through nginx = %d; want it refused, not the node's metrics", path, mresp.StatusCode)
		}
	}
	// The access log shows the path of a ?token= request, never its query
	// string.
	polled := tok("poller", auth.RoleMember)
	presp, err = http.Get("http://" + front + "/api/v1/communities/" + community + "/visitors/count?token=" + polled)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != http.StatusOK {
		t.Fatalf("REST poll with ?token= through nginx = %d; want 200", presp.StatusCode)
	}
	var logged string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(accessLog)
		if logged = string(b); strings.Contains(logged, "/visitors/count") {
			break
		}
	}
	if !strings.Contains(logged, "/visitors/count") {
		t.Fatalf("nginx access log has no line for the poll: %q", logged)
	}
	if strings.Contains(logged, "token=") || strings.Contains(logged, polled) {
		t.Fatalf("nginx access log holds the token: %s", logged)
	}
}

// docker-compose.yml trusts the X-Forwarded-For of its nginx only, not of
// every private address.
func TestComposeTrustsOnlyNginx(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Networks    any               `yaml:"networks"` // a list, or a map with addresses
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	var nginxIPs []string
	networks, _ := compose.Services["nginx"].Networks.(map[string]any)
	for _, n := range networks {
		if m, ok := n.(map[string]any); ok {
			if ip, ok := m["ipv4_address"].(string); ok && ip != "" {
				nginxIPs = append(nginxIPs, ip)
			}
		}
	}
	if len(nginxIPs) == 0 {
		t.Fatalf("the nginx service has no fixed address for the nodes to trust")
	}
	nodes := 0
	for name, svc := range compose.Services {
		trusted, ok := svc.Environment["FOOTFALL_TRUSTED_PROXIES"]
		if !ok {
			continue
		}
		nodes++
		for _, p := range strings.Split(trusted, ",") {
			if p = strings.TrimSpace(p); !slices.Contains(nginxIPs, strings.TrimSuffix(p, "/32")) {
				t.Errorf("%s trusts %q as a proxy; want only nginx's address %v", name, p, nginxIPs)
			}
		}
	}
	if nodes < 2 {
		t.Fatalf("%d services set FOOTFALL_TRUSTED_PROXIES; want both footfall nodes", nodes)
	}
}

// openStreams reads a node's open stream count from its /metrics.
func openStreams(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "footfall_connections_open{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += int(v)
			}
		}
	}
	return total
}

// startNginx runs nginx in the foreground with deploy/nginx.conf, its
// upstream servers replaced by a and b and its listener by a free port,
// and returns that address.
func startNginx(t *testing.T, bin, a, b string) (addr, accessLog string) {
	t.Helper()
	shipped, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	accessLog = filepath.Join(dir, "access.log")
	site := string(shipped)
	for old, repl := range map[string]string{
		"server footfall-1:8080":                "server " + a,
		"server footfall-2:8080":                "server " + b,
		"listen 80;":                            "listen " + addr + ";",
		"access_log /var/log/nginx/access.log ": "access_log " + accessLog + " ",
	} {
		if !strings.Contains(site, old) {
			t.Fatalf("deploy/nginx.conf has no %q; update this test with it", old)
		}
		site = strings.ReplaceAll(site, old, repl)
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, site)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t with deploy/nginx.conf: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, accessLog
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
