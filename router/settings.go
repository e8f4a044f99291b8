package router

import (
	"errors"

	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the router's environment overrides, e.g.
// CAPSTREAM_ROUTER_NATS_URL or CAPSTREAM_ROUTER_KUBE_KUBECONFIG.
const EnvPrefix = "CAPSTREAM_ROUTER"

// Settings is `capstream router`'s configuration file: the sections every
// service has (log, http, nats), the API server, and the router's own.
// The deploy/k8s tests load the manifests' ConfigMaps into it.
type Settings struct {
	run.ServiceSettings `yaml:",inline"`
	// Kube says how to reach the API server; no kubeconfig means in-cluster.
	Kube KubeConfig `yaml:"kube"`
	// Router configures reconciling, status and leader election.
	Router Config `yaml:"router"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{ServiceSettings: run.DefaultServiceSettings("capstream-router"), Kube: DefaultKubeConfig(), Router: DefaultConfig()}
}

// Validate checks every section; config.Load calls it after the overrides.
func (s *Settings) Validate() error {
	return errors.Join(s.ServiceSettings.Validate(), s.Kube.Validate(), s.Router.Validate())
}
