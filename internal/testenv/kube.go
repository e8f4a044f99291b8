package testenv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	v3 "github.com/capstream/capstream/schemas/v3"
)

// KubeEnv is a client of the real kube-apiserver with the PacketCapture CRD
// installed.
type KubeEnv struct {
	// Kubeconfig is the file kubectl and the router can use.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Ext        apiextensionsclient.Interface
	Dynamic    dynamic.Interface
}

var (
	kubeProbe probe
	crdOnce   sync.Once
	crdErr    error
)

// Kube connects to the kube-apiserver deps.sh started and makes sure the
// PacketCapture CRD is installed and established (once per test binary).
func Kube(t testing.TB) *KubeEnv {
	t.Helper()
	skipShort(t, "kube-apiserver")
	path := Getenv(EnvKubeconfig)
	var env *KubeEnv
	err := kubeProbe.check(func() error {
		if path == "" {
			return errors.New(EnvKubeconfig + " is not set")
		}
		var err error
		env, err = newKubeEnv(path)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		return env.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
	if err != nil {
		unavailable(t, "kube-apiserver", err)
	}
	if env == nil {
		if env, err = newKubeEnv(path); err != nil {
			t.Fatalf("kube client: %v", err)
		}
	}
	crdOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		crdErr = InstallCRD(ctx, env.Ext)
	})
	if crdErr != nil {
		t.Fatalf("install PacketCapture CRD: %v", crdErr)
	}
	return env
}

func newKubeEnv(path string) (*KubeEnv, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	env := &KubeEnv{Kubeconfig: path, Config: cfg}
	if env.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if env.Ext, err = apiextensionsclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if env.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return env, nil
}

// InstallCRD creates or updates the PacketCapture CRD and waits until the
// server reports it Established.
func InstallCRD(ctx context.Context, c apiextensionsclient.Interface) error {
	crd, err := v3.CRD()
	if err != nil {
		return err
	}
	crds := c.ApiextensionsV1().CustomResourceDefinitions()
	existing, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = crds.Create(ctx, crd, metav1.CreateOptions{})
	case err == nil:
		crd.ResourceVersion = existing.ResourceVersion
		_, err = crds.Update(ctx, crd, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("apply crd %s: %w", crd.Name, err)
	}
	for {
		got, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get crd %s: %w", crd.Name, err)
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("crd %s not established: %w", crd.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Namespace creates a namespace with a random name and the given labels and
// deletes it when the test ends.
func (k *KubeEnv) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "test-" + randomHex(5), Labels: labels}}
	if _, err := k.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(cleanupTimeout)
		defer cancel()
		if err := k.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// EnsureNamespace creates a namespace with a fixed name (such as the seed's
// sample-namespace) if it does not exist. It is not deleted afterwards,
// because other tests in the binary may use it too.
func (k *KubeEnv) EnsureNamespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	_, err := k.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// CreateCapture creates a PacketCapture called name in ns with the
// selector sel and returns the object as the API server stored it.
func (k *KubeEnv) CreateCapture(t testing.TB, ns, name, sel string) *unstructured.Unstructured {
	t.Helper()
	u, err := CaptureObject(ns, name, sel)
	if err != nil {
		t.Fatal(err)
	}
	created, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).Create(t.Context(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create capture %s/%s: %v", ns, name, err)
	}
	return created
}
