// Package fuzzci runs every fuzz target of the module for a bounded time.
//
// go test runs a fuzz target's seed corpus only, and go test -fuzz takes one
// target per run, so TestFuzzTargets finds the targets (every FuzzXxx(f
// *testing.F) in the module's test files) and runs go test -fuzz on each in
// turn, when FOOTFALL_TEST_FUZZTIME says for how long.
package fuzzci_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// target is one fuzz target: its package (relative to the module root, as
// "./api") and its name.
type target struct{ pkg, name string }

// TestFuzzTargets fuzzes each target of the module for
// FOOTFALL_TEST_FUZZTIME (a duration such as 15s, or a count such as 500x,
// as go test -fuzztime takes it), one after another, and fails with the
// fuzzer's output when one finds a failing input. go test -fuzz writes
// that input to the package's testdata/fuzz/<target>/, where it becomes a
// regression seed once committed.
func TestFuzzTargets(t *testing.T) {
	fuzztime := os.Getenv("FOOTFALL_TEST_FUZZTIME")
	if fuzztime == "" {
		t.Skip("FOOTFALL_TEST_FUZZTIME is not set: the fuzz targets ran their seed corpora only; set it (e.g. 15s) to fuzz each target that long")
	}
	per, err := fuzzDuration(fuzztime)
	if err != nil {
		t.Fatalf("FOOTFALL_TEST_FUZZTIME=%q: %v", fuzztime, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to fuzz: %v", err)
	}
	root := moduleRoot(t)
	targets := findTargets(t, root)
	if len(targets) == 0 {
		t.Fatalf("no fuzz targets found under %s", root)
	}
	// Each run also builds the instrumented test binary and replays the
	// corpus (5 to 20 s measured); allow for that on top of the fuzzing time.
	if dl, ok := t.Deadline(); ok && per > 0 {
		if need := time.Duration(len(targets)) * (per + 20*time.Second); time.Until(dl) < need {
			t.Fatalf("%d targets at %s each need about %s, more than the test timeout leaves (%s): lower FOOTFALL_TEST_FUZZTIME or raise -timeout",
				len(targets), fuzztime, need.Round(time.Second), time.Until(dl).Round(time.Second))
		}
	}
	// Half the CPUs: the rest of the test suite runs beside this package.
	workers := max(1, runtime.GOMAXPROCS(0)/2)
	for _, tg := range targets {
		t.Run(strings.TrimPrefix(tg.pkg, "./")+"/"+tg.name, func(t *testing.T) {
			ctx := context.Background()
			if dl, ok := t.Deadline(); ok {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
				defer cancel()
			}
			args := []string{"test", "-run", "^$", "-fuzz", "^" + regexp.QuoteMeta(tg.name) + "$",
				"-fuzztime", fuzztime, "-parallel", strconv.Itoa(workers), tg.pkg}
			cmd := exec.CommandContext(ctx, goBin, args...)
			cmd.Dir = root
			corpus := filepath.Join(root, filepath.FromSlash(tg.pkg), "testdata", "fuzz", tg.name)
			before := corpusFiles(corpus)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil && !slices.ContainsFunc(corpusFiles(corpus), func(f string) bool { return !slices.Contains(before, f) }) &&
				deadlineRace(out, tg.name) {
				// Go's fuzzing coordinator can report the end of a
				// duration -fuzztime as a failure (go.dev/issue/75804,
				// fixed in Go 1.27): no input failed and none was written.
				t.Logf("%s in %s: %s; the run ended with the coordinator's spurious \"context deadline exceeded\" (go.dev/issue/75804), no failing input", tg.name, time.Since(start).Round(time.Second), lastProgress(out))
				return
			}
			if err != nil {
				t.Fatalf("go %s (in %s, %s): %v\n%s\nA failing input is written to %s/testdata/fuzz/%s/; rerun it with go test -run '%s/<file>' %s and commit it as a regression seed with the fix.",
					strings.Join(args, " "), root, time.Since(start).Round(time.Second), err, out, tg.pkg, tg.name, tg.name, tg.pkg)
			}
			t.Logf("%s in %s: %s", tg.name, time.Since(start).Round(time.Second), lastProgress(out))
		})
	}
}

// corpusFiles lists the files of a target's corpus directory.
func corpusFiles(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// deadlineRace reports whether out is the output of a fuzzing run whose
// only failure is the coordinator's "context deadline exceeded" at the end
// of -fuzztime: the target's FAIL line followed by that message alone, no
// failing input, no other failure.
func deadlineRace(out []byte, name string) bool {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "fuzz: ") {
			lines = append(lines, l)
		}
	}
	fails := 0
	race := false
	for i, l := range lines {
		switch {
		case strings.Contains(l, "Failing input written"), strings.HasPrefix(l, "panic:"):
			return false
		case strings.HasPrefix(l, "--- FAIL:"):
			fails++
			race = strings.HasPrefix(l, "--- FAIL: "+name+" (") && i+1 < len(lines) && lines[i+1] == "context deadline exceeded" &&
				(i+2 == len(lines) || lines[i+2] == "FAIL")
		}
	}
	return fails == 1 && race
}

