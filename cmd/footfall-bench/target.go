package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	argv, err := underTaskset(cpu, "--server-cpu", append([]string{bin}, args...))
	if err != nil {
		return nil, err
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

// underTaskset is argv run under `taskset -c cpu`, or argv itself when
// cpu is empty; flagName is the flag that asked for the CPU.
func underTaskset(cpu, flagName string, argv []string) ([]string, error) {
	if cpu == "" {
		return argv, nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("%s needs taskset (util-linux): %w", flagName, err)
	}
	return append([]string{taskset, "-c", cpu}, argv...), nil
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

// publish sends one broadcast of msg and returns the answer's HTTP status
// (its body read and closed).
func (t *target) publish(ctx context.Context, hc *http.Client, community, stream string, msg []byte) (int, error) {
	req, err := t.publishRequest(ctx, community, stream, msg)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
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

// visitorEvents sends action for every id in batches of up to 1000 (all at
// once) and returns the highest count answered (joins) or the lowest
// (leaves), and when the last answer arrived.
func visitorEvents(ctx context.Context, hc *http.Client, tg *target, community string, ids []string, action string) (int, time.Time, error) {
	type answer struct {
		count int
		at    time.Time
		err   error
	}
	var batches [][]string
	for i := 0; i < len(ids); i += 1000 {
		batches = append(batches, ids[i:min(i+1000, len(ids))])
	}
	answers := make(chan answer, len(batches))
	for _, b := range batches {
		var body bytes.Buffer
		body.WriteByte('[')
		for i, id := range b {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"visitor_id":%q,"authenticated":false,"action":%q}`, id, action)
		}
		body.WriteByte(']')
		go func(body []byte) {
			req, err := tg.serviceRequest(ctx, http.MethodPost, "/api/v1/communities/"+community+"/visitor-events", body)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			resp, err := hc.Do(req)
			at := time.Now()
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			var m struct {
				Count int `json:"count"`
			}
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				answers <- answer{err: fmt.Errorf("visitor-events: HTTP %d %s", resp.StatusCode, b)}
				return
			}
			err = json.NewDecoder(resp.Body).Decode(&m)
			answers <- answer{count: m.Count, at: at, err: err}
		}(body.Bytes())
	}
	var count int
	var last time.Time
	for i := range batches {
		a := <-answers
		if a.err != nil {
			return 0, last, a.err
		}
		if i == 0 || (action == "join" && a.count > count) || (action == "leave" && a.count < count) {
			count = a.count
		}
		if a.at.After(last) {
			last = a.at
		}
	}
	return count, last, nil
}
