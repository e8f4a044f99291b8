package pcapstore

import (
	"errors"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/sink"
)

// EnvPrefix prefixes the pcap sink's environment overrides, e.g.
// CAPSTREAM_SINK_PCAP_S3_SECRETKEY or CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD.
const EnvPrefix = "CAPSTREAM_SINK_PCAP"

// Settings is `capstream sink pcap`'s configuration file: the shared
// sections (log, http, nats, clickhouse holding pcap_objects, memoryLimit)
// at the top, then s3 and the sink's own.
type Settings struct {
	sink.ServiceSettings `yaml:",inline"`
	// S3 receives the objects.
	S3 clients.S3Config `yaml:"s3"`
	// Pcap configures objects, rotation and delivery.
	Pcap Config `yaml:"pcap"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{
		ServiceSettings: sink.DefaultServiceSettings("capstream-sink-pcap"),
		S3:              clients.DefaultS3Config(),
		Pcap:            DefaultConfig(),
	}
}

// Validate copies the S3 section into the pcap section (config.Load calls
// it after the overrides) and checks everything.
func (s *Settings) Validate() error {
	s.Pcap.S3 = s.S3
	return errors.Join(s.ServiceSettings.Validate(), s.Pcap.Validate())
}
