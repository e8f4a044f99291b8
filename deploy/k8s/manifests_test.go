// Package k8s holds capstream's Kubernetes manifests, plain YAML applied
// with `kubectl apply -f deploy/k8s/`. It has no code: this test checks
// the manifests against the components' real configuration types, the
// router's API calls, and the real kube-apiserver that deploy/dev/deps.sh
// starts (server-side dry run, RBAC with `kubectl auth can-i`, Pod
// Security admission).
package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

const (
	namespace = "capstream-system"
	image     = "ghcr.io/capstream/capstream:latest"
	routerSA  = "system:serviceaccount:" + namespace + ":capstream-router"
	// psaNamespace enforces the "restricted" Pod Security level; the dev
	// API server has no namespace controller, so it is reused, never
	// deleted.
	psaNamespace = "capstream-psa-restricted"
	mib          = 1 << 20
)

// object is one document of a manifest file.
type object struct {
	file string
	obj  runtime.Object
}

// meta returns the object's metadata; every kind the scheme decodes has
// some.
func (o object) meta() metav1.Object {
	m, err := apimeta.Accessor(o.obj)
	if err != nil {
		panic(err)
	}
	return m
}

func (o object) id() string {
	return fmt.Sprintf("%s %s/%s", o.obj.GetObjectKind().GroupVersionKind().Kind, o.meta().GetNamespace(), o.meta().GetName())
}

// manifestFiles are the files `kubectl apply -f deploy/k8s/` reads, in the
// order it reads them.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml", "*.json"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	return files
}

// loadManifests decodes every document strictly (unknown fields are
// errors) with the client-go scheme plus apiextensions.
func loadManifests(t *testing.T) []object {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []object
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: decode: %v", f, err)
			}
			objs = append(objs, object{file: f, obj: obj})
		}
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

func find[T runtime.Object](t *testing.T, objs []object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.meta().GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %s", zero, name)
	return zero
}

// TestCRDIsSchemaCRD: the CRD shipped here is the generated one, byte for
// byte.
func TestCRDIsSchemaCRD(t *testing.T) {
	want, err := os.ReadFile("../../schemas/v3/crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("01-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/k8s/01-crd.yaml differs from schemas/v3/crd.yaml: cp schemas/v3/crd.yaml deploy/k8s/01-crd.yaml")
	}
}

// TestObjects lists what the directory creates, so nothing is added or
// lost unnoticed, and checks every namespaced object is in capstream-system.
func TestObjects(t *testing.T) {
	objs := loadManifests(t)
	var got []string
	for _, o := range objs {
		got = append(got, o.id())
	}
	want := []string{
		"Namespace /capstream-system",
		"CustomResourceDefinition /packetcaptures.projectcalico.org",
		"ServiceAccount capstream-system/capstream-router",
		"ServiceAccount capstream-system/capstream-producer",
		"ServiceAccount capstream-system/capstream-sink",
		"ClusterRole /capstream-router",
		"ClusterRoleBinding /capstream-router",
		"Role capstream-system/capstream-router-leader-election",
		"RoleBinding capstream-system/capstream-router-leader-election",
		"ConfigMap capstream-system/capstream-router",
		"Deployment capstream-system/capstream-router",
		"PodDisruptionBudget capstream-system/capstream-router",
		"ConfigMap capstream-system/capstream-sink-pcap",
		"Deployment capstream-system/capstream-sink-pcap",
		"PodDisruptionBudget capstream-system/capstream-sink-pcap",
		"ConfigMap capstream-system/capstream-sink-flows",
		"Deployment capstream-system/capstream-sink-flows",
		"PodDisruptionBudget capstream-system/capstream-sink-flows",
		"ConfigMap capstream-system/capstream-producer",
		"DaemonSet capstream-system/capstream-producer",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("objects in apply order (-want +got):\n%s", d)
	}
	for _, o := range objs {
		ns := o.meta().GetNamespace()
		switch o.obj.(type) {
		case *corev1.Namespace, *apiextensionsv1.CustomResourceDefinition, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			if ns != "" {
				t.Errorf("%s: cluster-scoped object with namespace %q", o.id(), ns)
			}
		default:
			if ns != namespace {
				t.Errorf("%s: namespace %q, want %s", o.id(), ns, namespace)
			}
		}
	}
}

