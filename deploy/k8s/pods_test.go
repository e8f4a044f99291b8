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

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
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

// checkNATS: the component connects over TLS, verified against the
// mounted CA, as its own identity: with its password from the environment
// (podEnv's dummy value of its Secret's nats-password), or, for the
// producer, with its pod's projected token and its node identity's inbox;
// nothing in its connection logs an insecurity warning.
func checkNATS(t *testing.T, c component, got loaded, ca, tlsDir string) {
	t.Helper()
	n := got.nats
	if !strings.HasPrefix(n.URL, "tls://") || n.Plaintext || n.Anonymous {
		t.Errorf("nats.url %s, plaintext %v, anonymous %v: want tls:// with credentials", n.URL, n.Plaintext, n.Anonymous)
	}
	if n.InboxPrefix != c.identity.InboxPrefix {
		t.Errorf("nats.inboxPrefix %q: want the identity's %q", n.InboxPrefix, c.identity.InboxPrefix)
	}
	if c.name == "producer" {
		token := filepath.Join(filepath.Dir(tlsDir), "nats", "token")
		if n.TokenFile != token || n.User != "" || n.Password != "" || n.CredsFile != "" || n.Token != "" {
			t.Errorf("nats: tokenFile %q, user %q, password set %v, credsFile %q, token set %v: want the projected token %s only",
				n.TokenFile, n.User, n.Password != "", n.CredsFile, n.Token != "", tokenMount+"/token")
		}
	} else {
		if n.User != c.identity.User {
			t.Errorf("nats.user %q: want the identity's %q", n.User, c.identity.User)
		}
		if n.Password != "dummy-nats-password" || n.CredsFile != "" || n.Token != "" || n.TokenFile != "" {
			t.Errorf("nats: password %q, credsFile %q, token set %v, tokenFile %q: want the password from the Secret only", n.Password, n.CredsFile, n.Token != "", n.TokenFile)
		}
	}
	if n.TLS.CAFile != ca || n.TLS.InsecureSkipVerify {
		t.Errorf("nats.tls %+v: want caFile %s, verified", n.TLS, tlsCA)
	}
	checkNoWarnings(t, "nats", n.Warnings())
}

// checkTokenVolume: the producer's NATS token is a projected token of its
// service account for tokenAudience, rotated hourly, mounted read-only at
// tokenMount; no other pod has one.
func checkTokenVolume(t *testing.T, c component, w workload, ctr corev1.Container) {
	t.Helper()
	var vol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == tokenMount {
			vol = m.Name
			if !m.ReadOnly || m.SubPath != "" {
				t.Errorf("mount %s: want read-only, no subPath (a subPath mount is never rotated)", tokenMount)
			}
		}
	}
	var got []corev1.ServiceAccountTokenProjection
	for _, v := range w.pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				got = append(got, *src.ServiceAccountToken)
				if v.Name != vol {
					t.Errorf("volume %s: a token not mounted at %s", v.Name, tokenMount)
				}
			}
		}
	}
	var want []corev1.ServiceAccountTokenProjection
	if c.name == "producer" {
		exp := int64(3600)
		want = []corev1.ServiceAccountTokenProjection{{Audience: tokenAudience, ExpirationSeconds: &exp, Path: "token"}}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("projected service-account tokens (-want +got):\n%s", d)
	}
}

// checkServerTLS: a component that serves an API of its own (the access
// API) mounts its certificate and key, the kubernetes.io/tls keys
// tls.crt and tls.key of its own Secret, read-only at accessTLSMount,
// readable by the pod's group only, and not optional; no other pod
// mounts a Secret volume.
func checkServerTLS(t *testing.T, c component, w workload, ctr corev1.Container) {
	t.Helper()
	var vol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == accessTLSMount {
			vol = m.Name
			if !m.ReadOnly || m.SubPath != "" {
				t.Errorf("mount %s: want read-only, no subPath (a subPath mount is never renewed)", accessTLSMount)
			}
		}
	}
	var got []string
	for _, v := range w.pod.Spec.Volumes {
		sec := v.Secret
		if sec == nil {
			continue
		}
		got = append(got, sec.SecretName)
		if v.Name != vol {
			t.Errorf("volume %s: Secret %s not mounted at %s", v.Name, sec.SecretName, accessTLSMount)
		}
		want := []corev1.KeyToPath{{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey}, {Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey}}
		if sec.Optional == nil || *sec.Optional || !cmp.Equal(want, sec.Items) {
			t.Errorf("volume %s: %+v, want keys tls.crt and tls.key, optional false", v.Name, sec)
		}
		if sec.DefaultMode == nil || *sec.DefaultMode != 0o440 {
			t.Errorf("volume %s: defaultMode %s, want 0440 (owner and the pod's fsGroup)", v.Name, ptrString(sec.DefaultMode))
		}
		psc := w.pod.Spec.SecurityContext
		if psc == nil || psc.FSGroup == nil || psc.RunAsGroup == nil || *psc.FSGroup != *psc.RunAsGroup {
			t.Error("fsGroup: want the pod's runAsGroup, so the process can read the 0440 key")
		}
	}
	var want []string
	if c.tlsSecret != "" {
		want = []string{c.tlsSecret}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Secret volumes (-want +got):\n%s", d)
	}
}

