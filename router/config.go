package router

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/capstream/capstream/internal/kubeclient"
	"github.com/capstream/capstream/schemas"
)

// Config is the router's own section of the configuration. Connection
// settings for Kubernetes and NATS are separate sections (KubeConfig,
// clients.NATSConfig) because main turns them into clients and hands those over in
// Deps; the router itself never reads files or the environment.
type Config struct {
	// InterfacePrefix is the prefix of the host-side veth names, "cali" for
	// Calico. With the 11 hex digits of the name it must fit IFNAMSIZ, so
	// it is 1 to 4 bytes. Default "cali".
	InterfacePrefix string `yaml:"interfacePrefix"`
	// SnapLength is the bytes kept per packet, written into every command.
	// Veths keep GRO/TSO, so frames of 64 KiB and more are common; the
	// default is schemas.MaxSnapLength (262144) so none is truncated.
	SnapLength int `yaml:"snapLength"`
	// Workers is the number of captures reconciled concurrently. Default 2.
	Workers int `yaml:"workers"`
	// ResyncPeriod is the informers' resync period: every capture is
	// reconciled again this often, which is a no-op unless something was
	// missed. Default 10m; 0 disables resync.
	ResyncPeriod time.Duration `yaml:"resyncPeriod"`
	// StopTTL is how long a stop command stays in CAPSTREAM_COMMANDS
	// before the server removes it (a per-message TTL, whole seconds).
	// Every producer connected, or disconnected for less, sees the stop
	// from the stream; one away for longer finds its subject empty when it
	// resyncs (at reconnect and every producer.resyncPeriod) and stops the
	// capture then. Capture commands never expire. Default 24h.
	StopTTL time.Duration `yaml:"stopTTL"`
	// StatusFlushDelay coalesces status writes: reports for one capture that
	// arrive within this delay end up in one status update. Default 1s.
	StatusFlushDelay time.Duration `yaml:"statusFlushDelay"`
	// RetryBaseDelay and RetryMaxDelay bound the per-capture exponential
	// backoff after a failed reconcile or status write. Defaults 100ms, 1m.
	RetryBaseDelay time.Duration `yaml:"retryBaseDelay"`
	RetryMaxDelay  time.Duration `yaml:"retryMaxDelay"`
	// StartupTimeout bounds the wait for the first informer sync and for
	// reading the published commands when becoming leader. Default 2m.
	StartupTimeout time.Duration `yaml:"startupTimeout"`
	// GracePeriod bounds the work done after shutdown starts: draining the
	// status consumer and releasing the lease. Default 10s.
	GracePeriod time.Duration `yaml:"gracePeriod"`
	// Namespace limits the router to the captures and pods of one
	// namespace; empty (the default) watches all. Meant for tests and
	// development clusters shared by several routers, each with its own
	// NATS: commands of captures outside the namespace are left alone.
	Namespace string `yaml:"namespace"`
	// LeaderElection makes one replica of several the active one.
	LeaderElection LeaderElectionConfig `yaml:"leaderElection"`
	// PacketsStream is CAPSTREAM_PACKETS as the router creates it.
	PacketsStream PacketsStreamConfig `yaml:"packetsStream"`
	// CommandsStream and StatusStream are CAPSTREAM_COMMANDS and
	// CAPSTREAM_STATUS as the router creates them (always: they are the
	// router's own). In a JetStream cluster, give all three streams the
	// same replicas, 3 for a cluster of 3 servers.
	CommandsStream StreamConfig `yaml:"commandsStream"`
	StatusStream   StreamConfig `yaml:"statusStream"`
}

// StreamConfig is what the router sets of a small stream.
type StreamConfig struct {
	// Replicas is the stream's replication factor, 1 to 5: 1 (the
	// default) on a single server; in a cluster 3 survives the loss of
	// one server, 5 of two. Even factors are accepted but survive no
	// more losses than the odd one below. Above 1 it needs a JetStream
	// cluster of at least that many servers; the router's term start
	// reports otherwise and retries. Storage is always file.
	Replicas int `yaml:"replicas"`
}

