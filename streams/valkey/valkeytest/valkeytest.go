// Package valkeytest starts throw-away Valkey (or Redis 7) servers for
// tests: a single server on a free port, or a small cluster of masters.
//
// It looks for valkey-server, then redis-server, on PATH. Without either,
// tests that ask for a server are skipped with a clear message, unless the
// environment sets FOOTFALL_TEST_REQUIRE_VALKEY=1 (as .ci/run does), in
// which case they fail.
//
// Servers run with persistence off (--save "" --appendonly no), bind to
// 127.0.0.1 only, keep their files in t.TempDir() and are stopped in
// t.Cleanup.
package valkeytest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requireEnv names the environment variable that turns a missing server
// binary from a skip into a failure.
const requireEnv = "FOOTFALL_TEST_REQUIRE_VALKEY"

// startTimeout bounds the wait for a server to answer PING.
const startTimeout = 10 * time.Second

// Binary returns the path of valkey-server or redis-server. When neither is
// installed it skips t (or fails it when requireEnv is "1").
func Binary(t testing.TB) string {
	t.Helper()
	return binary(t, "valkey-server", "redis-server")
}

// cliPath returns the path of valkey-cli or redis-cli, skipping or failing t
// like Binary when neither is installed.
func cliPath(t testing.TB) string {
	t.Helper()
	return binary(t, "valkey-cli", "redis-cli")
}

func binary(t testing.TB, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("none of %s found on PATH: install valkey or redis-server (Debian: apt-get install redis-server redis-tools) to run the Valkey tests", strings.Join(names, ", "))
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, requireEnv)
	}
	t.Skip(msg)
	return ""
}

// Server is one running server process.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	args []string
	// Addr is "127.0.0.1:<port>"; it stays the same across Stop and Start.
	Addr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives the result of cmd.Wait
}

// Start starts a standalone server on a free port and stops it when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	var lastErr error
	for range 5 { // a free port may be taken between probing and binding
		port, err := freePort(0)
		if err != nil {
			t.Fatalf("valkeytest: find a free port: %v", err)
		}
		s := &Server{t: t, bin: bin, dir: dir, Addr: "127.0.0.1:" + strconv.Itoa(port), args: baseArgs(port, dir)}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("valkeytest: start %s: %v", bin, lastErr)
	return nil
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr }

func baseArgs(port int, dir string) []string {
	return []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--loglevel", "warning",
		"--logfile", "",
		"--daemonize", "no",
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(startTimeout)
	for {
		if err := ping(s.Addr); err == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("server exited at start: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("server on %s did not answer PING within %v", s.Addr, startTimeout)
		}
	}
}

// Stop kills the server (SIGKILL: no goodbye to clients) and waits for it
// to exit. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(startTimeout):
		s.t.Errorf("valkeytest: server on %s did not exit after SIGKILL", s.Addr)
	}
	s.cmd, s.exited = nil, nil
}

// Pause freezes the server (SIGSTOP): connections stay open but nothing
// answers, as with a hung server or a network partition. Resume undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("valkeytest: signal %v: server on %s is not running", sig, s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("valkeytest: signal %v: %v", sig, err)
	}
}

// Restart starts a stopped server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("valkeytest: restart on %s: %v", s.Addr, err)
}

// Do sends one command over a fresh connection and returns the reply in
// RESP2 text form (for example "+PONG", ":3", "$5\r\nhello"); tests use it
// to inspect the server without a client library.
func (s *Server) Do(args ...string) (string, error) {
	return do(s.Addr, args...)
}

// Cluster is a set of servers forming a Valkey/Redis Cluster of masters
// without replicas.
type Cluster struct {
	Servers []*Server
}

// StartCluster starts n (at least 3) cluster-enabled servers on free ports
// (each port and port+10000, the cluster bus, free), joins them with
// `redis-cli --cluster create` and waits until the cluster is ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("valkeytest: a cluster needs at least 3 masters, not %d", n)
	}
	bin, cli := Binary(t), cliPath(t)
	c := &Cluster{}
	var addrs []string
	for i := range n {
		dir := t.TempDir()
		var s *Server
		var lastErr error
		for range 10 {
			port, err := freePort(10000)
			if err != nil {
				t.Fatalf("valkeytest: find a free port: %v", err)
			}
			args := append(baseArgs(port, dir),
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes-"+strconv.Itoa(i)+".conf",
				"--cluster-node-timeout", "2000",
			)
			s = &Server{t: t, bin: bin, dir: dir, Addr: "127.0.0.1:" + strconv.Itoa(port), args: args}
			if lastErr = s.start(); lastErr == nil {
				break
			}
			s = nil
		}
		if s == nil {
			t.Fatalf("valkeytest: start cluster node: %v", lastErr)
		}
		t.Cleanup(s.Stop)
		c.Servers = append(c.Servers, s)
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("valkeytest: %s %s: %v\n%s", cli, strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range c.Servers {
		for {
			info, err := s.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("valkeytest: cluster not ok within %v: %q %v", startTimeout, info, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Seeds is the comma-separated list of the cluster's addresses, the form
// FOOTFALL_VALKEY_URL takes for a cluster.
func (c *Cluster) Seeds() string {
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = s.Addr
	}
	return strings.Join(addrs, ",")
}

// freePort returns a port that is free on 127.0.0.1, and whose port+offset
// is free too when offset is not 0.
func freePort(offset int) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if offset == 0 {
			return port, nil
		}
		if port+offset > 65535 {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+offset))
		if err != nil {
			continue
		}
		_ = l2.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair found")
}

func ping(addr string) error {
	reply, err := do(addr, "PING")
	if err != nil {
		return err
	}
	if reply != "+PONG" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// do sends one command in RESP2 and reads one reply (simple string, error,
// integer or bulk string; arrays are returned as their first line).
func do(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s", line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := readFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line, nil
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
