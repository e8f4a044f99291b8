package producer

import (
	"errors"

	"github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/schemas"
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
// after the overrides), gives the NATS connection the inbox prefix of the
// node's identity when none is set (the only inbox nats-auth lets the
// node's producer read), and checks it all.
func (s *Settings) Validate() error {
	s.Producer.Node = s.Node
	if s.NATS.InboxPrefix == "" {
		if id, err := schemas.ProducerIdentity(s.Node); err == nil {
			s.NATS.InboxPrefix = id.InboxPrefix
		}
	}
	return errors.Join(s.ServiceSettings.Validate(), s.Producer.Validate())
}
