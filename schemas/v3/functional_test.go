package v3_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/testenv"
	v3 "github.com/capstream/capstream/schemas/v3"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// create sends a manifest to the real API server as kubectl would.
func create(t *testing.T, k *testenv.KubeEnv, manifest string) (*unstructured.Unstructured, error) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("test manifest: %v", err)
	}
	return k.Dynamic.Resource(v3.Resource).Namespace(obj.GetNamespace()).Create(t.Context(), obj, metav1.CreateOptions{})
}

func TestCRDEstablishedWithNames(t *testing.T) {
	k := testenv.Kube(t)
	crd, err := k.Ext.ApiextensionsV1().CustomResourceDefinitions().Get(t.Context(), "packetcaptures.projectcalico.org", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Scope != apiextensionsv1.NamespaceScoped || crd.Spec.Names.Singular != "packetcapture" || crd.Spec.Names.Plural != "packetcaptures" {
		t.Errorf("crd names/scope = %+v %s", crd.Spec.Names, crd.Spec.Scope)
	}
	if v := crd.Spec.Versions; len(v) != 1 || v[0].Name != "v3" || v[0].Subresources == nil || v[0].Subresources.Status == nil {
		t.Errorf("crd versions = %+v, want v3 with status subresource", v)
	}
}

// TestSampleAcceptedAndKubectlNames creates the seed's sample and resolves
// it through kubectl under all six names Calico users type.
func TestSampleAcceptedAndKubectlNames(t *testing.T) {
	k := testenv.Kube(t)
	k.EnsureNamespace(t, "sample-namespace")
	sample, err := os.ReadFile("testdata/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Dynamic.Resource(v3.Resource).Namespace("sample-namespace").Delete(t.Context(), "sample-capture", metav1.DeleteOptions{})
	got, err := create(t, k, string(sample))
	if err != nil {
		t.Fatalf("sample rejected: %v", err)
	}
	t.Cleanup(func() {
		_ = k.Dynamic.Resource(v3.Resource).Namespace("sample-namespace").Delete(t.Context(), "sample-capture", metav1.DeleteOptions{})
	})
	var pc v3.PacketCapture
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(got.Object, &pc); err != nil {
		t.Fatal(err)
	}
	if pc.Spec.Selector != `k8s-app == "sample-app"` {
		t.Errorf("stored selector = %q", pc.Spec.Selector)
	}

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl (part of the machine image) not found: %v", err)
	}
	for _, name := range []string{"packetcapture", "packetcaptures", "packetcapture.projectcalico.org",
		"packetcaptures.projectcalico.org", "packetcapture.p", "packetcaptures.p"} {
		t.Run(name, func(t *testing.T) {
			out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", k.Kubeconfig,
				"get", name, "sample-capture", "-n", "sample-namespace", "-o", "name").CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl get %s: %v: %s", name, err, out)
			}
			if want := "packetcapture.projectcalico.org/sample-capture"; strings.TrimSpace(string(out)) != want {
				t.Errorf("kubectl get %s = %q, want %q", name, out, want)
			}
		})
	}
}

func TestFullSpecAccepted(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.Replace(string(full), "namespace: sample-namespace", "namespace: "+ns, 1)
	got, err := create(t, k, manifest)
	if err != nil {
		t.Fatalf("full spec rejected: %v", err)
	}
	var pc v3.PacketCapture
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(got.Object, &pc); err != nil {
		t.Fatal(err)
	}
	if f := pc.Spec.Filters; len(f) != 3 || f[0].Ports[1].StrVal != "8000:8080" || f[1].Protocol.IntVal != 17 || pc.Spec.EndTime == nil {
		t.Errorf("stored spec = %+v", pc.Spec)
	}
}

// TestInvalidRejected checks the server refuses what the schema can express
// and names the field in its message.
func TestInvalidRejected(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	cases := map[string]struct {
		spec      string
		wantField string
	}{
		"bad protocol name":      {`filters: [{protocol: TCPX}]`, "spec.filters[0].protocol"},
		"protocol number > 255":  {`filters: [{protocol: 256}]`, "spec.filters[0].protocol"},
		"port out of range":      {`filters: [{protocol: TCP, ports: [65536]}]`, "spec.filters[0].ports[0]"},
		"bad port range syntax":  {`filters: [{protocol: TCP, ports: ["80-90"]}]`, "spec.filters[0].ports[0]"},
		"port range hi too big":  {`filters: [{protocol: TCP, ports: ["80:99999"]}]`, "spec.filters[0].ports[0]"},
		"negative port":          {`filters: [{protocol: UDP, ports: [-1]}]`, "spec.filters[0].ports[0]"},
		"malformed start time":   {`startTime: "yesterday"`, "spec.startTime"},
		"time without zone":      {`endTime: "2026-11-27T10:00:00"`, "spec.endTime"},
		"selector of wrong type": {`selector: {a: b}`, "spec.selector"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			manifest := "apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata:\n  name: bad\n  namespace: " + ns +
				"\nspec:\n  " + tc.spec + "\n"
			_, err := create(t, k, manifest)
			if err == nil {
				t.Fatalf("accepted %s", tc.spec)
			}
			var status apierrors.APIStatus
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) || !errors.As(err, &status) {
				t.Fatalf("error is not Invalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.wantField) {
				t.Errorf("message does not name %s: %v", tc.wantField, err)
			}
		})
	}
}

// TestStatusSubresource checks status is written through /status only, as
// the router will do, and that spec writes do not touch it.
func TestStatusSubresource(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	obj, err := create(t, k, "apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata:\n  name: st\n  namespace: "+ns+"\nspec:\n  selector: all()\n")
	if err != nil {
		t.Fatal(err)
	}
	state := v3.StateCapturing
	status := v3.PacketCaptureStatus{
		Files:   []v3.PacketCaptureFile{{Node: "node-a", Directory: "s3://captures/" + ns + "/st/node-a/", FileNames: []string{"x.pcap"}, State: &state, Packets: 3}},
		Packets: 3,
		Conditions: []metav1.Condition{{Type: v3.ConditionReady, Status: metav1.ConditionTrue, Reason: "Capturing",
			Message: "capturing on 1 node", LastTransitionTime: metav1.Now()}},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		t.Fatal(err)
	}
	obj.Object["status"] = u
	got, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).UpdateStatus(t.Context(), obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	var pc v3.PacketCapture
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(got.Object, &pc); err != nil {
		t.Fatal(err)
	}
	if len(pc.Status.Files) != 1 || *pc.Status.Files[0].State != v3.StateCapturing || pc.Status.Files[0].FileNames[0] != "x.pcap" {
		t.Errorf("status.files = %+v", pc.Status.Files)
	}
	bad := state
	bad = "Exploded"
	status.Files[0].State = &bad
	u, _ = runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	got.Object["status"] = u
	if _, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).UpdateStatus(t.Context(), got, metav1.UpdateOptions{}); err == nil {
		t.Error("status with unknown state accepted")
	}
}
