package producer

import (
	"errors"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the producer's environment overrides; the DaemonSet
// sets CAPSTREAM_PRODUCER_NODE from the downward API (spec.nodeName).
const EnvPrefix = "CAPSTREAM_PRODUCER"

// Settings is `capstream producer`'s configuration file. Node and NATS sit
// at the top so their overrides are CAPSTREAM_PRODUCER_NODE and
// CAPSTREAM_PRODUCER_NATS_URL.
type Settings struct {
	// Node is the Kubernetes node this producer captures on. Required; it
	// is copied into the producer section.
	Node string `yaml:"node"`
	// NATS is the NATS connection.
	NATS clients.NATSConfig `yaml:"nats"`
	// Log configures the logger.
	Log run.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP run.HTTPConfig `yaml:"http"`
	// Producer configures capture, batching and publishing.
	Producer Config `yaml:"producer"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{
		NATS:     clients.DefaultNATSConfig("capstream-producer"),
		Log:      run.DefaultLogConfig(),
		HTTP:     run.DefaultHTTPConfig(),
		Producer: DefaultConfig(),
	}
}

// Validate copies the node into the producer section (config.Load calls it
// after the overrides) and checks it all.
func (s *Settings) Validate() error {
	s.Producer.Node = s.Node
	return errors.Join(s.NATS.Validate(), s.Log.Validate(), s.Producer.Validate())
}