func checkNoWarnings(t *testing.T, section string, warnings []string) {
	t.Helper()
	for _, w := range warnings {
		if w != "" {
			t.Errorf("%s: %s", section, w)
		}
	}
}

// checkTLSMount: the CA ConfigMap capstream-ca is mounted read-only at
// tlsMount, with its key ca.crt, and is not optional, so a pod never runs
// with a TLS section whose CA is missing.
func checkTLSMount(t *testing.T, w workload, ctr corev1.Container) {
	t.Helper()
	var vol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == tlsMount {
			vol = m.Name
			if !m.ReadOnly || m.SubPath != "" {
				t.Errorf("mount %s: want read-only, no subPath", tlsMount)
			}
		}
	}
	for _, v := range w.pod.Spec.Volumes {
		if v.Name != vol {
			continue
		}
		cm := v.ConfigMap
		want := []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}
		if cm == nil || cm.Name != "capstream-ca" || cm.Optional == nil || *cm.Optional || !cmp.Equal(want, cm.Items) {
			t.Errorf("volume %s: %+v, want ConfigMap capstream-ca, key ca.crt, optional false", v.Name, v.VolumeSource)
		}
		return
	}
	t.Errorf("%s: no volume mounted", tlsMount)
}

// checkSecrets: every secret the container gets comes from the
// component's own Secret, capstream-<name>-credentials, by the keys
// README.md lists, none optional: a pod whose Secret lacks a key does
// not start, rather than start without a credential.
func checkSecrets(t *testing.T, c component, ctr corev1.Container) {
	t.Helper()
	own := "capstream-" + c.name + "-credentials"
	got := map[string]string{}
	for _, e := range ctr.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != own {
			t.Errorf("env %s: Secret %s, want %s", e.Name, ref.Name, own)
		}
		if ref.Optional != nil && *ref.Optional {
			t.Errorf("env %s: optional", e.Name)
		}
		got[e.Name] = ref.Key
	}
	if d := cmp.Diff(c.secretKeys, got); d != "" {
		t.Errorf("keys of %s by variable (-want +got):\n%s", own, d)
	}
	if len(ctr.EnvFrom) != 0 {
		t.Errorf("envFrom %+v: every variable is named", ctr.EnvFrom)
	}
}