// routerRules is what router/ calls, verb by verb: informers list and
// watch; status.go Gets a capture after a conflict and calls UpdateStatus;
// the core/v1 event recorder creates and patches Events.
var routerRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures/status"}, Verbs: []string{"update"}},
	{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
}

// TestRBAC: no wildcards, the router's rules are exactly its calls, only
// the router's service account is bound, and the others mount no token.
func TestRBAC(t *testing.T) {
	objs := loadManifests(t)
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		switch r := o.obj.(type) {
		case *rbacv1.ClusterRole:
			rules = r.Rules
			if r.AggregationRule != nil {
				t.Errorf("%s: aggregation rule", o.id())
			}
		case *rbacv1.Role:
			rules = r.Rules
		case *rbacv1.ClusterRoleBinding:
			checkSubjects(t, o.id(), r.Subjects)
		case *rbacv1.RoleBinding:
			checkSubjects(t, o.id(), r.Subjects)
		}
		for _, rule := range rules {
			for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames, rule.NonResourceURLs} {
				for _, s := range list {
					if strings.Contains(s, "*") {
						t.Errorf("%s: wildcard %q in %+v", o.id(), s, rule)
					}
				}
			}
			for _, v := range rule.Verbs {
				if slices.Contains([]string{"escalate", "bind", "impersonate", "delete", "deletecollection"}, v) {
					t.Errorf("%s: verb %s", o.id(), v)
				}
			}
			if slices.Contains(rule.Resources, "secrets") {
				t.Errorf("%s: grants secrets", o.id())
			}
		}
	}
	cr := find[*rbacv1.ClusterRole](t, objs, "capstream-router")
	if d := cmp.Diff(routerRules, cr.Rules); d != "" {
		t.Errorf("router ClusterRole (-want +got):\n%s", d)
	}
	role := find[*rbacv1.Role](t, objs, "capstream-router-leader-election")
	wantLease := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{leaseName(t, objs)}, Verbs: []string{"get", "update"}},
	}
	if d := cmp.Diff(wantLease, role.Rules); d != "" {
		t.Errorf("leader election Role (-want +got):\n%s", d)
	}
	for _, name := range []string{"capstream-producer", "capstream-sink"} {
		sa := find[*corev1.ServiceAccount](t, objs, name)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", name)
		}
	}
}

func checkSubjects(t *testing.T, id string, subjects []rbacv1.Subject) {
	t.Helper()
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "capstream-router", Namespace: namespace}}
	if d := cmp.Diff(want, subjects); d != "" {
		t.Errorf("%s: only the router is bound (-want +got):\n%s", id, d)
	}
}

// leaseName is router.leaderElection.name from the router's ConfigMap.
func leaseName(t *testing.T, objs []object) string {
	t.Helper()
	s := &routerSettings{}
	if err := yaml.Unmarshal([]byte(find[*corev1.ConfigMap](t, objs, "capstream-router").Data["router.yaml"]), s); err != nil {
		t.Fatal(err)
	}
	return s.Router.LeaderElection.Name
}

// workload is a component's pod template and what surrounds it.
type workload struct {
	meta     metav1.ObjectMeta
	replicas *int32
	pod      corev1.PodTemplateSpec
}

func workloadOf(t *testing.T, objs []object, c component) workload {
	t.Helper()
	name := "capstream-" + c.name
	switch c.kind {
	case "Deployment":
		d := find[*appsv1.Deployment](t, objs, name)
		return workload{meta: d.ObjectMeta, replicas: d.Spec.Replicas, pod: d.Spec.Template}
	case "DaemonSet":
		d := find[*appsv1.DaemonSet](t, objs, name)
		return workload{meta: d.ObjectMeta, pod: d.Spec.Template}
	}
	t.Fatalf("unknown kind %s", c.kind)
	return workload{}
}

