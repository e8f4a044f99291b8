package sink

import (
	"errors"
	"fmt"
	"time"
)

// ConsumerConfig tunes how a sink pulls from its durable consumer.
type ConsumerConfig struct {
	// PullMaxBytes bounds the batches the client buffers ahead of the sink,
	// in bytes. It must stay under 64 MiB or the client drops messages as
	// a slow consumer. Default 16 MiB.
	PullMaxBytes int `yaml:"pullMaxBytes"`
	// AckWait, when set, overrides the schema's AckWait of the durables,
	// and caps their pinned TTL (schemas.SinkPinnedTTL, 30s), the time a
	// dead replica keeps its partitions. Tests shorten it; production
	// leaves it 0 (2m). Default 0.
	AckWait time.Duration `yaml:"ackWait"`
	// LostAfter is how long a gap in a producer run's batches may still
	// fill before its batches count as lost: a producer publishes a batch
	// again after an ack timeout or a stream-leader election, and the
	// retry lands after the batches published meanwhile. 0 means
	// schemas.PublishRetryWindow (1m), the longest a producer retries;
	// tests shorten it. Default 0.
	LostAfter time.Duration `yaml:"lostAfter"`
	// RebalanceInterval is how often a replica announces itself to the
	// other replicas of its sink and evens out its share of the packet
	// partitions: it releases at most one partition per round, and a
	// replica not heard from for three rounds counts as gone. Default 5s.
	RebalanceInterval time.Duration `yaml:"rebalanceInterval"`
}

// DefaultConsumerConfig returns a 16 MiB pull buffer, the schema's
// AckWait and a 5s rebalance round.
func DefaultConsumerConfig() ConsumerConfig {
	return ConsumerConfig{PullMaxBytes: 16 << 20, RebalanceInterval: 5 * time.Second}
}

// Validate checks the bounds.
func (c ConsumerConfig) Validate() error {
	var errs []error
	if c.PullMaxBytes < 1<<20 || c.PullMaxBytes >= 64<<20 {
		errs = append(errs, fmt.Errorf("consumer.pullMaxBytes %d: want 1 MiB to under 64 MiB", c.PullMaxBytes))
	}
	if c.AckWait < 0 || (c.AckWait > 0 && c.AckWait < time.Second) {
		errs = append(errs, fmt.Errorf("consumer.ackWait %s: want 0 or at least 1s", c.AckWait))
	}
	if c.RebalanceInterval < 100*time.Millisecond || c.RebalanceInterval > time.Minute {
		errs = append(errs, fmt.Errorf("consumer.rebalanceInterval %s: want 100ms to 1m", c.RebalanceInterval))
	}
	if c.LostAfter < 0 {
		errs = append(errs, fmt.Errorf("consumer.lostAfter %s: must not be negative", c.LostAfter))
	}
	return errors.Join(errs...)
}

// RunConfig is what the consumer runner of either sink is configured
// with, inlined into each sink's section (`consumer`, `gracePeriod`,
// `migrate` sit beside the sink's own settings).
type RunConfig struct {
	// Consumer tunes the pull from the durable consumer.
	Consumer ConsumerConfig `yaml:"consumer"`
	// GracePeriod bounds what the sink does once shutdown starts:
	// completing its open objects (pcap, default 30s) or its final flush
	// of open flows (flows, default 20s).
	GracePeriod time.Duration `yaml:"gracePeriod"`
	// Migrate applies the ClickHouse migrations at start. Default true.
	Migrate bool `yaml:"migrate"`
}

// DefaultRunConfig returns the defaults with the given grace period.
func DefaultRunConfig(grace time.Duration) RunConfig {
	return RunConfig{Consumer: DefaultConsumerConfig(), GracePeriod: grace, Migrate: true}
}

// Validate checks the pull and the grace period.
func (c RunConfig) Validate() error {
	errs := []error{c.Consumer.Validate()}
	if c.GracePeriod <= 0 {
		errs = append(errs, fmt.Errorf("gracePeriod %s: must be positive", c.GracePeriod))
	}
	return errors.Join(errs...)
}
