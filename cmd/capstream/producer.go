package main

import (
	"context"

	"github.com/spf13/cobra"

	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/producer"
)

func newProducerCmd() *cobra.Command {
	return svc.Command(svc.Spec[*producer.Settings]{
		Use:   "producer",
		Short: "Capture the selected endpoints on this node and publish packet batches",
		Long: `producer runs on every node (DaemonSet, hostNetwork). It follows the node's
capture commands in JetStream, captures the selected pod interfaces with
AF_PACKET, and publishes batches of pcap records to CAPSTREAM_PACKETS.

Configuration: --config FILE (see deploy/dev/producer.yaml), then environment
overrides CAPSTREAM_PRODUCER_<PATH>, e.g. CAPSTREAM_PRODUCER_NODE (set from
spec.nodeName) and CAPSTREAM_PRODUCER_NATS_URL.`,
		EnvPrefix: producer.EnvPrefix,
		Defaults:  producer.DefaultSettings,
		Run:       runProducer,
	})
}

// runProducer runs the producer and the health/metrics server until ctx ends
// (SIGINT or SIGTERM) or one of them fails.
func runProducer(ctx context.Context, cfg *producer.Settings) error {
	logger := svc.NewLogger(cfg.Log)
	reg := svc.NewRegistry()
	nc, err := cfg.NATS.Connect(producer.ConnOptions(logger)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := producer.New(cfg.Producer, producer.Deps{Logger: logger, Registerer: reg, NATS: nc})
	if err != nil {
		return err
	}
	return svc.Serve(ctx, cfg.HTTP, reg, logger, map[string]svc.Component{"producer": p})
}
