package router

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig loads the kubeconfig file, or the in-cluster config when none
// is set, with the configured rate limits and userAgent.
func (k KubeConfig) RESTConfig(userAgent string) (*rest.Config, error) {
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
	c.QPS, c.Burst = k.QPS, k.Burst
	c.UserAgent = userAgent
	return c, nil
}

// Clients builds the typed and dynamic clients the router's Deps take.
func (k KubeConfig) Clients(userAgent string) (kubernetes.Interface, dynamic.Interface, error) {
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
