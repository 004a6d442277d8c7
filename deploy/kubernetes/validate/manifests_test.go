package validate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifestDir is deploy/kubernetes, seen from this module.
const manifestDir = ".."

// repoRoot is footfall's module, seen from this module.
const repoRoot = "../../.."

// Per-connection memory measured in BENCHMARKS.md (RSS of an idle
// connection): the larger of WebSocket (8.9 KiB) and SSE (14 KiB), and the
// RSS of a node with a thousand connections minus their share, rounded up.
const (
	bytesPerConnection = 14 * 1024
	baseRSS            = 64 << 20
	// headroom is how far over its target a pod may go before the
	// autoscaler's new pods take clients.
	headroom = 2
)

// manifest is one decoded object and where it came from.
type manifest struct {
	file string
	obj  runtime.Object
}

// decodeAll decodes every document of every manifest file strictly: an
// unknown or duplicated field, a wrong type or an unknown kind fails.
func decodeAll(t *testing.T) []manifest {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	var out []manifest
	for _, file := range manifestFiles(t) {
		f, err := os.Open(filepath.Join(manifestDir, file))
		if err != nil {
			t.Fatal(err)
		}
		r := kyaml.NewYAMLReader(bufio.NewReader(f))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, gvk, err := strict.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v", file, i+1, err)
				continue
			}
			t.Logf("%s: %s %s", file, gvk.Kind, obj.(interface{ GetName() string }).GetName())
			out = append(out, manifest{file: file, obj: obj})
		}
		f.Close()
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// manifestFiles are the YAML files of deploy/kubernetes but the
// kustomization, which is not a Kubernetes object.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, n := range names {
		if base := filepath.Base(n); base != "kustomization.yaml" {
			files = append(files, base)
		}
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", manifestDir)
	}
	return files
}

// find returns the one object of type T named name.
func find[T runtime.Object](t *testing.T, all []manifest, name string) T {
	t.Helper()
	var found []T
	for _, m := range all {
		if o, ok := m.obj.(T); ok && m.obj.(interface{ GetName() string }).GetName() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T named %q; want 1", len(found), zero, name)
	}
	return found[0]
}

// TestKustomization checks that kustomization.yaml (decoded strictly into
// the fields it may use) lists exactly the manifest files.
func TestKustomization(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s; want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	want := manifestFiles(t)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v; want the manifest files %v", got, want)
	}
}

// footfallEnv are the environment variables footfall reads, as its own
// --help lists them.
func footfallEnv(t *testing.T) map[string]bool {
	t.Helper()
	// The go command on PATH, or the one of the toolchain running this test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "run", "./cmd/footfall", "--help")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./cmd/footfall --help: %v\n%s", err, out)
	}
	names := map[string]bool{}
	for _, n := range regexp.MustCompile(`\bFOOTFALL_[A-Z0-9_]+\b`).FindAllString(string(out), -1) {
		names[n] = true
	}
	if !names["FOOTFALL_ADDR"] || !names["FOOTFALL_VALKEY_URL"] {
		t.Fatalf("footfall --help names %v; want at least FOOTFALL_ADDR and FOOTFALL_VALKEY_URL:\n%s", names, out)
	}
	return names
}

// runtimeEnv are the variables that are the Go runtime's, not footfall's.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true, "GOGC": true}

