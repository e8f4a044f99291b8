package router

import (
	"errors"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the router's environment overrides, e.g.
// CAPSTREAM_ROUTER_NATS_URL or CAPSTREAM_ROUTER_KUBE_KUBECONFIG.
const EnvPrefix = "CAPSTREAM_ROUTER"

// Settings is `capstream router`'s configuration file. Connections sit at
// the top so their overrides are short (CAPSTREAM_ROUTER_NATS_URL,
// CAPSTREAM_ROUTER_KUBE_KUBECONFIG). The deploy/k8s tests load the
// manifests' ConfigMaps into it.
type Settings struct {
	// Kube says how to reach the API server; no kubeconfig means in-cluster.
	Kube KubeConfig `yaml:"kube"`
	// NATS is the NATS connection.
	NATS clients.NATSConfig `yaml:"nats"`
	// Log configures the logger.
	Log run.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP run.HTTPConfig `yaml:"http"`
	// Router configures reconciling, status and leader election.
	Router Config `yaml:"router"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{
		Kube:   DefaultKubeConfig(),
		NATS:   clients.DefaultNATSConfig("capstream-router"),
		Log:    run.DefaultLogConfig(),
		HTTP:   run.DefaultHTTPConfig(),
		Router: DefaultConfig(),
	}
}

// Validate checks every section; config.Load calls it after the overrides.
func (s *Settings) Validate() error {
	return errors.Join(s.Kube.Validate(), s.NATS.Validate(), s.Log.Validate(), s.Router.Validate())
}
