package main

import (
	"context"
	"errors"

	// Aliased: package main has a func run.
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/producer"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

// producerEnvPrefix prefixes the producer's environment overrides; the
// DaemonSet sets CAPSTREAM_PRODUCER_NODE from the downward API
// (spec.nodeName).
const producerEnvPrefix = "CAPSTREAM_PRODUCER"

// producerSettings is the producer binary's configuration file. Node and
// NATS sit at the top so their overrides are CAPSTREAM_PRODUCER_NODE and
// CAPSTREAM_PRODUCER_NATS_URL; they are copied into the producer section.
type producerSettings struct {
	// Node is the Kubernetes node this producer captures on. Required.
	Node string `yaml:"node"`
	// NATS is the NATS connection.
	NATS producer.NATSConfig `yaml:"nats"`
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP svc.HTTPConfig `yaml:"http"`
	// Producer configures capture, batching and publishing.
	Producer producer.Config `yaml:"producer"`
}

func defaultProducerSettings() *producerSettings {
	p := producer.DefaultConfig()
	return &producerSettings{
		NATS:     p.NATS,
		Log:      svc.LogConfig{Level: "info", Format: "auto"},
		HTTP:     svc.HTTPConfig{Listen: ":8080"},
		Producer: p,
	}
}

// Validate copies the top-level node and NATS settings into the producer
// section (config.Load calls it after the overrides) and checks it all.
func (s *producerSettings) Validate() error {
	s.Producer.Node = s.Node
	s.Producer.NATS = s.NATS
	return errors.Join(s.Log.Validate(), s.Producer.Validate())
}

func newProducerCmd() *cobra.Command {
	return serviceCmd(serviceSpec[*producerSettings]{
		use:   "producer",
		short: "Capture the selected endpoints on this node and publish packet batches",
		long: `producer runs on every node (DaemonSet, hostNetwork). It follows the node's
capture commands in JetStream, captures the selected pod interfaces with
AF_PACKET, and publishes batches of pcap records to CAPSTREAM_PACKETS.

Configuration: --config FILE (see deploy/dev/producer.yaml), then environment
overrides CAPSTREAM_PRODUCER_<PATH>, e.g. CAPSTREAM_PRODUCER_NODE (set from
spec.nodeName) and CAPSTREAM_PRODUCER_NATS_URL.`,
		envPrefix: producerEnvPrefix,
		defaults:  defaultProducerSettings,
		run:       runProducer,
	})
}

// runProducer runs the producer and the health/metrics server until ctx ends
// (serviceCmd ends it on SIGINT or SIGTERM) or one of them fails.
func runProducer(ctx context.Context, cfg *producerSettings) error {
	logger := svc.NewLogger(cfg.Log)
	reg := svc.NewRegistry()
	p, err := producer.New(cfg.Producer, producer.Deps{Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	srv := svc.NewServer(cfg.HTTP, reg, map[string]svc.Check{"producer": p.Ready}, logger)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}
