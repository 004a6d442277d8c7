package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// requireToolsEnv turns a missing tool (or privilege) of the deployment
// tests from a skip into a failure; .ci/run sets it.
const requireToolsEnv = "FOOTFALL_TEST_REQUIRE_TOOLS"

// nonrootUID is the uid and gid of distroless's nonroot user, the Dockerfile's USER.
const nonrootUID = 65532

// imagePath is where the Dockerfile puts the binary.
const imagePath = "/usr/local/bin/footfall"

// imageSecret is a JWT secret of the length footfall asks for (32 bytes and more).
const imageSecret = "image-world-0123456789abcdef0123456789"

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(requireToolsEnv) == "1" {
		t.Fatalf("%s (%s=1)", why, requireToolsEnv)
	}
	t.Skipf("%s; set %s=1 to make this a failure", why, requireToolsEnv)
}

// TestImageWorld runs footfall in the world of its container image, without
// a container engine: the binary is built as the Dockerfile builds it
// (CGO_ENABLED=0, -trimpath, -ldflags="-s -w") and run by chroot in a root
// that holds nothing else (no /etc, no CA bundle, no zoneinfo, no shell, no
// /tmp, no /dev, no /proc), as uid 65532, with an environment of its
// FOOTFALL_ variables only. This is harsher than distroless/static, which
// has /etc/passwd, a CA bundle, tzdata and /tmp: what works here works there.
//
// It needs Linux and root (for chroot and to drop to uid 65532).
func TestImageWorld(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("chroot and uid switching are tested on Linux only")
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "TestImageWorld needs root, to chroot into an empty root and run as uid 65532")
	}
	root := imageRoot(t)

	t.Run("starts with FOOTFALL_TIMEZONE=Europe/Paris and answers /healthz", func(t *testing.T) {
		p := startInRoot(t, root, map[string]string{
			"FOOTFALL_TIMEZONE":   "Europe/Paris",
			"FOOTFALL_JWT_SECRET": imageSecret,
			"FOOTFALL_ADDR":       "127.0.0.1:0",
		})
		if uid := processUID(t, p.cmd.Process.Pid); uid != nonrootUID {
			t.Errorf("footfall runs as uid %d; want %d", uid, nonrootUID)
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get("http://" + p.addr + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s = %d; want 200", path, resp.StatusCode)
			}
		}

		// `footfall healthcheck`, the image's HEALTHCHECK, run in the same
		// root as the same user.
		hc := rootCommand(root, []string{"healthcheck"}, map[string]string{"FOOTFALL_ADDR": p.addr})
		out, err := hc.CombinedOutput()
		if err != nil {
			t.Fatalf("footfall healthcheck = %v (%q); want exit 0", err, out)
		}

		// Against a port nobody listens on it must say so and exit 1.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		hc = rootCommand(root, []string{"healthcheck"}, map[string]string{"FOOTFALL_ADDR": dead})
		out, err = hc.CombinedOutput()
		if code := exitCode(err); code != 1 || !strings.Contains(string(out), "healthcheck") {
			t.Errorf("footfall healthcheck on a dead port: exit %d, output %q; want exit 1 naming healthcheck", code, out)
		}
	})

	// The Valkey bus in the same world: the node id comes from the kernel
	// (no /etc/hostname), the server by IP (an empty root has no
	// /etc/hosts; a pod has one).
	t.Run("on Valkey it is ready", func(t *testing.T) {
		srv := valkeytest.Start(t)
		p := startInRoot(t, root, map[string]string{
			"FOOTFALL_JWT_SECRET": imageSecret,
			"FOOTFALL_ADDR":       "127.0.0.1:0",
			"FOOTFALL_VALKEY_URL": srv.URL(),
			"FOOTFALL_TIMEZONE":   "Europe/Paris",
		})
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /readyz on Valkey = %d; want 200", resp.StatusCode)
		}
		resp, err = http.Get("http://" + p.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "footfall_bus_lease_lapses_total") {
			t.Errorf("/metrics has no Valkey bus metrics: is the node on Valkey?")
		}
	})

	t.Run("rediss without a CA bundle is a clear configuration error", func(t *testing.T) {
		srv := startTLSListener(t)
		cmd := rootCommand(root, nil, map[string]string{
			"FOOTFALL_JWT_SECRET": imageSecret,
			"FOOTFALL_ADDR":       "127.0.0.1:0",
			"FOOTFALL_VALKEY_URL": "rediss://" + srv,
		})
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		msg := strings.TrimSpace(stderr.String())
		t.Logf("footfall said: %s", msg)
		if code := exitCode(err); code != 2 {
			t.Fatalf("footfall with rediss:// and no CA bundle: exit %d (%v), stderr %q; want exit 2", code, err, msg)
		}
		if strings.Contains(msg, "\n") || strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine ") {
			t.Errorf("stderr = %q; want one line, no panic", msg)
		}
		for _, want := range []string{"FOOTFALL_VALKEY_URL", "x509", "certificate signed by unknown authority"} {
			if !strings.Contains(msg, want) {
				t.Errorf("stderr = %q; want it to name %q", msg, want)
			}
		}
		if took > valkeyStartTimeout+5*time.Second {
			t.Errorf("footfall took %v to give up; want at most about %v", took, valkeyStartTimeout)
		}
	})

	// The control: the same trust problem solved the way distroless (or an
	// operator mounting a private CA) solves it. A real Valkey (redis-server)
	// serves TLS only, with a certificate from a throw-away CA; with that CA
	// in the bundle where Go looks for it, footfall connects and is ready.
	t.Run("with a CA bundle it is ready on a TLS Valkey", func(t *testing.T) {
		pki := newTestPKI(t)
		addr := startTLSValkey(t, pki)
		bundle := filepath.Join(root, "etc", "ssl", "certs", "ca-certificates.crt")
		if err := os.MkdirAll(filepath.Dir(bundle), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bundle, pki.caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(filepath.Join(root, "etc")) })
		p := startInRoot(t, root, map[string]string{
			"FOOTFALL_JWT_SECRET": imageSecret,
			"FOOTFALL_ADDR":       "127.0.0.1:0",
			"FOOTFALL_VALKEY_URL": "rediss://" + addr,
		})
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /readyz on a TLS Valkey = %d; want 200", resp.StatusCode)
		}
	})
}

