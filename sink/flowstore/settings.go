package flowstore

import (
	"errors"

	"github.com/capstream/capstream/sink"
)

// EnvPrefix prefixes the flow sink's environment overrides, e.g.
// CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD.
const EnvPrefix = "CAPSTREAM_SINK_FLOWS"

// Settings is `capstream sink flows`' configuration file: the shared
// sections (log, http, nats, clickhouse receiving the flows, memoryLimit)
// at the top, then the sink's own.
type Settings struct {
	sink.ServiceSettings `yaml:",inline"`
	// Flows configures aggregation and inserts.
	Flows Config `yaml:"flows"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{ServiceSettings: sink.DefaultServiceSettings("capstream-sink-flows"), Flows: DefaultConfig()}
}

// Validate checks every section.
func (s *Settings) Validate() error {
	return errors.Join(s.ServiceSettings.Validate(), s.Flows.Validate())
}
