package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nkeys"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
)

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
				v = podNode
			default:
				t.Errorf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Key == "issuer-seed":
			// Loading checks it is an account seed.
			v = issuerSeed(t)
		case e.ValueFrom.SecretKeyRef != nil:
			v = "dummy-" + e.ValueFrom.SecretKeyRef.Key
		default:
			t.Errorf("env %s: unexpected source", e.Name)
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// tlsMount is where every pod mounts ConfigMap capstream-ca, and tlsCA the
// CA file in it that every TLS section names. tokenMount is where the
// producer's projected NATS token is, and tokenAudience its audience.
const (
	tlsMount      = "/etc/capstream/tls"
	tlsCA         = tlsMount + "/ca.crt"
	tokenMount    = "/var/run/secrets/capstream/nats"
	tokenAudience = "capstream-nats"
)

// issuerSeed is a fresh account nkey seed.
func issuerSeed(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return string(seed)
}

// podTLSDir stands in for the pod's tlsMount: a directory with a real CA
// certificate as ca.crt, since loading a configuration reads its CA files.
func podTLSDir(t *testing.T) string {
	t.Helper()
	pem, err := os.ReadFile(testenv.TLS(t).CA)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem, 0o644); err != nil {
		t.Fatal(err)
	}
	// Beside it, the producer's token volume (see configPath).
	token := filepath.Join(filepath.Dir(dir), "nats")
	if err := os.Mkdir(token, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(token, "token"), []byte("a.projected.token"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// configPath checks the container runs its subcommand with --config on a
// file of the component's ConfigMap, and writes that file's content to dir,
// with the pod's tlsMount moved to tlsDir and its tokenMount beside it
// (see podTLSDir).
func configPath(t *testing.T, objs []object, c component, w workload, dir, tlsDir string) string {
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
	data = strings.ReplaceAll(data, tlsMount+"/", tlsDir+"/")
	data = strings.ReplaceAll(data, tokenMount+"/", filepath.Join(filepath.Dir(tlsDir), "nats")+"/")
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
	tlsDir := podTLSDir(t)
	var natsURLs []string
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			w := workloadOf(t, objs, c)
			if len(w.pod.Spec.Containers) != 1 || len(w.pod.Spec.InitContainers) != 0 {
				t.Fatalf("want one container")
			}
			ctr := w.pod.Spec.Containers[0]
			path := configPath(t, objs, c, w, t.TempDir(), tlsDir)
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
			if c.noNATS {
				if got.nats != (clients.NATSConfig{}) {
					t.Errorf("nats %+v: %s has no NATS section", got.nats, c.name)
				}
			} else {
				natsURLs = append(natsURLs, got.nats.URL)
				checkNATS(t, c, got, filepath.Join(tlsDir, "ca.crt"), tlsDir)
			}
			checkTLSMount(t, w, ctr)
			checkTokenVolume(t, c, w, ctr)
			checkServerTLS(t, c, w, ctr)

			// The metrics port: http.listen, the named container port, the
			// probes and the scrape annotation; and an API's own port,
			// named https.
			_, port, err := splitListen(got.listen)
			if err != nil {
				t.Fatalf("http.listen %q: %v", got.listen, err)
			}
			wantPorts := []corev1.ContainerPort{{Name: "metrics", ContainerPort: port, Protocol: corev1.ProtocolTCP}}
			if w.pod.Spec.HostNetwork {
				wantPorts[0].HostPort = port // the producer's: taken on every node
			}
			if got.apiListen != "" {
				_, api, err := splitListen(got.apiListen)
				if err != nil {
					t.Fatalf("API listen %q: %v", got.apiListen, err)
				}
				wantPorts = append(wantPorts, corev1.ContainerPort{Name: "https", ContainerPort: api, Protocol: corev1.ProtocolTCP})
			}
			if d := cmp.Diff(wantPorts, ctr.Ports); d != "" {
				t.Errorf("container ports (-want +got):\n%s", d)
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
			checkSecrets(t, c, ctr)
			checkComponentSpecifics(t, got, ctr, filepath.Join(tlsDir, "ca.crt"))
		})
	}
	for _, u := range natsURLs {
		if u != natsURLs[0] {
			t.Errorf("components disagree on nats.url: %v", natsURLs)
			break
		}
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

// TestBinaryCheck runs the real binary's --check on every ConfigMap with
// the pod's environment: the settings structs in cmd/capstream are the
// source of truth that the mirrors in settings_test.go copy, and an unknown
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
	tlsDir := podTLSDir(t)
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			w := workloadOf(t, objs, c)
			path := configPath(t, objs, c, w, t.TempDir(), tlsDir)
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
