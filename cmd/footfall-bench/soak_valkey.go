package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The Valkey part of the soak ("a Valkey restart"). With --valkey
// the harness runs footfall on a redis-server (or valkey-server) of its
// own, on a free port with persistence off; with --valkey-restart it kills
// that server during the soak (SIGKILL: it comes back empty, as after a
// crash) and starts it again, and measures what the clients saw.

// valkeyProc is a Valkey server the harness started: it can kill it and
// start it again on the same port.
type valkeyProc struct {
	bin  string
	cpu  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// findValkeyServer returns path, or valkey-server or redis-server from PATH.
func findValkeyServer(path string) (string, error) {
	if path != "" {
		return exec.LookPath(path)
	}
	for _, name := range []string{"valkey-server", "redis-server"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("--valkey needs valkey-server or redis-server on PATH (Debian: apt-get install redis-server), or --valkey-server")
}

// startValkey starts a server on a free loopback port (never 6379, where a
// server of someone else's may run).
func startValkey(ctx context.Context, bin, cpu string) (*valkeyProc, error) {
	dir, err := os.MkdirTemp("", "footfall-bench-valkey-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port may be taken between probing and binding
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		v := &valkeyProc{bin: bin, cpu: cpu, dir: dir, port: port}
		if lastErr = v.start(ctx); lastErr == nil {
			return v, nil
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("start %s: %w", bin, lastErr)
}

func freePort() (int, error) {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port != 6379 {
			return port, nil
		}
	}
}

func (v *valkeyProc) addr() string { return "127.0.0.1:" + strconv.Itoa(v.port) }

// url is the FOOTFALL_VALKEY_URL of the server.
func (v *valkeyProc) url() string { return "redis://" + v.addr() }

// start starts the server (empty: no persistence) and waits until it
// answers PING.
func (v *valkeyProc) start(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		return nil
	}
	argv := []string{v.bin,
		"--port", strconv.Itoa(v.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", v.dir,
		"--loglevel", "warning", "--logfile", "", "--daemonize", "no",
	}
	argv, err := underTaskset(v.cpu, "--valkey-cpu", argv)
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = v.dir
	logf, err := os.OpenFile(v.dir+"/server.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { // ends when the server exits (kill waits for it)
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !pingValkey(v.addr()) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start: %s", v.bin, tailFile(v.dir+"/server.log"))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s did not answer PING within 10 s", v.bin)
		}
	}
	v.cmd, v.exited = cmd, exited
	return nil
}

// kill ends the server at once (SIGKILL: no goodbye, no save).
func (v *valkeyProc) kill() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return
	}
	_ = v.cmd.Process.Kill()
	<-v.exited
	v.cmd = nil
}

// close kills the server and removes its directory.
func (v *valkeyProc) close() {
	v.kill()
	_ = os.RemoveAll(v.dir)
}