// podEnv resolves a container's environment the way the kubelet would,
// with made-up values for the downward API and for every Secret key
// (required and optional alike).
func podEnv(t *testing.T, c corev1.Container) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.namespace":
				v = namespace
			case "metadata.name":
				v = "capstream-router-7d9f8c6b5-x2x4q"
			case "spec.nodeName":
				v = "worker-1.example.com"
			default:
				t.Errorf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			v = "dummy-" + e.ValueFrom.SecretKeyRef.Key
		default:
			t.Errorf("env %s: unexpected source", e.Name)
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// configPath checks the container runs its subcommand with --config on a
// file of the component's ConfigMap, and writes that file's content to dir.
func configPath(t *testing.T, objs []object, c component, w workload, dir string) string {
	t.Helper()
	ctr := w.pod.Spec.Containers[0]
	want := append(slices.Clone(c.subcommand), "--config", "/etc/capstream/config/"+c.configKey)
	if d := cmp.Diff(want, ctr.Args); d != "" {
		t.Errorf("%s args (-want +got):\n%s", c.name, d)
	}
	if len(ctr.Command) != 0 {
		t.Errorf("%s: command %v; the image's entrypoint is the capstream binary", c.name, ctr.Command)
	}
	var vol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == "/etc/capstream/config" {
			vol = m.Name
			if !m.ReadOnly {
				t.Errorf("%s: config mount not read-only", c.name)
			}
		}
	}
	var cmName string
	for _, v := range w.pod.Spec.Volumes {
		if v.Name == vol && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName != "capstream-"+c.name {
		t.Fatalf("%s: /etc/capstream/config is ConfigMap %q, want capstream-%s", c.name, cmName, c.name)
	}
	cm := find[*corev1.ConfigMap](t, objs, cmName)
	data, ok := cm.Data[c.configKey]
	if !ok || len(cm.Data) != 1 {
		t.Fatalf("ConfigMap %s: want exactly the key %s, have %v", cmName, c.configKey, slices.Collect(maps.Keys(cm.Data)))
	}
	path := filepath.Join(dir, c.configKey)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigs loads every ConfigMap's YAML, with the environment its
// container gets, into the component's real Config types, runs Validate,
// and checks the manifest around it agrees: ports, probes, scrape
// annotations, grace periods, memory.
func TestConfigs(t *testing.T) {
	objs := loadManifests(t)
	var natsURLs []string
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			w := workloadOf(t, objs, c)
			if len(w.pod.Spec.Containers) != 1 || len(w.pod.Spec.InitContainers) != 0 {
				t.Fatalf("want one container")
			}
			ctr := w.pod.Spec.Containers[0]
			path := configPath(t, objs, c, w, t.TempDir())
			env := podEnv(t, ctr)
			for _, e := range env {
				if !strings.HasPrefix(e, c.envPrefix+"_") && !strings.HasPrefix(e, "GOMEMLIMIT=") {
					t.Errorf("env %s: neither a %s_ override nor GOMEMLIMIT", e, c.envPrefix)
				}
			}
			got, err := c.load(path, env)
			if err != nil {
				t.Fatalf("load %s with the pod's environment: %v", c.configKey, err)
			}
			natsURLs = append(natsURLs, got.natsURL)
			if got.credsFile != "" && !strings.HasPrefix(got.credsFile, "/etc/capstream/nats/") {
				t.Errorf("nats.credsFile %s: not in the capstream-nats mount", got.credsFile)
			}

			// One port: http.listen, the named container port, the probes
			// and the scrape annotation.
			_, port, err := splitListen(got.listen)
			if err != nil {
				t.Fatalf("http.listen %q: %v", got.listen, err)
			}
			if len(ctr.Ports) != 1 || ctr.Ports[0].Name != "metrics" || ctr.Ports[0].ContainerPort != port {
				t.Errorf("ports %+v: want one port named metrics, %d", ctr.Ports, port)
			}
			checkProbe(t, "liveness", ctr.LivenessProbe, "/healthz")
			checkProbe(t, "readiness", ctr.ReadinessProbe, "/readyz")
			wantAnn := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(int(port)), "prometheus.io/path": "/metrics"}
			if d := cmp.Diff(wantAnn, w.pod.Annotations); d != "" {
				t.Errorf("pod annotations (-want +got):\n%s", d)
			}

			// Kubernetes kills after terminationGracePeriodSeconds: the
			// component's own flush must fit with room to spare.
			if tg := w.pod.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second < got.grace+10*time.Second {
				t.Errorf("terminationGracePeriodSeconds %v: want at least gracePeriod %s + 10s", ptrString(tg), got.grace)
			}

			checkMemory(t, c, ctr, got.minMemory)
			checkLabels(t, c, w)
			if c.replicas > 0 && (w.replicas == nil || *w.replicas != c.replicas) {
				t.Errorf("replicas %v, want %d", ptrString(w.replicas), c.replicas)
			}
			if ctr.Image != image {
				t.Errorf("image %s, want %s", ctr.Image, image)
			}
			checkComponentSpecifics(t, c, got, ctr)
		})
	}
	for _, u := range natsURLs {
		if u != natsURLs[0] {
			t.Errorf("components disagree on nats.url: %v", natsURLs)
			break
		}
	}
}

