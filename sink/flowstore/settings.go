package flowstore

import (
	"errors"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/sink"
)

// EnvPrefix prefixes the flow sink's environment overrides, e.g.
// CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD.
const EnvPrefix = "CAPSTREAM_SINK_FLOWS"

// Settings is `capstream sink flows`' configuration file.
type Settings struct {
	// Log configures the logger.
	Log run.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP run.HTTPConfig `yaml:"http"`
	// NATS is the NATS connection.
	NATS clients.NATSConfig `yaml:"nats"`
	// ClickHouse receives the flow records.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// MemoryLimit is the Go runtime's soft memory limit, in bytes, as for
	// the pcap sink. Default 192 MiB.
	MemoryLimit int64 `yaml:"memoryLimit"`
	// Flows configures aggregation and inserts.
	Flows Config `yaml:"flows"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{
		Log:         run.DefaultLogConfig(),
		HTTP:        run.DefaultHTTPConfig(),
		NATS:        clients.DefaultNATSConfig("capstream-sink-flows"),
		ClickHouse:  clients.DefaultClickHouseConfig(),
		MemoryLimit: sink.DefaultMemoryLimit,
		Flows:       DefaultConfig(),
	}
}

// Validate checks every section.
func (s *Settings) Validate() error {
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), sink.ValidateMemoryLimit(s.MemoryLimit), s.Flows.Validate())
}
