package producer

import (
	"errors"
	"fmt"
	"time"

	"github.com/capstream/capstream/producer/source/afpacket"
	"github.com/capstream/capstream/producer/source/file"
	"github.com/capstream/capstream/schemas"
)

// Capture source kinds for Config.Source.
const (
	// SourceAFPacket captures live with AF_PACKET.
	SourceAFPacket = "afpacket"
	// SourceFile replays pcap/pcapng files.
	SourceFile = "file"
)

// Config configures a Producer.
type Config struct {
	// Node is the Kubernetes node this producer serves. It is not read
	// from the producer's YAML section: main sets it from the top-level
	// node setting (CAPSTREAM_PRODUCER_NODE, from the downward API).
	Node string `yaml:"-"`
	// InterfacePrefix is the prefix of the only interfaces the producer
	// captures: a command naming any other (eth0, lo, vxlan.calico) is
	// refused and its capture reported in Error, whoever sent it. It must
	// equal the router's interfacePrefix. Default "cali".
	InterfacePrefix string `yaml:"interfacePrefix"`
	// Source is "afpacket" (live capture) or "file" (replay). Default
	// afpacket.
	Source string `yaml:"source"`
	// AFPacket configures live capture rings.
	AFPacket afpacket.Config `yaml:"afpacket"`
	// MaxRingBytes bounds the kernel memory of all capture rings on the
	// node together, in bytes: each captured interface maps
	// afpacket.ringBytes once, shared by every capture that selects it. An
	// interface whose ring would not fit waits (WaitingForTraffic,
	// lastError saying so) until others close. Node memory is about 64 MiB
	// for the process plus min(maxRingBytes, interfaces x ringBytes),
	// whatever the number of captures. Default 1 GiB (32 rings of 32 MiB).
	MaxRingBytes int64 `yaml:"maxRingBytes"`
	// File configures replay.
	File file.Config `yaml:"file"`
	// DefaultSnapLength is the bytes kept per packet when a command sets
	// none. Default 262144 (schemas.MaxSnapLength, tcpdump's default).
	DefaultSnapLength int `yaml:"defaultSnapLength"`
	// BatchBytes is the body size, in bytes, at which a batch is
	// published. Default 512 KiB (schemas.DefaultBatchBytes).
	BatchBytes int `yaml:"batchBytes"`
	// BatchDelay is the longest a packet waits in an open batch. Default
	// 100ms.
	BatchDelay time.Duration `yaml:"batchDelay"`
	// MaxInFlightBytes bounds the batch bytes published but not yet
	// acknowledged; beyond it live captures drop batches. Default 32 MiB.
	MaxInFlightBytes int `yaml:"maxInFlightBytes"`
	// MaxInFlightBatches bounds the number of unacknowledged batches.
	// Default 4096.
	MaxInFlightBatches int `yaml:"maxInFlightBatches"`
	// PublishWait is how long a live capture waits for room in the
	// in-flight budget before dropping the batch; the ring absorbs
	// traffic meanwhile. Default 20ms.
	PublishWait time.Duration `yaml:"publishWait"`
	// AckTimeout is how long a published batch waits for JetStream's ack
	// before it counts as dropped. Default 5s.
	AckTimeout time.Duration `yaml:"ackTimeout"`
	// PublishRetryFor is how long after its first attempt a batch whose
	// ack timed out, or that no stream answered (a stream-leader election
	// in a JetStream cluster), is still published again; after that its
	// packets count as dropped. An attempt no stream answers fails after
	// the client's own two retries, half a second, so 10s rides out any
	// election seen so far (tens of ms to 2s on loopback). The batch keeps
	// its Nats-Msg-Id: if an attempt was stored after all, the stream
	// drops the next as a duplicate and acks it. publishRetryFor plus
	// ackTimeout must fit schemas.PublishRetryWindow (1m), within the
	// stream's duplicates window. Default 10s; 0 disables retries.
	PublishRetryFor time.Duration `yaml:"publishRetryFor"`
	// StatusInterval is the period of status reports; a state change is
	// reported at once. Default 5s.
	StatusInterval time.Duration `yaml:"statusInterval"`
	// ResyncPeriod is how often the producer checks its captures against
	// the commands stream, besides after every reconnect and consumer
	// error: a capture whose subject is empty (its stop expired while the
	// producer was away, see the router's stopTTL) is stopped, and the
	// state of a finished capture is dropped once its stop has expired.
	// One stream info request per period. Default 5m.
	ResyncPeriod time.Duration `yaml:"resyncPeriod"`
	// InterfaceRetry is the longest wait between attempts to open a
	// missing interface. Default 1s.
	InterfaceRetry time.Duration `yaml:"interfaceRetry"`
	// GracePeriod bounds the shutdown flush: open batches, pending acks
	// and final status. Default 10s.
	GracePeriod time.Duration `yaml:"gracePeriod"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		InterfacePrefix:    "cali",
		Source:             SourceAFPacket,
		AFPacket:           afpacket.DefaultConfig(),
		MaxRingBytes:       1 << 30,
		File:               file.DefaultConfig(),
		DefaultSnapLength:  schemas.MaxSnapLength,
		BatchBytes:         schemas.DefaultBatchBytes,
		BatchDelay:         100 * time.Millisecond,
		MaxInFlightBytes:   32 << 20,
		MaxInFlightBatches: 4096,
		PublishWait:        20 * time.Millisecond,
		AckTimeout:         5 * time.Second,
		PublishRetryFor:    10 * time.Second,
		StatusInterval:     5 * time.Second,
		ResyncPeriod:       5 * time.Minute,
		InterfaceRetry:     time.Second,
		GracePeriod:        10 * time.Second,
	}
}

// Validate returns every problem, joined.
func (c Config) Validate() error {
	var errs []error
	if _, err := schemas.Token(c.Node); err != nil {
		errs = append(errs, fmt.Errorf("node %q: %w", c.Node, err))
	}
	if n := len(c.InterfacePrefix); n == 0 || n > schemas.MaxInterfaceLength {
		errs = append(errs, fmt.Errorf("interfacePrefix %q: want 1 to %d bytes", c.InterfacePrefix, schemas.MaxInterfaceLength))
	}
	switch c.Source {
	case SourceAFPacket:
		if err := c.AFPacket.Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.MaxRingBytes < int64(c.AFPacket.RingBytes) {
			errs = append(errs, fmt.Errorf("maxRingBytes %d: must hold at least one ring of afpacket.ringBytes %d", c.MaxRingBytes, c.AFPacket.RingBytes))
		}
	case SourceFile:
		if err := c.File.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("source %q: want %s or %s", c.Source, SourceAFPacket, SourceFile))
	}
	if c.DefaultSnapLength < 1 || c.DefaultSnapLength > schemas.MaxSnapLength {
		errs = append(errs, fmt.Errorf("defaultSnapLength %d: want 1 to %d", c.DefaultSnapLength, schemas.MaxSnapLength))
	}
	// A batch holds up to BatchBytes plus one record that did not fit;
	// the limit keeps that under the server's max payload.
	if c.BatchBytes < 4096 || c.BatchBytes > schemas.MaxBatchBodyBytes-schemas.RecordHeaderLen-schemas.MaxSnapLength {
		errs = append(errs, fmt.Errorf("batchBytes %d: want 4096 to %d", c.BatchBytes, schemas.MaxBatchBodyBytes-schemas.RecordHeaderLen-schemas.MaxSnapLength))
	}
	if c.BatchDelay < time.Millisecond {
		errs = append(errs, fmt.Errorf("batchDelay %s: want at least 1ms", c.BatchDelay))
	}
	if c.MaxInFlightBytes < schemas.MaxBatchBytes {
		errs = append(errs, fmt.Errorf("maxInFlightBytes %d: want at least one full batch (%d)", c.MaxInFlightBytes, schemas.MaxBatchBytes))
	}
	if c.MaxInFlightBatches < 1 {
		errs = append(errs, fmt.Errorf("maxInFlightBatches %d: want at least 1", c.MaxInFlightBatches))
	}
	if c.PublishRetryFor < 0 || c.PublishRetryFor+c.AckTimeout > schemas.PublishRetryWindow {
		errs = append(errs, fmt.Errorf("publishRetryFor %s: want 0 or more, and plus ackTimeout (%s) at most %s", c.PublishRetryFor, c.AckTimeout, schemas.PublishRetryWindow))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"publishWait", c.PublishWait}, {"ackTimeout", c.AckTimeout}, {"statusInterval", c.StatusInterval},
		{"interfaceRetry", c.InterfaceRetry}, {"gracePeriod", c.GracePeriod}, {"resyncPeriod", c.ResyncPeriod},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.d))
		}
	}
	return errors.Join(errs...)
}