func checkComponentSpecifics(t *testing.T, c component, got loaded, ctr corev1.Container) {
	t.Helper()
	envFrom := map[string]*corev1.EnvVarSource{}
	for _, e := range ctr.Env {
		envFrom[e.Name] = e.ValueFrom
	}
	switch s := got.settings.(type) {
	case *routerSettings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		le := s.Router.LeaderElection
		if !le.Enabled || le.Namespace != namespace {
			t.Errorf("leader election %+v: want enabled in %s", le, namespace)
		}
		for name, field := range map[string]string{
			"CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE": "metadata.namespace",
			"CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_IDENTITY":  "metadata.name",
		} {
			if v := envFrom[name]; v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != field {
				t.Errorf("env %s: want the downward API's %s", name, field)
			}
		}
		if s.Router.Namespace != "" {
			t.Errorf("router.namespace %q: the deployment watches every namespace", s.Router.Namespace)
		}
	case *producerSettings:
		if v := envFrom["CAPSTREAM_PRODUCER_NODE"]; v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != "spec.nodeName" {
			t.Error("env CAPSTREAM_PRODUCER_NODE: want the downward API's spec.nodeName")
		}
		if s.Producer.Source != producer.SourceAFPacket || s.Producer.AFPacket.NetNS != "" {
			t.Errorf("producer: want live afpacket capture in the host namespace, have source %q netns %q", s.Producer.Source, s.Producer.AFPacket.NetNS)
		}
	case *sinkPcapSettings:
		for _, name := range []string{"CAPSTREAM_SINK_PCAP_S3_ACCESSKEY", "CAPSTREAM_SINK_PCAP_S3_SECRETKEY"} {
			if v := envFrom[name]; v == nil || v.SecretKeyRef == nil || v.SecretKeyRef.Name != "capstream-s3" {
				t.Errorf("env %s: want a key of Secret capstream-s3", name)
			}
		}
		if s.S3.AccessKey != "dummy-accessKey" || s.S3.SecretKey != "dummy-secretKey" {
			t.Error("S3 keys do not come from the Secret")
		}
		if s.ClickHouse.Password != "dummy-password" {
			t.Error("clickhouse.password does not come from the Secret")
		}
	case *sinkFlowsSettings:
		if s.ClickHouse.Password != "dummy-password" {
			t.Error("clickhouse.password does not come from the Secret")
		}
	default:
		t.Fatalf("unexpected settings %T", s)
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func splitListen(listen string) (string, int32, error) {
	i := strings.LastIndex(listen, ":")
	if i < 0 {
		return "", 0, errors.New("no port")
	}
	p, err := strconv.ParseInt(listen[i+1:], 10, 32)
	return listen[:i], int32(p), err
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want httpGet %s", what, path)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "metrics" {
		t.Errorf("%s probe: %s on %s, want %s on the metrics port", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
}

func checkLabels(t *testing.T, c component, w workload) {
	t.Helper()
	want := map[string]string{"app.kubernetes.io/name": "capstream", "app.kubernetes.io/component": c.name}
	if d := cmp.Diff(want, w.pod.Labels); d != "" {
		t.Errorf("pod labels (-want +got):\n%s", d)
	}
}

// checkMemory: requests within limits, a memory limit that holds what the
// configuration needs, the sinks under 256 MiB, and GOMEMLIMIT below the
// limit (the producer's at its 64 MiB process target).
func checkMemory(t *testing.T, c component, ctr corev1.Container, need int64) {
	t.Helper()
	req, lim := ctr.Resources.Requests.Memory(), ctr.Resources.Limits.Memory()
	if req.IsZero() || lim.IsZero() || ctr.Resources.Requests.Cpu().IsZero() {
		t.Fatalf("resources %+v: want cpu and memory requests and a memory limit", ctr.Resources)
	}
	if req.Cmp(*lim) > 0 {
		t.Errorf("memory request %s above limit %s", req, lim)
	}
	if lim.Value() < need {
		t.Errorf("memory limit %s: the configuration needs at least %d MiB", lim, need/mib)
	}
	if strings.HasPrefix(c.name, "sink") && lim.Cmp(resource.MustParse("256Mi")) > 0 {
		t.Errorf("memory limit %s: sinks stay under 256 MiB", lim)
	}
	if c.name == "producer" {
		if req.Value() < 64*mib {
			t.Errorf("memory request %s: below the 64 MiB process target", req)
		}
		if !ctr.Resources.Limits.Cpu().IsZero() {
			t.Errorf("cpu limit %s: throttling the producer overflows its rings", ctr.Resources.Limits.Cpu())
		}
	}
	var goLimit int64
	for _, e := range ctr.Env {
		if e.Name == "GOMEMLIMIT" {
			v, err := parseGoBytes(e.Value)
			if err != nil {
				t.Fatalf("GOMEMLIMIT %q: %v", e.Value, err)
			}
			goLimit = v
		}
	}
	switch {
	case goLimit == 0:
		t.Error("GOMEMLIMIT: not set")
	case goLimit >= lim.Value():
		t.Errorf("GOMEMLIMIT %d MiB: not below the limit %s", goLimit/mib, lim)
	case c.name == "producer" && goLimit > 64*mib:
		t.Errorf("GOMEMLIMIT %d MiB: above the producer's 64 MiB target", goLimit/mib)
	}
}

// parseGoBytes parses GOMEMLIMIT's syntax: a number with an optional
// B, KiB, MiB, GiB or TiB suffix.
func parseGoBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// TestPodSecurity checks the hardening in the pod specs: who may use the
// API, who runs as root with which capabilities, and host namespaces.
func TestPodSecurity(t *testing.T) {
	objs := loadManifests(t)
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			spec := workloadOf(t, objs, c).pod.Spec
			ctr := spec.Containers[0]
			if spec.ServiceAccountName != c.sa {
				t.Errorf("serviceAccountName %q, want %s", spec.ServiceAccountName, c.sa)
			}
			wantToken := c.name == "router"
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken != wantToken {
				t.Errorf("automountServiceAccountToken %s, want %v", ptrString(spec.AutomountServiceAccountToken), wantToken)
			}
			if spec.HostPID || spec.HostIPC {
				t.Error("host PID or IPC namespace")
			}
			if spec.HostNetwork != (c.name == "producer") {
				t.Errorf("hostNetwork %v: only the producer uses the node's network", spec.HostNetwork)
			}
			if spec.HostNetwork && spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("dnsPolicy %q: a hostNetwork pod needs ClusterFirstWithHostNet to resolve Service names", spec.DNSPolicy)
			}
			for _, v := range spec.Volumes {
				if v.HostPath != nil {
					t.Errorf("volume %s: hostPath", v.Name)
				}
			}
			psc := spec.SecurityContext
			if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("pod seccompProfile: want RuntimeDefault")
			}
			sc := ctr.SecurityContext
			if sc == nil {
				t.Fatal("container securityContext: missing")
			}
			if sc.Privileged == nil || *sc.Privileged {
				t.Error("privileged: want false")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation: want false")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem: want true")
			}
			var add []string
			if sc.Capabilities != nil {
				if d := cmp.Diff([]corev1.Capability{"ALL"}, sc.Capabilities.Drop); d != "" {
					t.Errorf("capabilities.drop (-want +got):\n%s", d)
				}
				for _, a := range sc.Capabilities.Add {
					add = append(add, string(a))
				}
			} else {
				t.Error("capabilities: want drop ALL")
			}
			if c.root {
				// AF_PACKET sockets need CAP_NET_RAW and nothing more (see
				// 30-producer.yaml); added capabilities only reach uid 0.
				if d := cmp.Diff([]string{"NET_RAW"}, add); d != "" {
					t.Errorf("capabilities.add (-want +got):\n%s", d)
				}
				if psc.RunAsUser == nil || *psc.RunAsUser != 0 {
					t.Errorf("runAsUser %s: want 0, the only uid that gets added capabilities", ptrString(psc.RunAsUser))
				}
			} else {
				if len(add) != 0 {
					t.Errorf("capabilities.add %v: want none", add)
				}
				if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
					t.Errorf("runAsNonRoot %s, runAsUser %s: want a non-root uid", ptrString(psc.RunAsNonRoot), ptrString(psc.RunAsUser))
				}
			}
		})
	}
}

