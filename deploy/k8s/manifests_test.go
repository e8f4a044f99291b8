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
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/capstream/capstream/internal/testenv"
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

// exampleDir holds the example Roles for users, which `kubectl apply -f
// deploy/k8s/` does not read (it does not recurse).
const exampleDir = "examples"

// manifestFiles are the files `kubectl apply -f dir` reads, in the order
// it reads them: dir's own, not its subdirectories'.
func manifestFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml", "*.json"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
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

// loadManifests decodes every document of deploy/k8s strictly (unknown
// fields are errors) with the client-go scheme plus apiextensions.
func loadManifests(t *testing.T) []object {
	t.Helper()
	return loadManifestsIn(t, ".")
}

// loadManifestsIn decodes the documents `kubectl apply -f dir` reads.
func loadManifestsIn(t *testing.T, dir string) []object {
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
	for _, f := range manifestFiles(t, dir) {
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

// componentNamed is the entry of components named name.
func componentNamed(t *testing.T, name string) component {
	t.Helper()
	for _, c := range components {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no component %s", name)
	return component{}
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
		"ServiceAccount capstream-system/capstream-nats-auth",
		"ServiceAccount capstream-system/capstream-sink",
		"ServiceAccount capstream-system/capstream-access",
		"ClusterRole /capstream-router",
		"ClusterRoleBinding /capstream-router",
		"ClusterRole /capstream-nats-auth",
		"ClusterRoleBinding /capstream-nats-auth",
		"ClusterRole /capstream-access",
		"ClusterRoleBinding /capstream-access",
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
		"ConfigMap capstream-system/capstream-nats-auth",
		"Deployment capstream-system/capstream-nats-auth",
		"PodDisruptionBudget capstream-system/capstream-nats-auth",
		"ConfigMap capstream-system/capstream-producer",
		"DaemonSet capstream-system/capstream-producer",
		"ConfigMap capstream-system/capstream-access",
		"Deployment capstream-system/capstream-access",
		"Service capstream-system/capstream-access",
		"PodDisruptionBudget capstream-system/capstream-access",
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

// Addresses of the external dependencies, as README.md documents them.
const (
	natsURL        = "tls://nats.nats.svc:4222"
	clickhouseAddr = "clickhouse.clickhouse.svc:9440"
	s3Endpoint     = "minio.minio.svc:9000"
)

// TestREADME keeps README.md in step: the dependency addresses it
// documents are the ConfigMaps', it tells how to create the CA ConfigMap
// and every component's Secret with each key the pod reads, and its
// CAPSTREAM_PACKETS JSON is schemas.PacketsStream with the default limits.
func TestREADME(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	must := []string{natsURL, clickhouseAddr, s3Endpoint, image, "## Deploy",
		"create configmap capstream-ca --from-file=ca.crt=", authConfPath, "nats.plaintext: true",
		// The access API: its certificate, how users reach it, their Roles.
		"create secret tls capstream-access-tls", "CAPSTREAM_ACCESS_URL=https://capstream-access.capstream-system.svc",
		"CAPSTREAM_ACCESS_CA=", exampleDir + "/packetcapture-roles.yaml"}
	for _, u := range natsUsers() {
		must = append(must, "--from-literal="+u.passwordVar+"=")
	}
	must = append(must, "--from-literal="+issuerVar+"=")
	for _, c := range components {
		if len(c.secretKeys) == 0 {
			continue // the producer: its pod's token
		}
		must = append(must, "create secret generic capstream-"+c.name+"-credentials")
		for _, key := range c.secretKeys {
			must = append(must, "--from-literal="+key+"=")
		}
	}
	for _, s := range must {
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
		if c.noNATS {
			if s.NATS.URL != "" {
				t.Errorf("%s: nats.url %q, but it never connects to NATS", c.name, s.NATS.URL)
			}
		} else if s.NATS.URL != natsURL {
			t.Errorf("%s: nats.url %q, README says %s", c.name, s.NATS.URL, natsURL)
		}
		if (strings.HasPrefix(c.name, "sink") || c.name == "access") && s.ClickHouse.Addr != clickhouseAddr {
			t.Errorf("%s: clickhouse.addr %q, README says %s", c.name, s.ClickHouse.Addr, clickhouseAddr)
		}
		if (c.name == "sink-pcap" || c.name == "access") && s.S3.Endpoint != s3Endpoint {
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