func TestManifests(t *testing.T) {
	all := decodeAll(t)
	known := footfallEnv(t)

	dep := find[*appsv1.Deployment](t, all, "footfall")
	svc := find[*corev1.Service](t, all, "footfall")
	pdb := find[*policyv1.PodDisruptionBudget](t, all, "footfall")
	hpa := find[*autoscalingv2.HorizontalPodAutoscaler](t, all, "footfall")
	ing := find[*networkingv1.Ingress](t, all, "footfall")
	valkeySvc := find[*corev1.Service](t, all, "valkey")
	valkeyDep := find[*appsv1.Deployment](t, all, "valkey")

	pod := dep.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("footfall pod has %d containers; want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s set twice", e.Name)
		}
		env[e.Name] = e
		if !known[e.Name] && !runtimeEnv[e.Name] {
			t.Errorf("env %s: footfall has no such setting (footfall --help lists %v)", e.Name, keys(known))
		}
	}

	t.Run("selectors", func(t *testing.T) {
		podLabels := labels.Set(pod.Labels)
		if !selects(dep.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("Deployment selector %v does not match its pod labels %v", dep.Spec.Selector.MatchLabels, pod.Labels)
		}
		if !selects(svc.Spec.Selector, podLabels) {
			t.Errorf("Service selector %v does not match the pod labels %v", svc.Spec.Selector, pod.Labels)
		}
		if !selects(pdb.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("PodDisruptionBudget selector does not match the pod labels")
		}
		for _, tsc := range pod.Spec.TopologySpreadConstraints {
			if tsc.LabelSelector == nil || !selects(tsc.LabelSelector.MatchLabels, podLabels) {
				t.Errorf("topology spread selector does not match the pod labels")
			}
		}
		if !selects(valkeySvc.Spec.Selector, labels.Set(valkeyDep.Spec.Template.Labels)) {
			t.Errorf("valkey Service selector does not match the valkey pod")
		}
		if selects(valkeySvc.Spec.Selector, podLabels) || selects(svc.Spec.Selector, labels.Set(valkeyDep.Spec.Template.Labels)) {
			t.Errorf("the footfall and valkey Services select each other's pods")
		}
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != dep.Name || ref.APIVersion != "apps/v1" {
			t.Errorf("autoscaler targets %s %s %s; want apps/v1 Deployment %s", ref.APIVersion, ref.Kind, ref.Name, dep.Name)
		}
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || b.Name != svc.Name {
					t.Errorf("Ingress path %s goes to %v; want Service %s", p.Path, b, svc.Name)
					continue
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
					return sp.Name == b.Port.Name && b.Port.Name != "" || b.Port.Number != 0 && sp.Port == b.Port.Number
				}) {
					t.Errorf("Ingress backend port %+v is not a port of Service %s", b.Port, svc.Name)
				}
			}
		}
	})

	t.Run("ports and probes", func(t *testing.T) {
		addr := env["FOOTFALL_ADDR"].Value
		_, port, ok := strings.Cut(addr, ":")
		if !ok || port == "" {
			t.Fatalf("FOOTFALL_ADDR = %q; want host:port", addr)
		}
		named := map[string]int32{}
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
		}
		if got := named["http"]; itoa(got) != port {
			t.Errorf("container port http = %d; FOOTFALL_ADDR listens on %s", got, port)
		}
		if pod.Annotations["prometheus.io/port"] != port {
			t.Errorf("prometheus.io/port = %q; want %s", pod.Annotations["prometheus.io/port"], port)
		}
		for _, sp := range svc.Spec.Ports {
			if _, ok := named[sp.TargetPort.String()]; !ok && itoa(sp.TargetPort.IntVal) != port {
				t.Errorf("Service port %s targets %s, not a container port", sp.Name, sp.TargetPort.String())
			}
		}
		probe := func(name string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s probe: want an HTTP GET of %s", name, path)
				return
			}
			if p.HTTPGet.Path != path {
				t.Errorf("%s probe path = %s; want %s", name, p.HTTPGet.Path, path)
			}
			if _, ok := named[p.HTTPGet.Port.String()]; !ok && itoa(p.HTTPGet.Port.IntVal) != port {
				t.Errorf("%s probe port %s is not the container's", name, p.HTTPGet.Port.String())
			}
		}
		// /readyz turns 503 when the bus is unreachable or the node drains;
		// /healthz only says the process serves (README).
		probe("readiness", c.ReadinessProbe, "/readyz")
		probe("liveness", c.LivenessProbe, "/healthz")
		// The valkey URL names the Service of valkey.yaml and its port.
		if u := env["FOOTFALL_VALKEY_URL"].Value; u != "" {
			want := "redis://" + valkeySvc.Name + ":" + itoa(valkeySvc.Spec.Ports[0].Port)
			if !strings.HasPrefix(u, want) {
				t.Errorf("FOOTFALL_VALKEY_URL = %q; want it to name the valkey Service (%s)", u, want)
			}
		}
	})

	t.Run("drain", func(t *testing.T) {
		// Kubernetes sends SIGTERM after preStop; footfall then takes up to
		// FOOTFALL_SHUTDOWN_TIMEOUT (default 10s) to drain, and the kubelet
		// kills it at terminationGracePeriodSeconds after the start of it all.
		shutdown := 10 * time.Second
		if v := env["FOOTFALL_SHUTDOWN_TIMEOUT"].Value; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("FOOTFALL_SHUTDOWN_TIMEOUT = %q: %v", v, err)
			}
			shutdown = d
		}
		// The streams are told to go over FOOTFALL_DRAIN_SPREAD (default 5s),
		// inside the shutdown timeout.
		spread := 5 * time.Second
		if v := env["FOOTFALL_DRAIN_SPREAD"].Value; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("FOOTFALL_DRAIN_SPREAD = %q: %v", v, err)
			}
			spread = d
		}
		if spread >= shutdown {
			t.Errorf("FOOTFALL_DRAIN_SPREAD %v is not less than FOOTFALL_SHUTDOWN_TIMEOUT %v: footfall refuses to start", spread, shutdown)
		}
		var preStop time.Duration
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("no preStop sleep: the load balancer may send new clients to a node that stopped accepting")
		} else {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			if c.Lifecycle.PreStop.Exec != nil {
				t.Errorf("preStop exec: the image has no shell or sleep binary")
			}
			// The Service stops sending clients once readiness fails or the
			// endpoint is removed; the sleep should cover a readiness period or two.
			if min := time.Duration(c.ReadinessProbe.PeriodSeconds*c.ReadinessProbe.FailureThreshold) * time.Second; preStop < min {
				t.Errorf("preStop sleep %v is shorter than readiness takes to fail (%v)", preStop, min)
			}
		}
		if pod.Spec.TerminationGracePeriodSeconds == nil {
			t.Fatalf("no terminationGracePeriodSeconds (default 30s)")
		}
		grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace < preStop+shutdown+2*time.Second {
			t.Errorf("terminationGracePeriodSeconds %v < preStop %v + FOOTFALL_SHUTDOWN_TIMEOUT %v + 2s: the kubelet kills footfall before its drain ends", grace, preStop, shutdown)
		}
		if grace > preStop+shutdown+30*time.Second {
			t.Errorf("terminationGracePeriodSeconds %v is far more than the drain needs (%v): rollouts wait for nothing", grace, preStop+shutdown)
		}
		if u := dep.Spec.Strategy.RollingUpdate; u == nil || u.MaxUnavailable == nil || u.MaxUnavailable.IntValue() != 0 {
			t.Errorf("rolling update may take pods down before new ones are ready; want maxUnavailable 0")
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			t.Errorf("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
		}
		if pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.IntValue() >= int(*hpa.Spec.MinReplicas) {
			t.Errorf("PodDisruptionBudget maxUnavailable %s lets every pod go at the autoscaler's minimum of %d", pdb.Spec.MaxUnavailable.String(), *hpa.Spec.MinReplicas)
		}
	})

	t.Run("non-root", func(t *testing.T) {
		for _, d := range []*appsv1.Deployment{dep, valkeyDep} {
			psc := d.Spec.Template.Spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Errorf("%s: want runAsNonRoot and a non-zero runAsUser", d.Name)
			}
			for _, c := range d.Spec.Template.Spec.Containers {
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
					t.Errorf("%s/%s: want no privilege escalation, a read-only root and every capability dropped", d.Name, c.Name)
				}
			}
		}
		// The Dockerfile's USER nonroot is uid 65532 in distroless.
		if u := *dep.Spec.Template.Spec.SecurityContext.RunAsUser; u != 65532 {
			t.Errorf("footfall runAsUser = %d; want 65532 (distroless nonroot, the Dockerfile's USER)", u)
		}
	})

	t.Run("resources", func(t *testing.T) {
		var target int64
		for _, m := range hpa.Spec.Metrics {
			if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods.Metric.Name == "footfall_connections_open" {
				target = m.Pods.Target.AverageValue.Value()
			}
		}
		if target <= 0 {
			t.Fatalf("the autoscaler has no target on footfall_connections_open per pod")
		}
		req := c.Resources.Requests[corev1.ResourceMemory]
		lim := c.Resources.Limits[corev1.ResourceMemory]
		need := resource.NewQuantity(baseRSS+headroom*target*bytesPerConnection, resource.BinarySI)
		if req.Cmp(*need) < 0 {
			t.Errorf("memory request %s < %s: a pod at %dx its target of %d connections (%d KiB each) plus %d MiB",
				req.String(), need.String(), headroom, target, bytesPerConnection/1024, baseRSS>>20)
		}
		if lim.IsZero() || lim.Cmp(req) < 0 {
			t.Errorf("memory limit %s; want one at least the request %s", lim.String(), req.String())
		}
		if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
			t.Errorf("a CPU limit throttles the node and delays every client's messages; set none")
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("no CPU request: the autoscaler's CPU target needs one")
		}
		if v := env["GOMEMLIMIT"].Value; v != "" {
			q, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
			if err != nil {
				t.Fatalf("GOMEMLIMIT = %q: %v", v, err)
			}
			if q.Cmp(lim) >= 0 || q.Cmp(req) < 0 {
				t.Errorf("GOMEMLIMIT %s; want it between the memory request %s and the limit %s", v, req.String(), lim.String())
			}
		}
		if *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
			t.Errorf("autoscaler replicas %d..%d; want at least 2, max over min", *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		if dep.Spec.Replicas != nil && (*dep.Spec.Replicas < *hpa.Spec.MinReplicas || *dep.Spec.Replicas > hpa.Spec.MaxReplicas) {
			t.Errorf("Deployment replicas %d outside the autoscaler's %d..%d", *dep.Spec.Replicas, *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
	})

	t.Run("secrets", func(t *testing.T) {
		// Secrets come from a Secret, never from a literal in the manifest.
		for _, name := range []string{"FOOTFALL_JWT_SECRET", "FOOTFALL_API_KEY", "FOOTFALL_WEBHOOK_SECRET"} {
			e, ok := env[name]
			if !ok {
				if name == "FOOTFALL_JWT_SECRET" {
					t.Errorf("%s is not set: footfall refuses to start without a JWT secret or key", name)
				}
				continue
			}
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: want it from a secretKeyRef, not a literal", name)
			}
		}
		// Webhooks are optional, and go together: footfall refuses to
		// start with a URL and no secret or the other way round. Both come
		// from the Secret, optional, so that a Secret without them starts
		// footfall with webhooks off.
		url, hasURL := env["FOOTFALL_WEBHOOK_URL"]
		secret, hasSecret := env["FOOTFALL_WEBHOOK_SECRET"]
		if hasURL != hasSecret {
			t.Errorf("FOOTFALL_WEBHOOK_URL set %v, FOOTFALL_WEBHOOK_SECRET set %v: footfall wants both or neither", hasURL, hasSecret)
		}
		if hasURL && hasSecret {
			for _, e := range []corev1.EnvVar{url, secret} {
				ref := (*corev1.SecretKeySelector)(nil)
				if e.ValueFrom != nil {
					ref = e.ValueFrom.SecretKeyRef
				}
				if e.Value != "" || ref == nil {
					t.Errorf("%s: want it from a secretKeyRef (optional), not a literal", e.Name)
					continue
				}
				if ref.Optional == nil || !*ref.Optional {
					t.Errorf("%s: want its secretKeyRef optional: webhooks are off unless configured", e.Name)
				}
			}
			if u, s := url.ValueFrom, secret.ValueFrom; u != nil && s != nil && u.SecretKeyRef != nil && s.SecretKeyRef != nil &&
				u.SecretKeyRef.Name != s.SecretKeyRef.Name {
				t.Errorf("FOOTFALL_WEBHOOK_URL and FOOTFALL_WEBHOOK_SECRET come from Secrets %q and %q; want one, so that they go together",
					u.SecretKeyRef.Name, s.SecretKeyRef.Name)
			}
		}
	})
}

// selects reports whether matchLabels, which must not be empty (an empty
// selector selects everything), selects a pod with these labels.
func selects(matchLabels map[string]string, pod labels.Set) bool {
	return len(matchLabels) > 0 && labels.SelectorFromSet(matchLabels).Matches(pod)
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