// TestBinaryCheck runs the real binary's --check on every ConfigMap with
// the pod's environment: the settings structs in cmd/capstream are the
// source of truth that the mirrors above copy, and an unknown
// CAPSTREAM_* variable in a manifest would stop the pod at start.
func TestBinaryCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "capstream")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/capstream")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/capstream: %v\n%s", err, out)
	}
	objs := loadManifests(t)
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			w := workloadOf(t, objs, c)
			path := configPath(t, objs, c, w, t.TempDir())
			args := append(slices.Clone(c.subcommand), "--config", path, "--check")
			cmd := exec.CommandContext(t.Context(), bin, args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, podEnv(t, w.pod.Spec.Containers[0])...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 3 {
				t.Skipf("capstream %s is not built yet (exit 3): %s", strings.Join(c.subcommand, " "), bytes.TrimSpace(out))
			}
			if err != nil || !bytes.Contains(out, []byte("config ok")) {
				t.Fatalf("capstream %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// kubectl runs kubectl against the dev API server.
func kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func requireKubectl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if testenv.RequireDeps() {
			t.Fatalf("kubectl not found: %v", err)
		}
		t.Skipf("kubectl not found: %v", err)
	}
}

// TestApplyDryRun applies the whole directory, as a user would, as a
// server dry run, with server-side and with client-side apply: every
// object must pass the API server's schema validation (kubectl asks for
// strict field validation) and admission.
func TestApplyDryRun(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	// Namespaced objects dry-run only in an existing namespace. The dev
	// server never finishes deleting a namespace, so it is kept.
	kube.EnsureNamespace(t, namespace)
	// --force-conflicts: other tests own the CRD's fields (same values);
	// a dry run changes nothing either way.
	out, err := kubectl(t, kube.Kubeconfig, "apply", "--server-side", "--force-conflicts", "--dry-run=server",
		"--field-manager=capstream-manifests-test", "-f", ".")
	if err != nil {
		t.Fatal(err)
	}
	// The README's plain `kubectl apply -f deploy/k8s/` (client-side
	// apply, which also has to fit the last-applied annotation).
	if _, err := kubectl(t, kube.Kubeconfig, "apply", "--dry-run=server", "-f", "."); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, o := range loadManifests(t) {
		gvk := o.obj.GetObjectKind().GroupVersionKind()
		res := strings.ToLower(gvk.Kind)
		if gvk.Group != "" {
			res += "." + gvk.Group
		}
		want := res + "/" + o.meta().GetName() + " serverside-applied (server dry run)"
		if !slices.Contains(lines, want) {
			t.Errorf("%s: no line %q in kubectl's output:\n%s", o.id(), want, out)
		}
	}
}

// TestRouterPermissions applies the RBAC for real and asks the API server
// what each service account may do.
func TestRouterPermissions(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	kube.EnsureNamespace(t, namespace)
	if _, err := kubectl(t, kube.Kubeconfig, "apply", "--server-side", "--force-conflicts",
		"--field-manager=capstream-manifests-test", "-f", "02-rbac.yaml"); err != nil {
		t.Fatal(err)
	}
	// resource is TYPE or TYPE/NAME as can-i takes it; sub is a
	// subresource.
	type check struct {
		verb, resource, sub, ns string
		allowed                 bool
	}
	const (
		pc    = "packetcaptures.projectcalico.org"
		lease = "leases.coordination.k8s.io"
	)
	routerChecks := []check{
		// What router/ does.
		{"list", pc, "", "", true},
		{"watch", pc, "", "", true},
		{"get", pc, "", "team-a", true},
		{"update", pc, "status", "team-a", true},
		{"list", "pods", "", "", true},
		{"watch", "pods", "", "", true},
		{"list", "namespaces", "", "", true},
		{"watch", "namespaces", "", "", true},
		{"create", "events", "", "team-a", true},
		{"patch", "events", "", "team-a", true},
		{"create", lease, "", namespace, true},
		{"get", lease + "/capstream-router", "", namespace, true},
		{"update", lease + "/capstream-router", "", namespace, true},
		// What it must not do.
		{"update", pc, "", "team-a", false},
		{"patch", pc, "", "team-a", false},
		{"create", pc, "", "team-a", false},
		{"delete", pc, "", "team-a", false},
		{"patch", pc, "status", "team-a", false},
		{"delete", "pods", "", "team-a", false},
		{"create", "pods", "", "team-a", false},
		{"get", "pods", "", "team-a", false},
		{"create", "pods", "exec", "team-a", false},
		{"get", "secrets", "", namespace, false},
		{"list", "secrets", "", "", false},
		{"get", "configmaps", "", namespace, false},
		{"delete", "namespaces", "", "", false},
		{"delete", "events", "", "team-a", false},
		{"get", lease + "/kube-scheduler", "", "kube-system", false},
		{"create", lease, "", "kube-system", false},
		{"update", lease + "/other-lease", "", namespace, false},
		{"delete", lease + "/capstream-router", "", namespace, false},
		{"list", "nodes", "", "", false},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io", "", "", false},
	}
	run := func(t *testing.T, as string, checks []check) {
		for _, c := range checks {
			args := []string{"auth", "can-i", c.verb, c.resource, "--as=" + as}
			if c.sub != "" {
				args = append(args, "--subresource="+c.sub)
			}
			if c.ns != "" {
				args = append(args, "-n", c.ns)
			} else {
				args = append(args, "--all-namespaces")
			}
			out, err := kubectl(t, kube.Kubeconfig, args...)
			answer := strings.TrimSpace(out)
			if err != nil && answer != "no" {
				t.Fatal(err)
			}
			if got := answer == "yes"; got != c.allowed {
				t.Errorf("%s: can-i %s %s (subresource %q, namespace %q) = %v, want %v", as, c.verb, c.resource, c.sub, c.ns, got, c.allowed)
			}
		}
	}
	t.Run("router", func(t *testing.T) { run(t, routerSA, routerChecks) })
	for _, sa := range []string{"capstream-producer", "capstream-sink"} {
		t.Run(sa, func(t *testing.T) {
			var none []check
			for _, c := range routerChecks {
				if c.allowed {
					c.allowed = false
					none = append(none, c)
				}
			}
			none = append(none, check{"get", "configmaps", "", namespace, false}, check{"get", "secrets", "", namespace, false})
			run(t, "system:serviceaccount:"+namespace+":"+sa, none)
		})
	}
}

// TestPodSecurityAdmission submits each pod template, as a dry-run Pod, to
// a namespace that enforces the "restricted" Pod Security level: the
// router and sinks must pass, the producer (hostNetwork, NET_RAW) must be
// refused there, which also shows admission really runs, and accepted in
// capstream-system.
func TestPodSecurityAdmission(t *testing.T) {
	kube := testenv.Kube(t)
	kube.EnsureNamespace(t, namespace)
	ctx := t.Context()
	nsClient := kube.Client.CoreV1().Namespaces()
	enforce := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	_, err := nsClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: psaNamespace, Labels: enforce}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		ns, gerr := nsClient.Get(ctx, psaNamespace, metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Fatalf("namespace %s exists without the restricted label: %v", psaNamespace, ns.Labels)
		}
		err = nil
	}
	if err != nil {
		t.Fatal(err)
	}
	objs := loadManifests(t)
	create := func(c component, in string) error {
		tmpl := workloadOf(t, objs, c).pod
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "capstream-" + c.name + "-", Namespace: in, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
			Spec:       tmpl.Spec,
		}
		_, err := kube.Client.CoreV1().Pods(in).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			err := create(c, psaNamespace)
			switch {
			case c.root && err == nil:
				t.Error("the producer passed the restricted level: admission did not run")
			case c.root && !apierrors.IsForbidden(err):
				t.Errorf("producer in %s: %v, want Forbidden by Pod Security", psaNamespace, err)
			case !c.root && err != nil:
				t.Errorf("not restricted-compliant: %v", err)
			}
			if err := create(c, namespace); err != nil {
				t.Errorf("in %s: %v", namespace, err)
			}
		})
	}
}