// pingValkey reports whether a server answers PING at addr.
func pingValkey(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return strings.TrimSpace(string(b))
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startFootfallNodes starts n footfall nodes on the Valkey at url, sharing
// one JWT secret and service API key (each node in --dev mode would make
// its own).
func startFootfallNodes(ctx context.Context, n int, bin, cpu, url string, extraEnv []string) ([]*target, error) {
	env := append([]string{
		"FOOTFALL_VALKEY_URL=" + url,
		"FOOTFALL_JWT_SECRET=" + randomHex(32),
		"FOOTFALL_API_KEY=" + randomHex(24),
	}, extraEnv...)
	var nodes []*target
	for range n {
		tg, err := startFootfall(ctx, bin, cpu, env)
		if err != nil {
			for _, t := range nodes {
				_ = t.stop()
			}
			return nil, err
		}
		nodes = append(nodes, tg)
	}
	return nodes, nil
}

// readyz returns the status of GET /readyz (0 when there is no answer).
func (t *target) readyz(hc *http.Client) int {
	resp, err := hc.Get(t.base + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// busMetricNames are footfall's bus metrics the soak reports per node.
var busMetricNames = []string{
	"footfall_bus_errors_total",
	"footfall_bus_reconnects_total",
	"footfall_bus_resubscribes_total",
	"footfall_bus_server_restarts_total",
	"footfall_bus_lease_lapses_total",
	"footfall_bus_leases_reaped_total",
}

// scrapeBusMetrics reads the node's bus metrics (those it has).
func (t *target) scrapeBusMetrics(ctx context.Context) map[string]float64 {
	sums, _ := t.metricSums(ctx, func(name string) bool { return strings.HasPrefix(name, "footfall_bus_") })
	return sums
}

// soakOutage is what one Valkey restart did, as the clients and the
// nodes' /readyz saw it.
type soakOutage struct {
	AtS float64 `json:"at_s"` // when the restart began (seconds, as the samples' elapsed)
	// DownS is from the kill until the server answered PING again.
	DownS float64 `json:"down_s"`
	// Per node: /readyz 503 this long after the kill, and 200 again this
	// long after Valkey was back (-1: not seen).
	Ready503AfterKillS     []float64 `json:"readyz_503_after_kill_s"`
	Ready200AfterRestartS  []float64 `json:"readyz_200_after_restart_s"`
	ConvergedBeforeKill    bool      `json:"converged_before_kill"`
	LeftWhileDown          int       `json:"visitors_left_while_down"`
	Watched                int       `json:"clients_watched"`
	ConvergedAfterRestartS float64   `json:"converged_after_restart_s"` // -1: not within the wait
	OffAtGiveUp            int       `json:"clients_off_at_give_up,omitempty"`
	Disconnects            int64     `json:"unexpected_disconnects"`
}

// countWatch follows the count every pool client was last sent: the
// visitors stream's "count", the dashboard's "realtime_count" (broadcast
// probes, which carry count 0 by design, are skipped).
type countWatch struct {
	last []countCell // per pool slot
}

type countCell struct {
	mu    sync.Mutex
	count int64 // -1: none yet
	gen   int   // the slot's connection the count came from
}

// realtimeCountKey finds a dashboard_update's count (countKey, of
// churn.go, a visitors-stream message's).
var realtimeCountKey = []byte(`"realtime_count":`)

func newCountWatch(n int) *countWatch {
	w := &countWatch{last: make([]countCell, n)}
	for i := range w.last {
		w.last[i].count = -1
	}
	return w
}

// follow returns the onMsg hook of a new connection of slot i.
func (w *countWatch) follow(i int, stream string) func([]byte, int64) {
	cell := &w.last[i]
	cell.mu.Lock()
	cell.gen++
	gen := cell.gen
	cell.count = -1
	cell.mu.Unlock()
	key, probe := realtimeCountKey, probeKeyDashboard
	if stream == "visitors" {
		key, probe = countKey, probeKeyVisitors
	}
	return func(msg []byte, _ int64) {
		if stream == "visitors" && bytes.Contains(msg, probe) {
			return
		}
		n, ok := extractInt(msg, key)
		if !ok {
			return
		}
		cell.mu.Lock()
		if cell.gen == gen { // not a connection the slot replaced
			cell.count = n
		}
		cell.mu.Unlock()
	}
}

func (w *countWatch) get(i int) int64 {
	c := &w.last[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// restartState is what a Valkey restart needs of the soak: the pool, the
// counts its clients were sent, and how to reopen a slot.
type restartState struct {
	slots []*benchClient
	watch *countWatch
	ctr   *counters
	open  func(i int) error
	t0    time.Time // the soak's clock (the samples' elapsed)
}

// leaversPerRestart bounds the visitors closed while Valkey is down.
const leaversPerRestart = 10

// restartValkey kills Valkey under the standing pool (the caller holds the
// soak's mix still), closes one visitors-stream client per community while
// it is down (their leaves cannot reach Valkey), starts it again empty, and
// measures: /readyz 503 and 200 again on every node, and how long until
// every client was sent the true count (the pool's visitors minus those who
// left) and kept it for a second. Then it reopens the closed clients.
func restartValkey(ctx context.Context, vk *valkeyProc, nodes []*target, cfg soakConfig, st restartState, progress io.Writer) (soakOutage, error) {
	o := soakOutage{AtS: round(time.Since(st.t0).Seconds(), 1), ConvergedAfterRestartS: -1}
	elapsed := func() float64 { return time.Since(st.t0).Seconds() }
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	n := len(st.slots)

	// off counts the clients whose last count is not the truth: each
	// visitors-stream slot not in out is one present visitor of its
	// community.
	off := func(out map[int]bool) int {
		want := make(map[int]int64, cfg.Communities)
		for i := 1; i < n; i += 2 {
			if !out[i] {
				want[i%cfg.Communities]++
			}
		}
		k := 0
		for i := range n {
			if !out[i] && st.watch.get(i) != want[i%cfg.Communities] {
				k++
			}
		}
		return k
	}
	// settle waits until every count is the truth and stays so for a
	// second; it returns when that began, or false after within.
	settle := func(out map[int]bool, within time.Duration) (time.Time, bool) {
		deadline := time.Now().Add(within)
		var since time.Time
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if off(out) == 0 {
				if since.IsZero() {
					since = time.Now()
				}
				if time.Since(since) >= time.Second {
					return since, true
				}
			} else {
				since = time.Time{}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Time{}, false
	}
	poolReady := func(within time.Duration) {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			ready := 0
			for _, c := range st.slots {
				if c.isReady.Load() {
					ready++
				}
			}
			if ready == n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// waitReadyz polls every node's /readyz until it answers want; each
	// node's time after since (-1: not within).
	waitReadyz := func(want int, since time.Time, within time.Duration) []float64 {
		took := make([]float64, len(nodes))
		for i := range took {
			took[i] = -1
		}
		deadline := time.Now().Add(within)
		for left := len(nodes); left > 0 && time.Now().Before(deadline) && ctx.Err() == nil; {
			for i, node := range nodes {
				if took[i] < 0 && node.readyz(hc) == want {
					took[i] = round(time.Since(since).Seconds(), 2)
					left--
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return took
	}

	poolReady(30 * time.Second)
	_, o.ConvergedBeforeKill = settle(nil, 15*time.Second)
	disc0 := st.ctr.disconnected.Load()

	killed := time.Now()
	vk.kill()
	fmt.Fprintf(progress, "soak %6.1fs valkey   killed (SIGKILL)\n", elapsed())
	out := make(map[int]bool)
	seen := make(map[int]bool)
	for i := 1; i < n && len(out) < leaversPerRestart; i += 2 {
		if c := i % cfg.Communities; !seen[c] {
			seen[c], out[i] = true, true
			st.slots[i].stop()
		}
	}
	o.LeftWhileDown = len(out)
	o.Ready503AfterKillS = waitReadyz(http.StatusServiceUnavailable, killed, 15*time.Second)
	if err := sleepCtx(ctx, time.Until(killed.Add(cfg.ValkeyDown))); err != nil {
		return o, err
	}
	if err := vk.start(ctx); err != nil {
		return o, fmt.Errorf("start Valkey again: %w", err)
	}
	up := time.Now()
	o.DownS = round(up.Sub(killed).Seconds(), 2)
	fmt.Fprintf(progress, "soak %6.1fs valkey   started again (empty) after %.1f s\n", elapsed(), o.DownS)

	// /readyz and the counts, side by side.
	readyDone := make(chan []float64, 1)
	go func() { readyDone <- waitReadyz(http.StatusOK, up, 60*time.Second) }() // ends within 60 s
	if since, ok := settle(out, 60*time.Second); ok {
		o.ConvergedAfterRestartS = round(since.Sub(up).Seconds(), 2)
	} else {
		o.OffAtGiveUp = off(out)
	}
	o.Ready200AfterRestartS = <-readyDone
	o.Watched = n - len(out)
	o.Disconnects = st.ctr.disconnected.Load() - disc0
	fmt.Fprintf(progress, "soak %6.1fs valkey   /readyz 503 after %v s, 200 again %v s after the restart; counts converged %.2f s after it; unexpected disconnects %d\n",
		elapsed(), o.Ready503AfterKillS, o.Ready200AfterRestartS, o.ConvergedAfterRestartS, o.Disconnects)

	for i := range out {
		if err := st.open(i); err != nil {
			return o, err
		}
	}
	poolReady(30 * time.Second)
	return o, nil
}

// syncWriter serializes writes from the soak's goroutines (the sampler and
// the Valkey restarts both report progress).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
