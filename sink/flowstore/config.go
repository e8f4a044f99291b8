package flowstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/capstream/capstream/sink"
)

// Config configures the flow sink.
type Config struct {
	// RunConfig holds consumer, gracePeriod and migrate.
	sink.RunConfig `yaml:",inline"`
	// ActiveTimeout is the active timeout: records are cut at multiples of
	// it in packet time. Default 60s.
	ActiveTimeout time.Duration `yaml:"activeTimeout"`
	// IdleTimeout ends a record after a gap this long between its packets.
	// Default 30s.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// StopAfter: an interface that sends no batch for this long (wall
	// time) is taken as stopped and its open records are released. A
	// last batch from the producer does this at once; StopAfter is the
	// fallback when it never comes. Default 30s.
	StopAfter time.Duration `yaml:"stopAfter"`
	// MaxFlows bounds the open flows and the records finished inside open
	// windows; when reached every open record is released early (end
	// reason "evict") and the table flushed. An open flow costs about 0.5
	// KiB, up to 1.2 KiB with the longest DNS, TLS and HTTP names, and
	// about 0.4 KiB more while its record waits for the insert: the
	// default keeps the sink under 256 MiB whatever the traffic. Default
	// 65536.
	MaxFlows int `yaml:"maxFlows"`
	// FlushInterval is how often released records are inserted. Default 1s.
	FlushInterval time.Duration `yaml:"flushInterval"`
	// MaxInsertRows caps the rows of one INSERT, whose block the client
	// builds in memory (up to ~2 KiB a row with long L7 names). Default
	// 10000.
	MaxInsertRows int `yaml:"maxInsertRows"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		RunConfig:     sink.DefaultRunConfig(20 * time.Second),
		ActiveTimeout: time.Minute,
		IdleTimeout:   30 * time.Second,
		StopAfter:     30 * time.Second,
		MaxFlows:      65536,
		FlushInterval: time.Second,
		MaxInsertRows: 10000,
	}
}

// Validate returns every problem with c.
func (c Config) Validate() error {
	errs := []error{c.RunConfig.Validate()}
	if c.ActiveTimeout < time.Second {
		errs = append(errs, fmt.Errorf("activeTimeout %s: want at least 1s", c.ActiveTimeout))
	}
	if c.IdleTimeout <= 0 || c.IdleTimeout > c.ActiveTimeout {
		errs = append(errs, fmt.Errorf("idleTimeout %s: want positive and at most activeTimeout", c.IdleTimeout))
	}
	if c.StopAfter <= 0 {
		errs = append(errs, fmt.Errorf("stopAfter %s: must be positive", c.StopAfter))
	}
	if c.MaxFlows < 1 {
		errs = append(errs, fmt.Errorf("maxFlows %d: must be positive", c.MaxFlows))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flushInterval %s: must be positive", c.FlushInterval))
	}
	if c.MaxInsertRows < 1 {
		errs = append(errs, fmt.Errorf("maxInsertRows %d: must be positive", c.MaxInsertRows))
	}
	return errors.Join(errs...)
}
