package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/footfall/footfall/api/auth"
)

// Target kinds.
const (
	kindFootfall = "footfall"
	kindBaseline = "baseline"
	kindURL      = "url"
)

// target is the server under test: a footfall (started here, or already
// running at a URL) or the bare baseline.
type target struct {
	kind string
	base string // http://host:port
	// publishBase, when set, receives the publishes instead of base:
	// another node on the same Valkey (--publish-to).
	publishBase string
	pid         int // 0: unknown, no server statistics
	apiKey      string
	secret      []byte
	aud, iss    string

	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	tmpDir  string
}

// serverFlags are the flags that say which server to measure.
type serverFlags struct {
	target      string
	serverCPU   string
	clientCPU   string
	footfallBin string
	apiKey      string
	secret      string
	audience    string
	issuer      string
	serverPID   int
	serverEnv   multiFlag
	publishTo   string
	quiet       time.Duration
	quietMax    time.Duration
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (sf *serverFlags) register(fs *flag.FlagSet, defaultTarget string) {
	fs.StringVar(&sf.target, "target", defaultTarget, "footfall (build and start it in --dev mode), baseline (the bare gorilla/websocket server), or the URL of a running footfall (with --api-key and --secret)")
	fs.StringVar(&sf.serverCPU, "server-cpu", "", "pin a started server to this CPU list (taskset -c)")
	fs.StringVar(&sf.clientCPU, "client-cpu", "", "pin the harness itself to this CPU list (re-executes under taskset -c)")
	fs.StringVar(&sf.footfallBin, "footfall-bin", "", "use this footfall binary instead of building ./cmd/footfall")
	fs.StringVar(&sf.apiKey, "api-key", os.Getenv("FOOTFALL_API_KEY"), "service API key of a --target URL")
	fs.StringVar(&sf.secret, "secret", os.Getenv("FOOTFALL_JWT_SECRET"), "HS256 secret of a --target URL (to mint client tokens)")
	fs.StringVar(&sf.audience, "jwt-audience", "", "aud of minted tokens (--target URL)")
	fs.StringVar(&sf.issuer, "jwt-issuer", "", "iss of minted tokens (--target URL)")
	fs.IntVar(&sf.serverPID, "server-pid", 0, "pid of a --target URL server, for its RSS and CPU (optional)")
	fs.StringVar(&sf.publishTo, "publish-to", "", "send the service-API publishes to this footfall URL (another node on the same Valkey, same --server-env FOOTFALL_API_KEY) instead of the measured one: cross-node delivery")
	fs.Var(&sf.serverEnv, "server-env", "KEY=VALUE for a started footfall (repeatable), e.g. FOOTFALL_PRESENCE_TTL=60s")
	fs.DurationVar(&sf.quiet, "quiet", 0, "before each run, wait until the machine has been quiet (under 10% busy) this long; 0: don't wait")
	fs.DurationVar(&sf.quietMax, "quiet-max", 10*time.Minute, "wait for --quiet at most this long, then run anyway")
}

// waitQuiet waits until the whole machine has been under 10% busy for
// sf.quiet (other work on a shared machine skews every figure), at most
// sf.quietMax.
func (sf *serverFlags) waitQuiet(ctx context.Context, progress io.Writer) error {
	if sf.quiet <= 0 {
		return nil
	}
	start := time.Now()
	quietSince := time.Now()
	prev, ok := readMachineCPU()
	if !ok {
		return nil
	}
	for {
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
		cur, _ := readMachineCPU()
		if frac := cur.busyFraction(prev); frac > 0.10 {
			quietSince = time.Now()
		}
		prev = cur
		if time.Since(quietSince) >= sf.quiet {
			return nil
		}
		if time.Since(start) > sf.quietMax {
			fmt.Fprintf(progress, "machine not quiet after %s; running anyway\n", sf.quietMax)
			return nil
		}
	}
}

// machineCPU is the busy and total time of all CPUs from /proc/stat.
type machineCPU struct{ busy, total int64 } // clock ticks

func readMachineCPU() (machineCPU, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseMachineCPU(line)
}

// parseMachineCPU reads the "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal ...; idle and iowait are not busy.
func parseMachineCPU(line string) (machineCPU, bool) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}, false
	}
	var m machineCPU
	for i, v := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return machineCPU{}, false
		}
		m.total += n
		if i != 3 && i != 4 {
			m.busy += n
		}
	}
	return m, true
}

func (m machineCPU) busyFraction(prev machineCPU) float64 {
	if m.total <= prev.total {
		return 0
	}
	return float64(m.busy-prev.busy) / float64(m.total-prev.total)
}

// busySince is the CPU time all processes used since prev.
func (m machineCPU) busySince(prev machineCPU) time.Duration {
	return time.Duration(m.busy-prev.busy) * time.Second / clockTick
}

