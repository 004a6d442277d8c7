package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.yaml.in/yaml/v4"

	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

const (
	dashboardFile  = "grafana/footfall.json"
	alertsFile     = "prometheus/alerts.yml"
	alertTestsFile = "prometheus/alerts_test.yml"
	hpaFile        = "kubernetes/hpa.yaml"
)

// metricName finds the metric names in PromQL (and in prose): footfall's
// own and those of the Go and process collectors it registers. Label names,
// functions and alert names never start with these prefixes.
var metricName = regexp.MustCompile(`\b(?:footfall|go|process)_[a-zA-Z0-9_]*[a-zA-Z0-9]`)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// dashboardExprs are the PromQL expressions of the dashboard's panels and
// variables, keyed by where they are.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	d := readDashboard(t)
	exprs := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		switch q := v.Query.(type) {
		case string:
			if v.Type == "query" {
				exprs["variable "+v.Name] = q
			}
		case map[string]any:
			if s, ok := q["query"].(string); ok {
				exprs["variable "+v.Name] = s
			}
		}
	}
	return exprs
}

// rules is the part of a Prometheus rules file the tests read.
type rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rules {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var r rules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return r
}

// TestDeployMetricsExist checks that every metric the Grafana dashboard,
// the alert rules and the autoscaler name is one a running footfall
// exports, and that the dashboard shows every footfall metric and the p99
// of every footfall histogram.
func TestDeployMetricsExist(t *testing.T) {
	exported := exportedMetrics(t)
	// A labelled metric has no series until something happens to it (a
	// hook call, say); those the test's traffic did not reach count from
	// their declaration in api/ or internal/webhook.
	for m := range declaredMetrics(t) {
		exported[m] = true
	}

	named := map[string][]string{} // metric -> where
	for where, expr := range dashboardExprs(t) {
		for _, m := range metricName.FindAllString(expr, -1) {
			named[m] = append(named[m], dashboardFile+" "+where)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			text := r.Expr
			for _, a := range r.Annotations {
				text += " " + a
			}
			for _, m := range metricName.FindAllString(text, -1) {
				named[m] = append(named[m], alertsFile+" "+r.Alert+r.Record)
			}
		}
	}
	hpa, err := os.ReadFile(hpaFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metricName.FindAllString(string(hpa), -1) {
		named[m] = append(named[m], hpaFile)
	}
	if len(named) < 10 {
		t.Fatalf("deploy/ names only %d metrics (%v): the files were not read as expected", len(named), named)
	}
	for m, where := range named {
		if !exported[m] {
			t.Errorf("%s is not a metric footfall exports; named in %v", m, where)
		}
	}

	// The dashboard shows every footfall metric, and the p99 of each
	// footfall histogram.
	exprs := dashboardExprs(t)
	joined := ""
	for _, e := range exprs {
		joined += e + "\n"
	}
	for m := range exported {
		if !strings.HasPrefix(m, "footfall_") || strings.HasSuffix(m, "_sum") || exported[m+"_bucket"] {
			continue // a histogram is checked by its _bucket
		}
		if base, ok := strings.CutSuffix(m, "_bucket"); ok {
			p99 := regexp.MustCompile(`histogram_quantile\(0\.99,[^\n]*\b` + m + `\b`)
			if !p99.MatchString(joined) {
				t.Errorf("the dashboard shows no p99 of %s (histogram_quantile(0.99, ... %s ...))", base, m)
			}
			continue
		}
		if strings.HasSuffix(m, "_count") && exported[strings.TrimSuffix(m, "_count")+"_bucket"] {
			continue
		}
		if !regexp.MustCompile(`\b` + m + `\b`).MatchString(joined) {
			t.Errorf("footfall exports %s but %s does not show it", m, dashboardFile)
		}
	}
}

// TestDashboardShape checks the dashboard's layout: unique panel ids, every
// panel on the data source variable with at least one query, and panels on
// the 24-column grid without overlapping.
func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" {
		t.Errorf("the dashboard has no uid: links to it break on every import")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]int{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v off the 24-column grid", p.ID, p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panel %d %q overlaps panel %d at (%d,%d)", p.ID, p.Title, other, x, y)
					goto next
				}
				taken[cell{x, y}] = p.ID
			}
		}
	next:
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q does not use the ${datasource} variable", p.ID, p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no query", p.ID, p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q target %s has no expression", p.ID, p.Title, tg.RefID)
			}
		}
	}
}

// TestPromtool runs Prometheus's own checker on the alert rules, their unit
// tests (alerts_test.yml: each alert fires on the series that should fire
// it and not on others), and the dashboard's queries (as recording rules,
// with Grafana's variables filled in), so that none is invalid PromQL.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		skipOrFail(t, "promtool is not installed (Debian: apt-get install prometheus)")
	}
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s: %s", strings.Join(args, " "), bytes.TrimSpace(out))
		}
	}
	run("check", "rules", alertsFile)
	run("test", "rules", alertTestsFile)

	// The dashboard's queries as recording rules.
	exprs := dashboardExprs(t)
	var where []string
	for w := range exprs {
		where = append(where, w)
	}
	sort.Strings(where)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rs []rule
	fill := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
	for i, w := range where {
		if strings.HasPrefix(w, "variable ") {
			continue // label_values() is Grafana's, not PromQL
		}
		e := fill.Replace(exprs[w])
		if strings.Contains(e, "$") {
			t.Errorf("%s: %q uses a variable this test does not know", w, exprs[w])
			continue
		}
		rs = append(rs, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: e})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rs}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	run("check", "rules", file)
}

