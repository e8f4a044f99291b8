package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/access/accesstest"
	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// accessSA is the access API's identity in the cluster.
const accessSA = "system:serviceaccount:" + namespace + ":capstream-access"

// devTLSDirs stands in for the access pod's two TLS mounts with the dev
// services' CA (deps.sh), which signed the S3 and ClickHouse certificates,
// as ca.crt, and its server certificate and key as tls.crt and tls.key.
func devTLSDirs(t *testing.T) (caDir, certDir string) {
	t.Helper()
	ca := testenv.Getenv(testenv.EnvTLSCA)
	cert, key := filepath.Join(filepath.Dir(ca), "server.pem"), filepath.Join(filepath.Dir(ca), "server-key.pem")
	if _, err := os.Stat(key); ca == "" || err != nil {
		if testenv.RequireDeps() {
			t.Fatalf("%s: no dev CA and server certificate (deploy/dev/deps.sh up)", testenv.EnvTLSCA)
		}
		t.Skipf("%s: no dev CA and server certificate (deploy/dev/deps.sh up)", testenv.EnvTLSCA)
	}
	root := t.TempDir()
	caDir, certDir = filepath.Join(root, "tls"), filepath.Join(root, "access-tls")
	for dst, src := range map[string]string{
		filepath.Join(caDir, "ca.crt"):                  ca,
		filepath.Join(certDir, corev1.TLSCertKey):       cert,
		filepath.Join(certDir, corev1.TLSPrivateKeyKey): key,
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caDir, certDir
}

// TestAccessFromManifests runs the access API as 40-access.yaml
// configures it (its ConfigMap, the pod's environment, its TLS mounts),
// pointed at the dev S3, ClickHouse and kube-apiserver, as the
// capstream-access service account of 02-rbac.yaml (impersonated, so the
// API server applies exactly that ClusterRole to the API's own calls),
// and calls it as the dev token-file user bound with the example Roles
// of examples/ in one namespace: that namespace's capture lists and
// downloads byte for byte, the same capture elsewhere is 403, and no token
// is 401. It shows the ClusterRole is enough for TokenReview,
// SubjectAccessReview and the capture's Get, and that the example Roles
// are what the API asks about.
func TestAccessFromManifests(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	bucket := testenv.S3(t)
	caDir, certDir := devTLSDirs(t)
	kube.EnsureNamespace(t, namespace)
	if _, err := kubectl(t, kube.Kubeconfig, "apply", "--server-side", "--force-conflicts",
		"--field-manager=capstream-manifests-test", "-f", "02-rbac.yaml"); err != nil {
		t.Fatal(err)
	}
	user := kube.User(t)
	ns, other := kube.Namespace(t, nil), kube.Namespace(t, nil)
	for _, f := range manifestFiles(t, exampleDir) {
		data := inNamespace(t, f, ns)
		// The examples' user, replaced as a namespace admin would.
		data = bytes.ReplaceAll(data, []byte("kind: User\n    name: alice\n"), []byte("kind: User\n    name: "+user.Name+"\n"))
		if !bytes.Contains(data, []byte(user.Name)) {
			t.Fatalf("%s: no User alice to replace", f)
		}
		if _, err := applyStdin(t, kube.Kubeconfig, data, "--server-side", "--field-manager=capstream-manifests-test"); err != nil {
			t.Fatal(err)
		}
	}

	// The same capture name, with one object each, in both namespaces.
	objs := loadManifests(t)
	c := componentNamed(t, "access")
	w := workloadOf(t, objs, c)
	path := configPath(t, objs, c, w, t.TempDir(), caDir)
	cfgText, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfgText = bytes.ReplaceAll(cfgText, []byte(accessTLSMount+"/"), []byte(certDir+"/"))
	if err := os.WriteFile(path, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	s3c := bucket.Config()
	ch, _ := testenv.ClickHouseReaderConfig("default")
	env := append(podEnv(t, w.pod.Spec.Containers[0]),
		"CAPSTREAM_ACCESS_S3_ENDPOINT="+s3c.Endpoint, "CAPSTREAM_ACCESS_S3_BUCKET="+s3c.Bucket, "CAPSTREAM_ACCESS_S3_REGION="+s3c.Region,
		"CAPSTREAM_ACCESS_S3_ACCESSKEY="+s3c.AccessKey, "CAPSTREAM_ACCESS_S3_SECRETKEY="+s3c.SecretKey,
		"CAPSTREAM_ACCESS_CLICKHOUSE_ADDR="+ch.Addr, "CAPSTREAM_ACCESS_CLICKHOUSE_USERNAME="+ch.Username,
		"CAPSTREAM_ACCESS_CLICKHOUSE_PASSWORD="+ch.Password,
		"CAPSTREAM_ACCESS_ACCESS_LISTEN=127.0.0.1:0",
		"CAPSTREAM_ACCESS_KUBE_KUBECONFIG="+kube.Kubeconfig)
	s := access.DefaultSettings()
	if err := config.Load(path, access.EnvPrefix, env, s); err != nil {
		t.Fatal(err)
	}
	if !s.S3.Secure || !s.ClickHouse.Secure || s.Access.CertFile != certDir+"/"+corev1.TLSCertKey {
		t.Fatalf("the ConfigMap's TLS settings did not carry over: s3 %v, clickhouse %v, certFile %s", s.S3.Secure, s.ClickHouse.Secure, s.Access.CertFile)
	}

	const name = "web"
	key := "node-1/web-0_eth0/1700000000000000000-000001.pcap"
	want := []byte("\xd4\xc3\xb2\xa1\x02\x00\x04\x00 capstream manifests test pcap bytes")
	s3, err := s3c.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ns, other} {
		uid := string(kube.CreateCapture(t, n, name, "all()").GetUID())
		full := schemas.CaptureDir(s.Access.Prefix, n, name, uid) + key
		if _, err := s3.PutObject(t.Context(), s3c.Bucket, full, bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s3.RemoveObject(context.Background(), s3c.Bucket, full, minio.RemoveObjectOptions{}) })
	}

	rc, err := s.Kube.RESTConfig("capstream-access-manifests-test")
	if err != nil {
		t.Fatal(err)
	}
	rc.Impersonate = rest.ImpersonationConfig{UserName: accessSA,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	chConn, err := s.ClickHouse.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chConn.Close() })
	api := accesstest.Start(t, s.Access, access.Deps{Logger: testenv.Logger(t), Registerer: prometheus.NewRegistry(),
		Kube: kc, Dynamic: dyn, S3: s3, Bucket: s.S3.Bucket, ClickHouse: chConn}, filepath.Join(caDir, "ca.crt"))
	api.Client.Timeout = time.Minute
	do := func(method, path, token string) (int, []byte) {
		t.Helper()
		code, body, _ := api.Do(t, method, path, token)
		return code, body
	}
	files := func(n string) string { return "/v1/namespaces/" + n + "/packetcaptures/" + name + "/files" }

	// The RBAC authorizer learns of the new bindings through a watch.
	var list access.FileList
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body := do(http.MethodGet, files(ns), user.Token)
		if code != http.StatusOK {
			return fmt.Errorf("GET files in %s: %d %s", ns, code, body)
		}
		return json.Unmarshal(body, &list)
	})
	if len(list.Objects) != 1 || list.Objects[0].Key != key || list.Objects[0].Size != int64(len(want)) {
		t.Fatalf("listing %+v, want the one object %s of %d bytes", list.Objects, key, len(want))
	}
	if code, body := do(http.MethodGet, files(ns)+"/"+key, user.Token); code != http.StatusOK || !bytes.Equal(body, want) {
		t.Errorf("download: %d, %q; want 200 and the stored bytes", code, body)
	}
	if code, body := do(http.MethodGet, files(other), user.Token); code != http.StatusForbidden {
		t.Errorf("GET files in %s, where no Role binds the user: %d %s, want 403", other, code, body)
	}
	// The reader Role has no delete: clean is the admin Role's.
	if code, body := do(http.MethodDelete, files(ns), user.Token); code != http.StatusForbidden || !strings.Contains(string(body), "delete") {
		t.Errorf("DELETE files with packetcapture-files-reader: %d %s, want 403 naming delete", code, body)
	}
	if code, body := do(http.MethodGet, files(ns), ""); code != http.StatusUnauthorized {
		t.Errorf("GET files without a token: %d %s, want 401", code, body)
	}
}