// fuzzDuration returns the fuzzing time of one target, 0 for a count.
func fuzzDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "x"); ok {
		if v, err := strconv.Atoi(n); err != nil || v <= 0 {
			return 0, fmt.Errorf("want a positive count such as 500x")
		}
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 15s or a count such as 500x")
	}
	return d, nil
}

// lastProgress returns the fuzzer's last progress line (elapsed time,
// execs, interesting inputs).
func lastProgress(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "fuzz: elapsed:") {
			return strings.TrimPrefix(lines[i], "fuzz: ")
		}
	}
	return "no progress line"
}

// moduleRoot returns the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// findTargets lists the fuzz targets of the module at root, skipping
// nested modules and directories the go command ignores.
func findTargets(t *testing.T, root string) []target {
	t.Helper()
	var out []target
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "node_modules" || name == "vendor" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(rel)
		if rel == "." {
			pkg = "."
		}
		for _, decl := range file.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && isFuzzTarget(fn) {
				out = append(out, target{pkg: pkg, name: fn.Name.Name})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b target) int {
		if c := strings.Compare(a.pkg, b.pkg); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// isFuzzTarget reports whether fn is FuzzXxx(f *testing.F), as go test
// finds fuzz targets.
func isFuzzTarget(fn *ast.FuncDecl) bool {
	name, ok := strings.CutPrefix(fn.Name.Name, "Fuzz")
	if !ok || (name != "" && strings.ToUpper(name[:1]) != name[:1]) {
		return false
	}
	params := fn.Type.Params.List
	if len(params) != 1 || len(params[0].Names) > 1 || fn.Type.Results != nil {
		return false
	}
	star, ok := params[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "F" {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "testing"
}

// TestDeadlineRace: the coordinator's spurious end-of-fuzztime failure is
// told apart from a failing input and from a failure while replaying the
// corpus.
func TestDeadlineRace(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want bool
	}{
		{"fuzz: elapsed: 9s, execs: 7962 (2009/sec), new interesting: 6 (total: 254)\n--- FAIL: FuzzA (8.43s)\n    context deadline exceeded\nFAIL\nexit status 1\nFAIL\texample.com/a\t8.479s\n", true},
		{"--- FAIL: FuzzA (0.05s)\n    --- FAIL: FuzzA (0.00s)\n        a_test.go:10: boom\n\n    Failing input written to testdata/fuzz/FuzzA/abc\n    To re-run:\n    go test -run=FuzzA/abc\nFAIL\nexit status 1\nFAIL\texample.com/a\t0.1s\n", false},
		{"--- FAIL: FuzzA (5.01s)\n    a_test.go:10: context deadline exceeded\nFAIL\n", false},
		{"--- FAIL: FuzzB (8.43s)\n    context deadline exceeded\nFAIL\n", false},
		{"--- FAIL: FuzzA (8.43s)\n    context deadline exceeded\n    panic: boom\nFAIL\n", false},
		{"ok  \texample.com/a\t8.4s\n", false},
	} {
		if got := deadlineRace([]byte(tc.out), "FuzzA"); got != tc.want {
			t.Errorf("deadlineRace(%q) = %v; want %v", tc.out, got, tc.want)
		}
	}
}