// Addresses of the external dependencies, as README.md documents them.
const (
	natsURL        = "nats://nats.nats.svc:4222"
	clickhouseAddr = "clickhouse.clickhouse.svc:9000"
	s3Endpoint     = "minio.minio.svc:9000"
)

// TestREADME keeps README.md in step: the dependency addresses it
// documents are the ConfigMaps', and its CAPSTREAM_PACKETS JSON is
// schemas.PacketsStream with the default limits.
func TestREADME(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, s := range []string{natsURL, clickhouseAddr, s3Endpoint, image, "## Deploy"} {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
	objs := loadManifests(t)
	for _, c := range components {
		cm := find[*corev1.ConfigMap](t, objs, "capstream-"+c.name).Data[c.configKey]
		var s struct {
			NATS       struct{ URL string }      `yaml:"nats"`
			ClickHouse struct{ Addr string }     `yaml:"clickhouse"`
			S3         struct{ Endpoint string } `yaml:"s3"`
		}
		if err := yaml.Unmarshal([]byte(cm), &s); err != nil {
			t.Fatal(err)
		}
		if s.NATS.URL != natsURL {
			t.Errorf("%s: nats.url %q, README says %s", c.name, s.NATS.URL, natsURL)
		}
		if strings.HasPrefix(c.name, "sink") && s.ClickHouse.Addr != clickhouseAddr {
			t.Errorf("%s: clickhouse.addr %q, README says %s", c.name, s.ClickHouse.Addr, clickhouseAddr)
		}
		if c.name == "sink-pcap" && s.S3.Endpoint != s3Endpoint {
			t.Errorf("%s: s3.endpoint %q, README says %s", c.name, s.S3.Endpoint, s3Endpoint)
		}
	}

	_, block, ok := strings.Cut(readme, "```json\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("README.md: no ```json block with the packets stream")
	}
	var got jetstream.StreamConfig
	if err := json.Unmarshal([]byte(block), &got); err != nil {
		t.Fatalf("README.md packets stream: %v", err)
	}
	// -1 and 0 both mean unlimited; schemas leaves these zero.
	for _, p := range []*int64{&got.MaxMsgs, &got.MaxMsgsPerSubject} {
		if *p == -1 {
			*p = 0
		}
	}
	if got.MaxConsumers == -1 {
		got.MaxConsumers = 0
	}
	want := schemas.PacketsStream(schemas.DefaultPacketsStreamLimits())
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("README.md packets stream differs from schemas.PacketsStream (-want +got):\n%s", d)
	}

	// The JSON as `nats stream add --config` sends it: a server accepts it
	// and both sinks can bind their durables to the stream.
	if testing.Short() {
		return
	}
	ns := testenv.NATS(t)
	resp, err := ns.Conn.RequestWithContext(t.Context(), "$JS.API.STREAM.CREATE."+schemas.StreamPackets, []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &created); err != nil || created.Error != nil {
		t.Fatalf("create %s from README.md: %v %v", schemas.StreamPackets, err, created.Error)
	}
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		if _, err := sink.Bind(t.Context(), ns.JS, cc, 0); err != nil {
			t.Error(err)
		}
	}
}