func checkComponentSpecifics(t *testing.T, got loaded, ctr corev1.Container, ca string) {
	t.Helper()
	envFrom := map[string]*corev1.EnvVarSource{}
	for _, e := range ctr.Env {
		envFrom[e.Name] = e.ValueFrom
	}
	// fromField checks the variable comes from the downward API's field.
	fromField := func(name, field string) {
		if v := envFrom[name]; v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != field {
			t.Errorf("env %s: want the downward API's %s", name, field)
		}
	}
	// secureClickHouse: the secure native port, verified with the CA, and
	// the user and password of the component's Secret.
	secureClickHouse := func(ch clients.ClickHouseConfig) {
		if !ch.Secure || ch.TLS.CAFile != ca || ch.TLS.InsecureSkipVerify || !strings.HasSuffix(ch.Addr, ":9440") {
			t.Errorf("clickhouse %s, secure %v, tls %+v: want the secure port 9440 verified with %s", ch.Addr, ch.Secure, ch.TLS, tlsCA)
		}
		if ch.Username != "dummy-clickhouse-username" || ch.Password != "dummy-clickhouse-password" {
			t.Error("clickhouse username and password do not come from the Secret")
		}
		checkNoWarnings(t, "clickhouse", ch.Warnings())
	}
	switch s := got.settings.(type) {
	case *router.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		le := s.Router.LeaderElection
		if !le.Enabled || le.Namespace != namespace {
			t.Errorf("leader election %+v: want enabled in %s", le, namespace)
		}
		fromField("CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE", "metadata.namespace")
		fromField("CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_IDENTITY", "metadata.name")
		if s.Router.Namespace != "" {
			t.Errorf("router.namespace %q: the deployment watches every namespace", s.Router.Namespace)
		}
	case *producer.Settings:
		fromField("CAPSTREAM_PRODUCER_NODE", "spec.nodeName")
		if s.Producer.Source != producer.SourceAFPacket || s.Producer.AFPacket.NetNS != "" {
			t.Errorf("producer: want live afpacket capture in the host namespace, have source %q netns %q", s.Producer.Source, s.Producer.AFPacket.NetNS)
		}
	case *pcapstore.Settings:
		if s.S3.AccessKey != "dummy-s3-access-key" || s.S3.SecretKey != "dummy-s3-secret-key" {
			t.Error("S3 keys do not come from the Secret")
		}
		if !s.S3.Secure || s.S3.TLS.CAFile != ca || s.S3.TLS.InsecureSkipVerify {
			t.Errorf("s3 secure %v, tls %+v: want HTTPS verified with %s", s.S3.Secure, s.S3.TLS, tlsCA)
		}
		checkNoWarnings(t, "s3", s.S3.Warnings())
		secureClickHouse(s.ClickHouse)
	case *flowstore.Settings:
		secureClickHouse(s.ClickHouse)
	case *natsauth.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		want := natsauth.DefaultConfig()
		if s.Callout.Audience != tokenAudience || !cmp.Equal(want.ServiceAccounts, s.Callout.ServiceAccounts) || s.Callout.Account != "$G" {
			t.Errorf("callout audience %q, service accounts %v, account %q: want the producers' %s tokens of %v, in $G",
				s.Callout.Audience, s.Callout.ServiceAccounts, s.Callout.Account, tokenAudience, want.ServiceAccounts)
		}
		if s.Callout.MaxTTL > time.Hour {
			t.Errorf("callout.maxTTL %s: above the tokens' hour", s.Callout.MaxTTL)
		}
	case *access.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		a := s.Access
		if a.Plaintext || a.CertFile != accessTLSMount+"/"+corev1.TLSCertKey || a.KeyFile != accessTLSMount+"/"+corev1.TLSPrivateKeyKey {
			t.Errorf("access: plaintext %v, certFile %q, keyFile %q: want HTTPS with the mounted %s/tls.{crt,key}", a.Plaintext, a.CertFile, a.KeyFile, accessTLSMount)
		}
		checkNoWarnings(t, "access", a.Warnings())
		if s.S3.AccessKey != "dummy-s3-access-key" || s.S3.SecretKey != "dummy-s3-secret-key" {
			t.Error("S3 keys do not come from the Secret")
		}
		if !s.S3.Secure || s.S3.TLS.CAFile != ca || s.S3.TLS.InsecureSkipVerify {
			t.Errorf("s3 secure %v, tls %+v: want HTTPS verified with %s", s.S3.Secure, s.S3.TLS, tlsCA)
		}
		checkNoWarnings(t, "s3", s.S3.Warnings())
		secureClickHouse(s.ClickHouse)
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
			wantToken := c.kubeAPI
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

// podSecrets are the names of the Secrets a pod template reads, by any
// route: environment variables, envFrom, secret and projected volumes.
// Image pull secrets are the registry's, not a component's, and are left
// out.
func podSecrets(spec corev1.PodSpec) []string {
	var names []string
	for _, ctr := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, e := range ctr.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				names = append(names, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range ctr.EnvFrom {
			if e.SecretRef != nil {
				names = append(names, e.SecretRef.Name)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					names = append(names, src.Secret.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestSecretsPerComponent: each component reads exactly one Secret of
// credentials, its own (and the access API its TLS Secret), and no Secret
// is read by two components, so the keys found on one
// compromised node or pod open only that component's access. The
// producer reads none: its credential is its pod's own token.
func TestSecretsPerComponent(t *testing.T) {
	objs := loadManifests(t)
	readers := map[string][]string{}
	for _, c := range components {
		got := podSecrets(workloadOf(t, objs, c).pod.Spec)
		var want []string
		if len(c.secretKeys) > 0 {
			want = []string{"capstream-" + c.name + "-credentials"}
		}
		if c.tlsSecret != "" {
			want = append(want, c.tlsSecret)
			slices.Sort(want)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s reads Secrets (-want +got):\n%s", c.name, d)
		}
		for _, s := range got {
			readers[s] = append(readers[s], c.name)
		}
	}
	for s, r := range readers {
		if len(r) > 1 {
			t.Errorf("Secret %s is read by %v", s, r)
		}
	}
}