// imageRoot builds footfall as the Dockerfile does and returns a root
// directory that holds only /usr/local/bin/footfall.
func imageRoot(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goBin); serr != nil {
			skipOrFail(t, "the go command is not available to build the binary")
		}
	}
	root := t.TempDir()
	bin := filepath.Join(root, filepath.FromSlash(imagePath))
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build (as in the Dockerfile): %v\n%s", err, out)
	}
	// t.TempDir is 0700; the nonroot user must be able to walk to the
	// binary, as in the image.
	for dir := filepath.Dir(bin); ; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if dir == root {
			break
		}
	}
	var names []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			names = append(names, rel)
		}
		return nil
	})
	if len(names) != 1 {
		t.Fatalf("the root holds %v; want the binary alone", names)
	}
	return root
}

// rootCommand is footfall with args, chrooted into root as uid 65532,
// with exactly environ as its environment.
func rootCommand(root string, args []string, environ map[string]string) *exec.Cmd {
	cmd := exec.Command(imagePath, args...)
	cmd.Dir = "/"
	cmd.Env = []string{}
	for k, v := range environ {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: nonrootUID, Gid: nonrootUID, NoSetGroups: true},
		Setpgid:    true,
	}
	return cmd
}

type rootProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startInRoot starts the server in root, waits for its "listening" line
// and stops it with SIGTERM at cleanup, expecting a clean exit.
func startInRoot(t *testing.T, root string, environ map[string]string) *rootProcess {
	t.Helper()
	cmd := rootCommand(root, nil, environ)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start footfall in the empty root: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	p := &rootProcess{cmd: cmd}
	timeout := time.After(15 * time.Second)
	for p.addr == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				err := <-exited
				t.Fatalf("footfall exited before listening: %v; stderr: %s", err, stderr.String())
			}
			if _, url, found := strings.Cut(line, "footfall listening on http://"); found {
				p.addr = url
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("footfall did not listen within 15s; stderr: %s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("footfall after SIGTERM: %v; want exit 0; stderr: %s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("footfall did not stop within 20s of SIGTERM")
		}
		if strings.Contains(stderr.String(), "panic") {
			t.Errorf("stderr has a panic: %s", stderr.String())
		}
	})
	return p
}

// processUID reads the real uid of a process from /proc.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return -1
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// testPKI is a throw-away CA that no bundle holds and a server
// certificate it signed for 127.0.0.1, in PEM.
type testPKI struct {
	caPEM, certPEM, keyPEM []byte
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "footfall test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// startTLSListener is a TLS server on 127.0.0.1 with a certificate for
// 127.0.0.1 signed by a throw-away CA: only the missing trust can fail the
// handshake, not the name. It returns host:port.
func startTLSListener(t *testing.T) string {
	t.Helper()
	pki := newTestPKI(t)
	cert, err := tls.X509KeyPair(pki.certPEM, pki.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake() // fails: the client does not trust the CA
			}()
		}
	}()
	return ln.Addr().String()
}

// startTLSValkey starts redis-server (or valkey-server) serving TLS only,
// with pki's server certificate, and returns its host:port.
func startTLSValkey(t *testing.T, pki testPKI) string {
	t.Helper()
	bin := valkeytest.Binary(t)
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.pem": pki.caPEM, "cert.pem": pki.certPEM, "key.pem": pki.keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ln.Close()
	cmd := exec.Command(bin, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s with TLS did not listen on %s within 10s (built without TLS?):\n%s", bin, addr, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
