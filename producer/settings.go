package producer

import (
	"errors"

	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the producer's environment overrides; the DaemonSet
// sets CAPSTREAM_PRODUCER_NODE from the downward API (spec.nodeName).
const EnvPrefix = "CAPSTREAM_PRODUCER"

// Settings is `capstream producer`'s configuration file: the node, the
// sections every service has (log, http, nats) and the producer's own.
type Settings struct {
	// Node is the Kubernetes node this producer captures on
	// (CAPSTREAM_PRODUCER_NODE). Required; it is copied into the
	// producer section.
	Node                string `yaml:"node"`
	run.ServiceSettings `yaml:",inline"`
	// Producer configures capture, batching and publishing.
	Producer Config `yaml:"producer"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{ServiceSettings: run.DefaultServiceSettings("capstream-producer"), Producer: DefaultConfig()}
}

// Validate copies the node into the producer section (config.Load calls it
// after the overrides) and checks it all.
func (s *Settings) Validate() error {
	s.Producer.Node = s.Node
	return errors.Join(s.ServiceSettings.Validate(), s.Producer.Validate())
}
