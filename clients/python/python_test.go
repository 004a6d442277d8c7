// Package python drives the tests of footfall's Python client (the footfall
// package in this directory) from go test, so that `go test ./...` and CI run
// them: it builds cmd/footfall and runs `python3 -m unittest discover` here
// with the binary's path in FOOTFALL_BIN. The Python tests start that binary
// themselves and check every client call's effect on real streams.
package python

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPythonClient runs the Python client's unittest suite against a
// footfall binary built from this checkout. Without python3 (3.9 or later)
// it skips, or fails under FOOTFALL_TEST_REQUIRE_TOOLS=1.
// FOOTFALL_TEST_PYTHON names another interpreter.
func TestPythonClient(t *testing.T) {
	python := pythonOrSkip(t)
	runUnittest(t, python, buildFootfall(t), "discover", "-v")
}

// TestPythonDjango runs the tests that need Django (the auth hook view, the
// seed's signal example with Django's own signals) with an interpreter that
// has it, when TestPythonClient's has not: Debian's python3-django serves
// /usr/bin/python3, which need not be the python3 first on PATH.
func TestPythonDjango(t *testing.T) {
	python := pythonOrSkip(t)
	if hasDjango(python) {
		t.Logf("%s has Django: TestPythonClient ran the Django tests", python)
		return
	}
	const debian = "/usr/bin/python3"
	if !hasDjango(debian) {
		skipOrFail(t, "no python3 with Django (%s, %s; Debian: apt-get install python3-django)", python, debian)
	}
	runUnittest(t, debian, buildFootfall(t), "-v", "tests.test_django", "tests.test_seed_examples")
}

func hasDjango(python string) bool {
	return exec.Command(python, "-c", "import sys, django; sys.exit(sys.version_info < (3, 9))").Run() == nil
}

// runUnittest runs `python -m unittest args...` in this directory with
// FOOTFALL_BIN set, and fails the test with its output if it fails.
func runUnittest(t *testing.T, python, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{"-m", "unittest"}, args...)...)
	cmd.Env = append(os.Environ(),
		"FOOTFALL_BIN="+bin,
		"PYTHONDONTWRITEBYTECODE=1", // leave no __pycache__ in the checkout
		"PYTHONUNBUFFERED=1",
	)
	// Python starts footfall as its child; killing the whole group on a
	// timeout leaves no footfall process behind.
	inOwnProcessGroup(cmd)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -m unittest %s (in clients/python): %v\n%s", python, strings.Join(args, " "), err, out.String())
	}
	summary := summarize(out.String())
	if summary.ran == 0 {
		t.Fatalf("%s -m unittest %s ran no test:\n%s", python, strings.Join(args, " "), out.String())
	}
	t.Logf("%s: %d Python tests passed in %s, %d skipped", python, summary.ran-len(summary.skipped), time.Since(start).Round(time.Millisecond), len(summary.skipped))
	for _, s := range summary.skipped {
		t.Logf("skipped: %s", s)
	}
}

// skipOrFail skips the test, or fails it under FOOTFALL_TEST_REQUIRE_TOOLS=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("FOOTFALL_TEST_REQUIRE_TOOLS") == "1" {
		t.Fatalf(format+" (FOOTFALL_TEST_REQUIRE_TOOLS=1)", args...)
	}
	t.Skipf(format+"; skipped", args...)
}

// pythonOrSkip returns the Python interpreter to test with, or skips.
func pythonOrSkip(t *testing.T) string {
	t.Helper()
	name := os.Getenv("FOOTFALL_TEST_PYTHON")
	if name == "" {
		name = "python3"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found: the Python client's tests need it", name)
	}
	out, err := exec.Command(path, "-c", "import sys; print(sys.version_info >= (3, 9))").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		skipOrFail(t, "%s is not Python 3.9 or later: %v %s", path, err, bytes.TrimSpace(out))
	}
	return path
}

// built is the footfall binary the tests share, built on first use.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildFootfall builds cmd/footfall into a temporary directory, once per
// test binary.
func buildFootfall(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if built.dir, built.err = os.MkdirTemp("", "footfall-python-test-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "footfall")
		if runtime.GOOS == "windows" {
			built.bin += ".exe"
		}
		build := exec.Command(goCmd, "build", "-o", built.bin, "./cmd/footfall")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/footfall: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

type unittestSummary struct {
	ran     int
	skipped []string
}

var (
	ranLine     = regexp.MustCompile(`(?m)^Ran (\d+) tests? in `)
	skippedLine = regexp.MustCompile(`(?m)^(\S+ \([^)]*\)).*\.\.\. skipped (.*)$`)
)

// summarize reads the number of tests run and the skipped ones (with their
// reasons) from unittest's verbose output.
func summarize(out string) unittestSummary {
	var s unittestSummary
	if m := ranLine.FindStringSubmatch(out); m != nil {
		s.ran, _ = strconv.Atoi(m[1])
	}
	for _, m := range skippedLine.FindAllStringSubmatch(out, -1) {
		s.skipped = append(s.skipped, m[1]+": "+m[2])
	}
	return s
}

func TestSummarize(t *testing.T) {
	out := "test_a (tests.test_x.T.test_a) ... ok\n" +
		"test_b (tests.test_x.T.test_b) ... skipped 'no pip'\n" +
		"test_c (tests.test_x.T.test_c)\nA docstring line ... skipped 'other'\n" +
		"----------------------------------------------------------------------\n" +
		"Ran 12 tests in 3.001s\n\nOK (skipped=2)\n"
	got := summarize(out)
	want := []string{"test_b (tests.test_x.T.test_b): 'no pip'"}
	if got.ran != 12 || strings.Join(got.skipped, "|") != strings.Join(want, "|") {
		t.Errorf("summarize() = %+v; want ran 12, skipped %q", got, want)
	}
}