// TestAccessService: Service capstream-access selects the access pods
// and serves port 443 from their https port; and the API reads the
// objects where the pcap sink writes them (endpoint, bucket, region,
// prefix) and the flows where the flow sink inserts them.
func TestAccessService(t *testing.T) {
	objs := loadManifests(t)
	c := componentNamed(t, "access")
	w := workloadOf(t, objs, c)
	svc := find[*corev1.Service](t, objs, "capstream-access")
	if d := cmp.Diff(w.pod.Labels, svc.Spec.Selector); d != "" {
		t.Errorf("Service selector (-pod labels +selector):\n%s", d)
	}
	want := []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP}}
	if d := cmp.Diff(want, svc.Spec.Ports); d != "" {
		t.Errorf("Service ports (-want +got):\n%s", d)
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("Service type %s: exposing it outside the cluster is the operator's choice (README step 6)", svc.Spec.Type)
	}

	tlsDir := podTLSDir(t)
	load := func(name string) any {
		c := componentNamed(t, name)
		w := workloadOf(t, objs, c)
		got, err := c.load(configPath(t, objs, c, w, t.TempDir(), tlsDir), podEnv(t, w.pod.Spec.Containers[0]))
		if err != nil {
			t.Fatal(err)
		}
		return got.settings
	}
	a := load("access").(*access.Settings)
	p := load("sink-pcap").(*pcapstore.Settings)
	f := load("sink-flows").(*flowstore.Settings)
	if a.S3.Endpoint != p.S3.Endpoint || a.S3.Bucket != p.S3.Bucket || a.S3.Region != p.S3.Region || a.Access.Prefix != p.Pcap.Prefix {
		t.Errorf("access reads s3 %s bucket %s region %q prefix %s; the pcap sink writes %s bucket %s region %q prefix %s",
			a.S3.Endpoint, a.S3.Bucket, a.S3.Region, a.Access.Prefix, p.S3.Endpoint, p.S3.Bucket, p.S3.Region, p.Pcap.Prefix)
	}
	if a.ClickHouse.Addr != f.ClickHouse.Addr || a.ClickHouse.Database != f.ClickHouse.Database {
		t.Errorf("access queries %s/%s; the flow sink inserts into %s/%s", a.ClickHouse.Addr, a.ClickHouse.Database, f.ClickHouse.Addr, f.ClickHouse.Database)
	}
}
