package pcapstore

import (
	"errors"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/sink"
)

// EnvPrefix prefixes the pcap sink's environment overrides, e.g.
// CAPSTREAM_SINK_PCAP_S3_SECRETKEY or CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD.
const EnvPrefix = "CAPSTREAM_SINK_PCAP"

// Settings is `capstream sink pcap`'s configuration file. The connections
// sit at the top so secrets have short override names.
type Settings struct {
	// Log configures the logger.
	Log run.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP run.HTTPConfig `yaml:"http"`
	// NATS is the NATS connection.
	NATS clients.NATSConfig `yaml:"nats"`
	// ClickHouse holds the pcap_objects index.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// S3 receives the objects.
	S3 clients.S3Config `yaml:"s3"`
	// MemoryLimit is the Go runtime's soft memory limit, in bytes: near it
	// the garbage collector runs more often, so the process stays close
	// to what it holds rather than up to twice that. The GOMEMLIMIT
	// environment variable, when set, takes precedence. 0: none. Default
	// 192 MiB, which keeps the sink under 256 MiB of RSS with the default
	// budgets.
	MemoryLimit int64 `yaml:"memoryLimit"`
	// Pcap configures objects, rotation and delivery.
	Pcap Config `yaml:"pcap"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{
		Log:         run.DefaultLogConfig(),
		HTTP:        run.DefaultHTTPConfig(),
		NATS:        clients.DefaultNATSConfig("capstream-sink-pcap"),
		ClickHouse:  clients.DefaultClickHouseConfig(),
		S3:          clients.DefaultS3Config(),
		MemoryLimit: sink.DefaultMemoryLimit,
		Pcap:        DefaultConfig(),
	}
}

// Validate copies the S3 section into the pcap section (config.Load calls
// it after the overrides) and checks everything.
func (s *Settings) Validate() error {
	s.Pcap.S3 = s.S3
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), sink.ValidateMemoryLimit(s.MemoryLimit), s.Pcap.Validate())
}
