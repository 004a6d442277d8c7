package web_test

// Tests of the npm package @footfall/client (web/package.json): its
// TypeScript declarations match the code (test-types/match.test.mjs), the
// seed's TypeScript components type-check against them with tsc --strict
// (test-types/), and the tarball of `npm pack` installs into a scratch
// project, imports there and type-checks there.
//
// They need node, npm and web/node_modules (npm ci --prefix web: typescript,
// @types/react, react). Without them they skip, unless
// FOOTFALL_TEST_REQUIRE_TOOLS=1 (as in .ci/run), where they fail.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const requireToolsEnv = "FOOTFALL_TEST_REQUIRE_TOOLS"

// needTool skips the test (or fails it under FOOTFALL_TEST_REQUIRE_TOOLS=1)
// with why.
func needTool(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(requireToolsEnv) == "1" {
		t.Fatalf("%s (%s=1)", why, requireToolsEnv)
	}
	t.Skipf("%s; set %s=1 to make this a failure", why, requireToolsEnv)
}

func toolPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		needTool(t, name+" is not installed: the npm package's tests need Node.js 20+ and npm")
	}
	return p
}

// typescript returns the path of web/node_modules' tsc, after checking the
// packages the type tests use are installed.
func typescript(t *testing.T) string {
	t.Helper()
	for _, pkg := range []string{"typescript", "@types/react", "react"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg, "package.json")); err != nil {
			needTool(t, "web/node_modules/"+pkg+" is missing: run `npm ci --prefix web`")
		}
	}
	tsc, err := filepath.Abs(filepath.Join("node_modules", "typescript", "bin", "tsc"))
	if err != nil {
		t.Fatal(err)
	}
	return tsc
}

func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestTypeScriptSeedComponents runs tsc --strict (test-types/tsconfig.json)
// over the seed's useVisitorWebSocket, VisitorCounter and VisitorDashboard
// ported to @footfall/client, and checks.ts, whose @ts-expect-error lines
// must each be an error.
func TestTypeScriptSeedComponents(t *testing.T) {
	node := toolPath(t, "node")
	tsc := typescript(t)
	// --listFiles: check, and say what was checked.
	out := runIn(t, ".", node, tsc, "-p", "test-types", "--listFiles")
	for _, want := range []string{"web/footfall-client.d.ts", "web/react/useVisitorCount.d.ts", "seed/VisitorCounter.tsx", "seed/VisitorDashboard.tsx", "seed/useVisitorWebSocket.ts"} {
		if !strings.Contains(out, want) {
			t.Fatalf("tsc -p test-types does not compile %s; its files:\n%s", want, out)
		}
	}
}

// TestDeclarationsMatchCode runs test-types/match.test.mjs: the .d.ts files
// declare exactly what the modules export, the client's members and
// options, and the hook's options and result.
func TestDeclarationsMatchCode(t *testing.T) {
	node := toolPath(t, "node")
	typescript(t)
	out := runIn(t, ".", node, "--test", "test-types/")
	if !strings.Contains(out, "# fail 0") || strings.Contains(out, "# pass 0") {
		t.Fatalf("node --test test-types/:\n%s", out)
	}
}

// TestNpmPack packs the package, installs the tarball into a scratch
// project without the network (it has no dependencies; React is linked from
// web/node_modules, as an app has its own), imports both entry points and
// type-checks the seed's components against the installed copy.
func TestNpmPack(t *testing.T) {
	node := toolPath(t, "node")
	npm := toolPath(t, "npm")
	tsc := typescript(t)
	tmp := t.TempDir()

	var packed []struct {
		Name     string `json:"name"`
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	out := runIn(t, ".", npm, "pack", "--json", "--pack-destination", tmp)
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	want := []string{"README.md", "footfall-client.d.ts", "footfall-client.js", "package.json", "react/useVisitorCount.d.ts", "react/useVisitorCount.js"}
	if !slices.Equal(files, want) {
		t.Errorf("the tarball holds %v; want %v", files, want)
	}
	pkgName := packed[0].Name
	tarball := filepath.Join(tmp, packed[0].Filename)

	app := filepath.Join(tmp, "app")
	if err := os.MkdirAll(filepath.Join(app, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(app, "package.json"), `{"name": "scratch-app", "private": true, "type": "module"}`)
	runIn(t, app, npm, "install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", tarball)
	// React and its types, as the app's own.
	for _, pkg := range []string{"react", "@types/react", "csstype"} {
		src, err := filepath.Abs(filepath.Join("node_modules", pkg))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(app, "node_modules", pkg)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, dst); err != nil {
			t.Fatal(err)
		}
	}

	// The entry points, as Node resolves them through "exports".
	writeFile(t, filepath.Join(app, "probe.mjs"), `
import * as client from '`+pkgName+`';
import * as react from '`+pkgName+`/react';
const c = new client.FootfallClient({ community: '123e4567-e89b-12d3-a456-426614174000', url: 'https://gw.example' });
let deep = 'exported';
try { await import('`+pkgName+`/footfall-client.js'); } catch (e) { deep = e.code; }
console.log(JSON.stringify({
  client: Object.keys(client).sort(),
  react: Object.keys(react).sort(),
  hookIsDefault: react.default === react.useVisitorCount,
  status: c.status,
  rest: client.endpoints('https://gw.example/', 'ABC', 'dashboard').rest,
  deep,
}));
`)
	var probe struct {
		Client, React []string
		HookIsDefault bool
		Status, Rest  string
		Deep          string
	}
	out = runIn(t, app, node, "probe.mjs")
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &probe); err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	for _, name := range []string{"FootfallClient", "createClient"} {
		if !slices.Contains(probe.Client, name) {
			t.Errorf("import %q exports %v; want %s among them", pkgName, probe.Client, name)
		}
	}
	if !slices.Contains(probe.React, "useVisitorCount") || !probe.HookIsDefault {
		t.Errorf("import %q exports %v (default is the hook: %v); want useVisitorCount, also as default", pkgName+"/react", probe.React, probe.HookIsDefault)
	}
	if probe.Status != "idle" || probe.Rest != "https://gw.example/api/v1/communities/ABC/visitor-dashboard" {
		t.Errorf("the installed client: status %q, dashboard REST endpoint %q", probe.Status, probe.Rest)
	}
	if probe.Deep != "ERR_PACKAGE_PATH_NOT_EXPORTED" {
		t.Errorf("a deep import of an unlisted path gave %q; want ERR_PACKAGE_PATH_NOT_EXPORTED", probe.Deep)
	}

	// The seed's components and the checks, against the installed types.
	seeds, err := filepath.Glob(filepath.Join("test-types", "seed", "*"))
	if err != nil || len(seeds) < 3 {
		t.Fatalf("test-types/seed: %v %v", seeds, err)
	}
	for _, f := range append(seeds, filepath.Join("test-types", "checks.ts")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(app, "src", filepath.Base(f)), string(b))
	}
	tsconfig, err := os.ReadFile(filepath.Join("test-types", "tsconfig.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(app, "tsconfig.json"), strings.Replace(string(tsconfig), `"include": ["seed/**/*", "checks.ts"]`, `"include": ["src"]`, 1))
	out = runIn(t, app, node, tsc, "-p", ".", "--listFiles")
	if !strings.Contains(out, filepath.Join("node_modules", pkgName, "footfall-client.d.ts")) {
		t.Fatalf("tsc in the scratch project does not use the installed declarations:\n%s", out)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