// exportedMetrics runs footfall on a real Valkey (the bus with the most
// metrics) with webhooks to a real receiver, opens and closes a WebSocket
// stream and has one refused, so that every labelled metric has a series
// (the webhook engine's have theirs from the start), and returns the metric names
// of its /metrics: histograms with their _bucket, _sum and _count.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	goBin := goCommand(t)
	valkey := valkeytest.Start(t)
	bin := filepath.Join(t.TempDir(), "footfall")
	build := exec.Command(goBin, "build", "-o", bin, "../cmd/footfall")
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/footfall: %v\n%s", err, out)
	}
	const secret = "deploy-metrics-0123456789abcdef0123456789"
	// Webhooks on, to a real receiver, so that the webhook engine's
	// metrics join /metrics (a 32-byte secret: at least 16 are required).
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	const webhookSecret = "deploy-webhook-0123456789abcdef!"
	environ := append(os.Environ(), "FOOTFALL_JWT_SECRET="+secret, "FOOTFALL_VALKEY_URL="+valkey.URL(),
		"FOOTFALL_WEBHOOK_URL="+receiver.URL, "FOOTFALL_WEBHOOK_SECRET="+webhookSecret)
	base := startFootfall(t, bin, environ)

	const community = "123e4567-e89b-12d3-a456-426614174000"
	tokenCmd := exec.Command(bin, "token", "--sub", "metrics-user", "--community", community+"=member", "--ttl", "10m")
	tokenCmd.Env = environ
	tok, err := tokenCmd.Output()
	if err != nil {
		t.Fatalf("footfall token: %v", err)
	}
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/ws/communities/" + community + "/visitors/"
	d := websocket.Dialer{Subprotocols: []string{"bearer", strings.TrimSpace(string(tok))}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := conn.ReadMessage(); err != nil || !bytes.Contains(msg, []byte(`"visitor_count"`)) {
		t.Fatalf("first message %s (%v); want a visitor_count", msg, err)
	}
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	conn.Close()
	// No credential: refused with 4001 after the upgrade.
	if c, _, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(wsURL, nil); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, _ = c.ReadMessage()
		c.Close()
	}

	want := []string{"footfall_connections_closed_total", "footfall_connections_refused_total", "footfall_messages_sent_total",
		"footfall_webhook_deliveries_total", "footfall_webhook_queue_length"}
	var names map[string]bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		names = scrape(t, base+"/metrics")
		missing := slices.DeleteFunc(slices.Clone(want), func(m string) bool { return names[m] })
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics still has no %v after the test's traffic", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return names
}

// scrape returns the metric names of a Prometheus text exposition, from
// its # TYPE lines.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name, typ := f[2], f[3]
		names[name] = true
		switch typ {
		case "histogram":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "summary":
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// startFootfall runs the binary on a free port and returns its base URL;
// it is stopped with SIGTERM at cleanup.
func startFootfall(t *testing.T, bin string, environ []string) string {
	t.Helper()
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0")
	cmd.Env = environ
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when the process has ended
	var waitErr error
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), "footfall listening on "); ok {
				urls <- url
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("footfall did not stop within 20s of SIGTERM")
		}
	})
	select {
	case url := <-urls:
		return url
	case <-exited:
		t.Fatalf("footfall exited before listening: %v\n%s", waitErr, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("footfall did not listen within 15s")
	}
	return ""
}

// metricPackages are the packages whose metric declarations
// declaredMetrics reads: the node's own (api/) and the webhook engine's.
var metricPackages = []string{"../api", "../internal/webhook"}

// declaredMetrics are the metrics metricPackages declare with
// prometheus.CounterOpts, GaugeOpts, HistogramOpts or SummaryOpts literals
// (Name: "..."), with the series names of histograms and summaries.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	var files []string
	for _, dir := range metricPackages {
		fs, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) == 0 {
			t.Fatalf("no Go files in %s", dir)
		}
		files = append(files, fs...)
	}
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
				return true
			}
			kind, ok := strings.CutSuffix(sel.Sel.Name, "Opts")
			if !ok {
				return true
			}
			for _, el := range lit.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if key, ok := kv.Key.(*ast.Ident); !ok || key.Name != "Name" {
					continue
				}
				bl, ok := kv.Value.(*ast.BasicLit)
				if !ok || bl.Kind != token.STRING {
					continue
				}
				name, err := strconv.Unquote(bl.Value)
				if err != nil {
					t.Fatal(err)
				}
				names[name] = true
				switch kind {
				case "Histogram":
					names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
				case "Summary":
					names[name+"_sum"], names[name+"_count"] = true, true
				}
			}
			return true
		})
	}
	for _, m := range []string{"footfall_connections_open", "footfall_webhook_deliveries_total"} {
		if !names[m] {
			t.Fatalf("found no %s among the metrics %v declare (%v): the parse missed them", m, metricPackages, names)
		}
	}
	return names
}

// TestEveryAlertTestedAndDocumented checks that each alert of alerts.yml has
// a promtool unit test in which it fires (alerts_test.yml), carries a
// severity, a summary and a description, and is listed in docs/deploy.md.
func TestEveryAlertTestedAndDocumented(t *testing.T) {
	b, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	if !slices.Contains(tests.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s tests %v; want %s", alertTestsFile, tests.RuleFiles, filepath.Base(alertsFile))
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in %s where it fires", r.Alert, alertTestsFile)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a severity label, a summary and a description", r.Alert)
			}
			if !strings.Contains(string(doc), "`"+r.Alert+"`") {
				t.Errorf("alert %s is not listed in docs/deploy.md", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatalf("no alerts in %s", alertsFile)
	}
}