// PacketsStreamConfig sizes CAPSTREAM_PACKETS. The router, the one
// control-plane component, creates the stream and both sinks' durable
// consumers at the start of each term: with interest retention, batches
// published while no consumer exists are discarded, so the consumers must
// exist before the first producer publishes, whether or not the sinks run
// yet.
type PacketsStreamConfig struct {
	// Manage makes the router create or update the stream and create the
	// sink consumers. Turn it off to manage the stream by hand (see
	// deploy/k8s/README.md). Default true.
	Manage bool `yaml:"manage"`
	// MaxBytes bounds the backlog in bytes; when full, producers' publishes
	// are refused and counted as drops. Default 1 GiB.
	MaxBytes int64 `yaml:"maxBytes"`
	// MaxAge bounds the backlog in time. Default 1h.
	MaxAge time.Duration `yaml:"maxAge"`
	// Replicas is the stream's replication factor, as for StreamConfig.
	// Default 1.
	Replicas int `yaml:"replicas"`
	// Duplicates is the Nats-Msg-Id de-duplication window. Default 2m.
	Duplicates time.Duration `yaml:"duplicates"`
	// Partitions is how many partitions the stream spreads the batches
	// over, by (namespace, capture, node): the most replicas of each sink
	// that share the work, each partition served by one replica at a time.
	// 1 to 16, best a prime (see schemas.DefaultPacketPartitions); change
	// it only while the stream is empty (batches stored under a partition
	// that no longer exists are not delivered). Default 7.
	Partitions int `yaml:"partitions"`
}

// Limits converts the config to the schemas limits.
func (c PacketsStreamConfig) Limits() schemas.PacketsStreamLimits {
	return schemas.PacketsStreamLimits{MaxBytes: c.MaxBytes, MaxAge: c.MaxAge, Replicas: c.Replicas, Duplicates: c.Duplicates, Partitions: c.Partitions}
}

// LeaderElectionConfig configures the coordination.k8s.io Lease that elects
// the one router replica that publishes commands and writes status.
type LeaderElectionConfig struct {
	// Enabled turns election on. When off, the router acts as leader at
	// once: only safe with a single replica. Default true.
	Enabled bool `yaml:"enabled"`
	// Namespace and Name locate the Lease. Defaults "default",
	// "capstream-router". In a cluster use the router's own namespace
	// (CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE from the downward API).
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	// Identity names this replica in the Lease; empty means the host name
	// plus a random suffix, chosen by main.
	Identity string `yaml:"identity"`
	// LeaseDuration is how long a lease holds without renewal: the longest
	// time without a leader after the leader dies. Default 15s.
	LeaseDuration time.Duration `yaml:"leaseDuration"`
	// RenewDeadline is how long the leader keeps trying to renew before it
	// gives up leadership. Must be below LeaseDuration. Default 10s.
	RenewDeadline time.Duration `yaml:"renewDeadline"`
	// RetryPeriod is the interval between acquire or renew attempts.
	// Default 2s.
	RetryPeriod time.Duration `yaml:"retryPeriod"`
}

// KubeConfig says how to reach the API server.
type KubeConfig = kubeclient.Config

// DefaultConfig returns the router defaults.
func DefaultConfig() Config {
	return Config{
		InterfacePrefix:  "cali",
		SnapLength:       schemas.MaxSnapLength,
		Workers:          2,
		ResyncPeriod:     10 * time.Minute,
		StopTTL:          schemas.DefaultStopTTL,
		StatusFlushDelay: time.Second,
		RetryBaseDelay:   100 * time.Millisecond,
		RetryMaxDelay:    time.Minute,
		StartupTimeout:   2 * time.Minute,
		GracePeriod:      10 * time.Second,
		PacketsStream:    defaultPacketsStream(),
		CommandsStream:   StreamConfig{Replicas: schemas.DefaultReplicas},
		StatusStream:     StreamConfig{Replicas: schemas.DefaultReplicas},
		LeaderElection: LeaderElectionConfig{
			Enabled:       true,
			Namespace:     "default",
			Name:          "capstream-router",
			LeaseDuration: 15 * time.Second,
			RenewDeadline: 10 * time.Second,
			RetryPeriod:   2 * time.Second,
		},
	}
}

func defaultPacketsStream() PacketsStreamConfig {
	l := schemas.DefaultPacketsStreamLimits()
	return PacketsStreamConfig{Manage: true, MaxBytes: l.MaxBytes, MaxAge: l.MaxAge, Replicas: l.Replicas, Duplicates: l.Duplicates, Partitions: l.Partitions}
}

