package main

// What the churn and router scale phases share: the clients of the dev
// kube-apiserver, their namespace and captures, and the children's
// configuration sections.

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/capstream/capstream/internal/testenv"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// kubeClients are a phase's clients of the kube-apiserver deps.sh runs.
type kubeClients struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	// kubeconfig is the file, which the router is given too.
	kubeconfig string
}

// connectKube builds the clients at qps and burst and installs the CRD.
func connectKube(ctx context.Context, qps float32, burst int) (kubeClients, error) {
	var k kubeClients
	path := testenv.Getenv(testenv.EnvKubeconfig)
	if path == "" {
		return k, errors.New(testenv.EnvKubeconfig + " is not set (is deploy/dev/deps.sh up?)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return k, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = qps, burst
	if k.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return k, err
	}
	if k.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return k, err
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return k, err
	}
	k.kubeconfig = path
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.InstallCRD(cctx, ext); err != nil {
		return k, err
	}
	return k, nil
}

// createNamespace creates namespace ns with labels.
func (k kubeClients) createNamespace(ctx context.Context, ns string, labels map[string]string) error {
	_, err := k.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// createCapture creates the PacketCapture ns/name selecting sel.
func (k kubeClients) createCapture(ctx context.Context, ns, name, sel string) error {
	u, err := testenv.CaptureObject(ns, name, sel)
	if err != nil {
		return err
	}
	if _, err := k.dyn.Resource(v3.Resource).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create capture %s/%s: %w", ns, name, err)
	}
	return nil
}

// routerYAML is a router's configuration: the kubeconfig, the bus, the
// namespace it watches and no election (it runs alone), with kube and
// router appended, indented, to their sections; every other setting is
// the default.
func (k kubeClients) routerYAML(natsURL, ns, kube, router string) string {
	return fmt.Sprintf("kube:\n  kubeconfig: %q\n%s", k.kubeconfig, kube) +
		natsYAML(natsURL, "capstream-router") +
		fmt.Sprintf("router:\n  namespace: %s\n%s  leaderElection:\n    enabled: false\n", ns, router)
}

// natsYAML is a child's nats section: the phase's embedded server, which
// is local, plain and anonymous, as the floor's: what is measured is the
// component, not TLS. The children must be told so explicitly.
func natsYAML(url, name string) string {
	return fmt.Sprintf("nats:\n  url: %s\n  name: %s\n  plaintext: true\n  anonymous: true\n", url, name)
}