// start starts (or connects to) the server kind names. bin is a footfall
// binary (built once by the caller) for kindFootfall.
func (sf *serverFlags) start(ctx context.Context, kind, bin string) (*target, error) {
	if sf.publishTo != "" && kind != kindBaseline {
		u, err := url.Parse(sf.publishTo)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("--publish-to must be an http(s) URL, not %q", sf.publishTo)
		}
		t, err := sf.startKind(ctx, kind, bin)
		if t != nil {
			t.publishBase = strings.TrimRight(u.String(), "/")
		}
		return t, err
	}
	return sf.startKind(ctx, kind, bin)
}

func (sf *serverFlags) startKind(ctx context.Context, kind, bin string) (*target, error) {
	switch kind {
	case kindFootfall:
		return startFootfall(ctx, bin, sf.serverCPU, sf.serverEnv)
	case kindBaseline:
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return startProcess(ctx, kindBaseline, exe, []string{"baseline-server", "--addr", "127.0.0.1:0"}, sf.serverCPU, nil)
	}
	u, err := url.Parse(sf.target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--target must be footfall, baseline or an http(s) URL, not %q", sf.target)
	}
	if sf.apiKey == "" || sf.secret == "" {
		return nil, usagef("--target URL needs --api-key and --secret (or FOOTFALL_API_KEY and FOOTFALL_JWT_SECRET)")
	}
	return &target{
		kind: kindURL, base: strings.TrimRight(u.String(), "/"), pid: sf.serverPID,
		apiKey: sf.apiKey, secret: []byte(sf.secret), aud: sf.audience, iss: sf.issuer,
	}, nil
}

// prepare readies the harness for a command: it pins the harness to
// --client-cpu, raises its open-file limit to hold fds connections, and
// returns the footfall binary to start (--footfall-bin, or one built now
// into a temporary directory that cleanup removes).
func (sf *serverFlags) prepare(ctx context.Context, kind string, fds int, stderr io.Writer) (bin string, cleanup func(), err error) {
	cleanup = func() {}
	if err := pinSelf(sf.clientCPU); err != nil {
		return "", cleanup, err
	}
	if _, err := raiseFDLimit(fds); err != nil {
		return "", cleanup, err
	}
	bin = sf.footfallBin
	if kind == kindFootfall && bin == "" {
		b, dir, err := buildFootfall(ctx, stderr)
		if err != nil {
			return "", cleanup, err
		}
		return b, func() { os.RemoveAll(dir) }, nil
	}
	return bin, cleanup, nil
}

// kindOf maps --target to a kind.
func kindOf(t string) string {
	switch t {
	case kindFootfall, kindBaseline:
		return t
	}
	return kindURL
}

// buildFootfall builds cmd/footfall of the module the harness runs in into
// a temporary directory. The caller removes the directory.
func buildFootfall(ctx context.Context, stderr io.Writer) (bin, dir string, err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w (pass --footfall-bin)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", "", usagef("not inside the footfall module: run from the repository or pass --footfall-bin")
	}
	dir, err = os.MkdirTemp("", "footfall-bench-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "footfall")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/footfall/footfall/cmd/footfall")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("build footfall: %w", err)
	}
	return bin, dir, nil
}

func startFootfall(ctx context.Context, bin, cpu string, extraEnv []string) (*target, error) {
	if bin == "" {
		return nil, errors.New("no footfall binary")
	}
	// A clean FOOTFALL_* environment: dev mode makes its own secret and key.
	// Given a secret (nodes sharing Valkey), it runs in production mode:
	// --dev would ignore the secret, the key and the Valkey URL.
	// The drain spread must stay below the shutdown timeout (footfall
	// refuses to start otherwise); a measured node is told to go at once.
	env := []string{"FOOTFALL_SHUTDOWN_TIMEOUT=5s", "FOOTFALL_DRAIN_SPREAD=0s"}
	env = append(env, extraEnv...)
	args := []string{"--dev", "--addr", "127.0.0.1:0"}
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "FOOTFALL_JWT_SECRET=") }) {
		args = args[1:]
	}
	return startProcess(ctx, kindFootfall, bin, args, cpu, env)
}

