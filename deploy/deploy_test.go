// Package deploy_test checks what deploy/ ships against footfall itself:
// the Kubernetes manifests (through their own module, deploy/kubernetes/validate),
// and the Grafana dashboard and Prometheus rules (metrics_test.go).
//
// The tools these tests need (the go command, promtool) are looked up on
// PATH; without them the tests skip, unless FOOTFALL_TEST_REQUIRE_TOOLS=1
// (as in .ci/run), where they fail.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

const requireToolsEnv = "FOOTFALL_TEST_REQUIRE_TOOLS"

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(requireToolsEnv) == "1" {
		t.Fatalf("%s (%s=1)", why, requireToolsEnv)
	}
	t.Skipf("%s; set %s=1 to make this a failure", why, requireToolsEnv)
}

// goCommand is the go command on PATH, or the one of the toolchain that
// built this test.
func goCommand(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	skipOrFail(t, "the go command is not available")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestKubernetesManifests runs the test of deploy/kubernetes/validate, a
// module of its own (it imports the Kubernetes API types, which footfall's
// module must not depend on), so that `go test ./...` here covers it.
func TestKubernetesManifests(t *testing.T) {
	goBin := goCommand(t)
	cmd := exec.Command(goBin, "test", "-count=1", "./...")
	cmd.Dir = filepath.Join("kubernetes", "validate")
	// Its own module: no GOFLAGS of ours (-race, -mod) leak into it.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test in deploy/kubernetes/validate: %v\n%s", err, out)
	}
	t.Logf("deploy/kubernetes/validate: %s", out)
}
