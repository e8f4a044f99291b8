package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/capstream/capstream/internal/clients"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

func newSinkPcapCmd() *cobra.Command {
	return svc.Command(svc.Spec[*pcapstore.Settings]{
		Use:   "pcap",
		Short: "Write rolling pcap objects to S3",
		Long: `sink pcap consumes CAPSTREAM_PACKETS (durable consumer capstream-sink-pcap,
shared by all replicas), keeps one open pcap object per capture, node and
interface, uploads it to S3 when it reaches its size or age limit, when the
capture stops or at shutdown, indexes it in ClickHouse (pcap_objects), and
only then acks its batches.

Configuration: --config FILE (see deploy/dev/sink-pcap.yaml), then environment
overrides CAPSTREAM_SINK_PCAP_<PATH>, e.g. CAPSTREAM_SINK_PCAP_S3_ACCESSKEY,
CAPSTREAM_SINK_PCAP_S3_SECRETKEY, CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD.`,
		EnvPrefix: pcapstore.EnvPrefix,
		Defaults:  pcapstore.DefaultSettings,
		Run: func(ctx context.Context, cfg *pcapstore.Settings) error {
			s3, err := cfg.S3.Client()
			if err != nil {
				return err
			}
			return runSink(ctx, cfg.ServiceSettings, "sink-pcap",
				func(logger *slog.Logger, reg prometheus.Registerer, js jetstream.JetStream, ch driver.Conn) (svc.Component, error) {
					return pcapstore.New(cfg.Pcap, pcapstore.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch, S3: s3})
				})
		},
	})
}

func newSinkFlowsCmd() *cobra.Command {
	return svc.Command(svc.Spec[*flowstore.Settings]{
		Use:   "flows",
		Short: "Write flow records to ClickHouse",
		Long: `sink flows consumes CAPSTREAM_PACKETS (durable consumer capstream-sink-flows,
shared by all replicas), aggregates packets into bidirectional flow records
(Zeek-style fields, Community ID, DNS/TLS/HTTP hints), inserts them into
ClickHouse (flows) on active timeout, idle timeout, TCP close and capture
stop, and acks a batch once all of its packets are in inserted records.

Configuration: --config FILE (see deploy/dev/sink-flows.yaml), then environment
overrides CAPSTREAM_SINK_FLOWS_<PATH>, e.g.
CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD.`,
		EnvPrefix: flowstore.EnvPrefix,
		Defaults:  flowstore.DefaultSettings,
		Run: func(ctx context.Context, cfg *flowstore.Settings) error {
			return runSink(ctx, cfg.ServiceSettings, "sink-flows",
				func(logger *slog.Logger, reg prometheus.Registerer, js jetstream.JetStream, ch driver.Conn) (svc.Component, error) {
					return flowstore.New(cfg.Flows, flowstore.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch})
				})
		},
	})
}

// runSink connects, builds the sink and runs it with the health and
// metrics server until ctx ends or either fails.
func runSink(ctx context.Context, c sink.ServiceSettings, name string,
	build func(*slog.Logger, prometheus.Registerer, jetstream.JetStream, driver.Conn) (svc.Component, error)) error {
	logger := svc.NewLogger(c.Log)
	applyMemoryLimit(logger, c.MemoryLimit)
	reg := svc.NewRegistry()
	nc, js, err := clients.JetStream(c.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	ch, err := c.ClickHouse.Open()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	s, err := build(logger, reg, js, ch)
	if err != nil {
		return err
	}
	return svc.Serve(ctx, c.HTTP, reg, logger, map[string]svc.Component{name: s})
}

// applyMemoryLimit sets the runtime's soft memory limit unless GOMEMLIMIT
// already did.
func applyMemoryLimit(logger *slog.Logger, n int64) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		logger.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return
	}
	if n > 0 {
		debug.SetMemoryLimit(n)
		logger.Info("memory limit", "bytes", n)
	}
}