// startProcess starts a server binary (under taskset when cpu is set) and
// reads its address (and, for footfall, its dev secret and API key) from
// its stdout. Its stderr (the logs) goes to a file.
func startProcess(ctx context.Context, kind, bin string, args []string, cpu string, env []string) (*target, error) {
	argv := append([]string{bin}, args...)
	if cpu != "" {
		taskset, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("--server-cpu needs taskset (util-linux): %w", err)
		}
		argv = append([]string{taskset, "-c", cpu}, argv...)
	}
	dir, err := os.MkdirTemp("", "footfall-bench-"+kind+"-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, kind+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	logf.Close() // the child holds its own descriptor
	t := &target{kind: kind, pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{}), logPath: logPath, tmpDir: dir}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody listens any more: drain
			}
		}
		close(lines)
	}()
	go func() {
		_ = cmd.Wait()
		close(t.exited)
	}()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for t.base == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-t.exited
				return nil, fmt.Errorf("%s exited before listening (%s); log: %s", kind, cmd.ProcessState, tail(logPath))
			}
			switch {
			case strings.HasPrefix(line, "footfall dev mode: JWT secret (HS256): "):
				t.secret = []byte(strings.TrimPrefix(line, "footfall dev mode: JWT secret (HS256): "))
			case strings.HasPrefix(line, "footfall dev mode: service API key: "):
				t.apiKey = strings.TrimPrefix(line, "footfall dev mode: service API key: ")
			case strings.HasPrefix(line, "footfall listening on "):
				t.base = strings.TrimPrefix(line, "footfall listening on ")
			case strings.HasPrefix(line, "baseline listening on "):
				t.base = strings.TrimPrefix(line, "baseline listening on ")
			}
		case <-deadline.C:
			_ = t.stop()
			return nil, fmt.Errorf("%s did not say where it listens within 30 s; log: %s", kind, tail(logPath))
		case <-ctx.Done():
			_ = t.stop()
			return nil, ctx.Err()
		}
	}
	// A secret and key given in the environment are not printed.
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "FOOTFALL_JWT_SECRET="); ok && t.secret == nil {
			t.secret = []byte(v)
		}
		if v, ok := strings.CutPrefix(kv, "FOOTFALL_API_KEY="); ok && t.apiKey == "" {
			t.apiKey = v
		}
	}
	if kind == kindFootfall && (t.secret == nil || t.apiKey == "") {
		_ = t.stop()
		return nil, errors.New("footfall --dev did not print its JWT secret and API key")
	}
	return t, nil
}

// cleanEnv is the harness's environment without FOOTFALL_* settings, so
// that a started server is configured only by what the harness passes.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FOOTFALL_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return path + ":\n" + string(b)
}

// stop ends a server the harness started (SIGTERM, then SIGKILL) and
// removes its temporary files.
func (t *target) stop() error {
	if t.cmd == nil {
		return nil
	}
	_ = syscall.Kill(t.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
		<-t.exited
	}
	if t.tmpDir != "" {
		_ = os.RemoveAll(t.tmpDir)
	}
	return nil
}

// Paths of the streams of a community.
func streamPath(stream string) string {
	if stream == "dashboard" {
		return "visitor-dashboard/"
	}
	return "visitors/"
}

func (t *target) wsURL(stream, community string) string {
	u := "ws" + strings.TrimPrefix(t.base, "http") // http->ws, https->wss
	return u + "/ws/communities/" + community + "/" + streamPath(stream)
}

func (t *target) ssePath(stream, community string) string {
	return "/sse/communities/" + community + "/" + streamPath(stream)
}

// token mints a client token (HS256 with the server's secret); the
// baseline takes none.
func (t *target) token(sub, community string, role auth.Role, ttl time.Duration) (string, error) {
	if t.kind == kindBaseline {
		return "", nil
	}
	tok, _, err := auth.Mint(t.secret, auth.Claims{
		Subject: sub, Communities: map[string]auth.Role{community: role}, TTL: ttl,
		Audience: t.aud, Issuer: t.iss,
	}, time.Now())
	return tok, err
}

// roleFor is the least role that opens a stream.
func roleFor(stream string) auth.Role {
	if stream == "dashboard" {
		return auth.RoleModerator
	}
	return auth.RoleMember
}

// publishRequest is one broadcast of msg to a community's stream: the
// service API's broadcast call, or the baseline's POST /publish.
func (t *target) publishRequest(ctx context.Context, community, stream string, msg []byte) (*http.Request, error) {
	if t.kind == kindBaseline {
		return http.NewRequestWithContext(ctx, http.MethodPost,
			t.base+"/publish?community="+community+"&stream="+stream, bytes.NewReader(msg))
	}
	body := make([]byte, 0, len(msg)+32)
	body = append(body, `{"stream":"`...)
	body = append(body, stream...)
	body = append(body, `","message":`...)
	body = append(body, msg...)
	body = append(body, '}')
	base := t.base
	if t.publishBase != "" {
		base = t.publishBase
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/communities/"+community+"/broadcast", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.apiKey)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// serviceRequest is a service API call (footfall only).
func (t *target) serviceRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.apiKey)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// procStats are a server process's figures from /proc.
type procStats struct {
	RSSKiB  int64
	Threads int
	FDs     int
	CPU     time.Duration // utime + stime
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// readProcStats reads /proc/<pid>/status, stat and fd.
func readProcStats(pid int) (procStats, error) {
	var s procStats
	p := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(p + "/status")
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSSKiB, _ = strconv.ParseInt(f[0], 10, 64)
		case "Threads":
			s.Threads, _ = strconv.Atoi(f[0])
		}
	}
	stat, err := os.ReadFile(p + "/stat")
	if err != nil {
		return s, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s, err
	}
	s.CPU = cpu
	if ents, err := os.ReadDir(p + "/fd"); err == nil {
		s.FDs = len(ents)
	}
	return s, nil
}

// parseStatCPU returns utime+stime of a /proc/<pid>/stat line.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After "pid (comm)": state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// stats reads the server's figures; ok is false when its pid is unknown.
func (t *target) stats() (procStats, bool) {
	if t.pid == 0 {
		return procStats{}, false
	}
	s, err := readProcStats(t.pid)
	return s, err == nil
}

// loadAvg is the 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// clientCPU is the harness's own CPU time so far.
func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
