package sink

import (
	"errors"
	"fmt"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
)

// ServiceSettings are the sections both sinks' configuration files share,
// inlined at the top of pcapstore.Settings and flowstore.Settings so their
// overrides stay short (CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD).
type ServiceSettings struct {
	run.ServiceSettings `yaml:",inline"`
	// ClickHouse holds the sink's tables.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// MemoryLimit is the Go runtime's soft memory limit, in bytes: near it
	// the garbage collector runs more often, so the process stays close
	// to what it holds rather than up to twice that. The GOMEMLIMIT
	// environment variable, when set, takes precedence. 0: none. Default
	// 224 MiB, which keeps a sink under 256 MiB of RSS with the default
	// budgets (peak 186 to 219 MiB in the bench's memory phase) while
	// leaving the collector room: at 192 MiB, 96 MiB of open objects over
	// 1000 interfaces made the pcap sink spend two thirds of its CPU
	// collecting (go run ./bench -scale: 15.4 s against 7.7 s at 224 MiB
	// and 5.1 s with no limit, for 300,000 packets).
	MemoryLimit int64 `yaml:"memoryLimit"`
}

// DefaultServiceSettings returns the shared defaults; name is the NATS
// connection's name.
func DefaultServiceSettings(name string) ServiceSettings {
	return ServiceSettings{
		ServiceSettings: run.DefaultServiceSettings(name),
		ClickHouse:      clients.DefaultClickHouseConfig(),
		MemoryLimit:     DefaultMemoryLimit,
	}
}

// Validate checks the shared sections.
func (s ServiceSettings) Validate() error {
	return errors.Join(s.ServiceSettings.Validate(), s.ClickHouse.Validate(), ValidateMemoryLimit(s.MemoryLimit))
}

// DefaultMemoryLimit is both sinks' default soft memory limit for the Go
// runtime, in bytes: with the default budgets it keeps a sink under 256 MiB
// of RSS.
const DefaultMemoryLimit = 224 << 20

// ValidateMemoryLimit accepts 0 (none) or at least 64 MiB: below that the
// collector would run without pause at the default budgets.
func ValidateMemoryLimit(n int64) error {
	if n != 0 && n < 64<<20 {
		return fmt.Errorf("memoryLimit %d: want 0 (none) or at least 64 MiB", n)
	}
	return nil
}
