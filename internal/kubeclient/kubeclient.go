// Package kubeclient is how a capstream service reaches the Kubernetes
// API server as its own identity: one settings section (the kubeconfig
// file, or the pod's service account, and the client's rate limits) and
// the clients built from it. The router, the access API and the NATS auth
// callout share it; producers and sinks never import it (they build
// without Kubernetes libraries, internal/depcheck).
package kubeclient

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config is a service's `kube` section.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster
	// configuration (the pod's service account).
	Kubeconfig string `yaml:"kubeconfig"`
	// QPS and Burst bound the client's request rate. Defaults 50 and 100.
	QPS   float32 `yaml:"qps"`
	Burst int     `yaml:"burst"`
}

// Default returns the in-cluster defaults.
func Default() Config { return Config{QPS: 50, Burst: 100} }

// Validate checks the client rate limits.
func (k Config) Validate() error {
	if k.QPS <= 0 || k.Burst < 1 {
		return fmt.Errorf("kube: qps %g and burst %d must be positive", k.QPS, k.Burst)
	}
	return nil
}

// RESTConfig loads the kubeconfig file, or the in-cluster config when none
// is set, with the rate limits and userAgent.
func (k Config) RESTConfig(userAgent string) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	if k.Kubeconfig != "" {
		c, err = clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	} else {
		c, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	c.QPS, c.Burst, c.UserAgent = k.QPS, k.Burst, userAgent
	return c, nil
}

// Client builds the typed client.
func (k Config) Client(userAgent string) (kubernetes.Interface, error) {
	c, err := k.RESTConfig(userAgent)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kube, nil
}

// Clients builds the typed and dynamic clients.
func (k Config) Clients(userAgent string) (kubernetes.Interface, dynamic.Interface, error) {
	c, err := k.RESTConfig(userAgent)
	if err != nil {
		return nil, nil, err
	}
	kube, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(c)
	if err != nil {
		return nil, nil, fmt.Errorf("dynamic client: %w", err)
	}
	return kube, dyn, nil
}