// DefaultKubeConfig returns in-cluster defaults.
func DefaultKubeConfig() KubeConfig { return kubeclient.Default() }

// maxInterfacePrefix leaves room for the 11 hex digits in IFNAMSIZ-1.
const maxInterfacePrefix = schemas.MaxInterfaceLength - ifaceHashDigits

// Validate returns every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if n := len(c.InterfacePrefix); n == 0 || n > maxInterfacePrefix {
		errs = append(errs, fmt.Errorf("router.interfacePrefix %q: want 1 to %d bytes", c.InterfacePrefix, maxInterfacePrefix))
	} else if err := schemas.CheckInterface(c.InterfacePrefix); err != nil {
		errs = append(errs, fmt.Errorf("router.interfacePrefix: %w", err))
	}
	if c.SnapLength < 1 || c.SnapLength > schemas.MaxSnapLength {
		errs = append(errs, fmt.Errorf("router.snapLength %d: want 1 to %d", c.SnapLength, schemas.MaxSnapLength))
	}
	if c.PacketsStream.Manage {
		if err := c.PacketsStream.Limits().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("router.packetsStream: %w", err))
		}
	}
	for _, st := range []struct {
		name string
		c    StreamConfig
	}{{"commandsStream", c.CommandsStream}, {"statusStream", c.StatusStream}} {
		if err := schemas.CheckReplicas(st.c.Replicas); err != nil {
			errs = append(errs, fmt.Errorf("router.%s: %w", st.name, err))
		}
	}
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, fmt.Errorf("router.workers %d: want 1 to 64", c.Workers))
	}
	if c.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("router.resyncPeriod %s: must not be negative", c.ResyncPeriod))
	}
	if c.StopTTL < schemas.MinMsgTTL || c.StopTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("router.stopTTL %s: want whole seconds, at least %s", c.StopTTL, schemas.MinMsgTTL))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"statusFlushDelay", c.StatusFlushDelay}, {"retryBaseDelay", c.RetryBaseDelay},
		{"retryMaxDelay", c.RetryMaxDelay}, {"startupTimeout", c.StartupTimeout}, {"gracePeriod", c.GracePeriod},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("router.%s %s: must be positive", d.name, d.d))
		}
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		errs = append(errs, fmt.Errorf("router.retryMaxDelay %s: below retryBaseDelay %s", c.RetryMaxDelay, c.RetryBaseDelay))
	}
	// The status consumer's ack wait must cover the coalescing delay, or
	// reports would be redelivered while they wait for their write.
	if c.StatusFlushDelay >= schemas.RouterStatusAckWait/2 {
		errs = append(errs, fmt.Errorf("router.statusFlushDelay %s: must be under %s", c.StatusFlushDelay, schemas.RouterStatusAckWait/2))
	}
	if c.Namespace != "" {
		if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("router.namespace %q: %s", c.Namespace, msgs[0]))
		}
	}
	if err := c.LeaderElection.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Validate checks the lease timings the way client-go's elector does, so a
// bad combination is reported at --check rather than at start.
func (c LeaderElectionConfig) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if c.Namespace == "" || c.Name == "" {
		errs = append(errs, errors.New("router.leaderElection: namespace and name are required"))
	}
	if c.RetryPeriod <= 0 || c.RenewDeadline <= 0 || c.LeaseDuration <= 0 {
		errs = append(errs, errors.New("router.leaderElection: leaseDuration, renewDeadline and retryPeriod must be positive"))
	}
	if c.LeaseDuration <= c.RenewDeadline {
		errs = append(errs, fmt.Errorf("router.leaderElection.leaseDuration %s: must exceed renewDeadline %s", c.LeaseDuration, c.RenewDeadline))
	}
	// client-go requires renewDeadline > retryPeriod * JitterFactor (1.2).
	if float64(c.RenewDeadline) <= 1.2*float64(c.RetryPeriod) {
		errs = append(errs, fmt.Errorf("router.leaderElection.renewDeadline %s: must exceed 1.2 x retryPeriod %s", c.RenewDeadline, c.RetryPeriod))
	}
	return errors.Join(errs...)
}

// Validate checks the client rate limits.
