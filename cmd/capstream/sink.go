package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// Environment override prefixes of the two sinks, e.g.
// CAPSTREAM_SINK_PCAP_S3_SECRETKEY or CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD.
const (
	sinkPcapEnvPrefix  = "CAPSTREAM_SINK_PCAP"
	sinkFlowsEnvPrefix = "CAPSTREAM_SINK_FLOWS"
)

// sinkPcapSettings is `capstream sink pcap`'s configuration file. The
// connections sit at the top so secrets have short override names.
type sinkPcapSettings struct {
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP svc.HTTPConfig `yaml:"http"`
	// NATS is the NATS connection.
	NATS sink.NATSConfig `yaml:"nats"`
	// ClickHouse holds the pcap_objects index.
	ClickHouse sink.ClickHouseConfig `yaml:"clickhouse"`
	// S3 receives the objects.
	S3 sink.S3Config `yaml:"s3"`
	// MemoryLimit is the Go runtime's soft memory limit, in bytes: near it
	// the garbage collector runs more often, so the process stays close
	// to what it holds rather than up to twice that. The GOMEMLIMIT
	// environment variable, when set, takes precedence. 0: none. Default
	// 192 MiB, which keeps the sink under 256 MiB of RSS with the default
	// budgets.
	MemoryLimit int64 `yaml:"memoryLimit"`
	// Pcap configures objects, rotation and delivery.
	Pcap pcapstore.Config `yaml:"pcap"`
}

func defaultSinkPcapSettings() *sinkPcapSettings {
	return &sinkPcapSettings{
		Log:         svc.LogConfig{Level: "info", Format: "auto"},
		HTTP:        svc.HTTPConfig{Listen: ":8080"},
		NATS:        sink.NATSConfig{URL: nats.DefaultURL, Name: "capstream-sink-pcap"},
		ClickHouse:  sink.DefaultClickHouseConfig(),
		MemoryLimit: defaultSinkMemoryLimit,
		Pcap:        pcapstore.DefaultConfig(),
	}
}

// defaultSinkMemoryLimit is both sinks' default soft memory limit.
const defaultSinkMemoryLimit = 192 << 20

// Validate copies the S3 section into the pcap section (config.Load calls
// it after the overrides) and checks everything.
func (s *sinkPcapSettings) Validate() error {
	s.Pcap.S3 = s.S3
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), validateMemoryLimit(s.MemoryLimit), s.Pcap.Validate())
}

// validateMemoryLimit accepts 0 (none) or at least 64 MiB: below that the
// collector would run without pause at the default budgets.
func validateMemoryLimit(n int64) error {
	if n != 0 && n < 64<<20 {
		return fmt.Errorf("memoryLimit %d: want 0 (none) or at least 64 MiB", n)
	}
	return nil
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

// sinkFlowsSettings is `capstream sink flows`' configuration file.
type sinkFlowsSettings struct {
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP svc.HTTPConfig `yaml:"http"`
	// NATS is the NATS connection.
	NATS sink.NATSConfig `yaml:"nats"`
	// ClickHouse receives the flow records.
	ClickHouse sink.ClickHouseConfig `yaml:"clickhouse"`
	// MemoryLimit is the Go runtime's soft memory limit, in bytes, as for
	// the pcap sink. Default 192 MiB.
	MemoryLimit int64 `yaml:"memoryLimit"`
	// Flows configures aggregation and inserts.
	Flows flowstore.Config `yaml:"flows"`
}

func defaultSinkFlowsSettings() *sinkFlowsSettings {
	return &sinkFlowsSettings{
		Log:         svc.LogConfig{Level: "info", Format: "auto"},
		HTTP:        svc.HTTPConfig{Listen: ":8080"},
		NATS:        sink.NATSConfig{URL: nats.DefaultURL, Name: "capstream-sink-flows"},
		ClickHouse:  sink.DefaultClickHouseConfig(),
		MemoryLimit: defaultSinkMemoryLimit,
		Flows:       flowstore.DefaultConfig(),
	}
}

// Validate checks every section.
func (s *sinkFlowsSettings) Validate() error {
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), validateMemoryLimit(s.MemoryLimit), s.Flows.Validate())
}

func newSinkPcapCmd() *cobra.Command {
	return serviceCmd(serviceSpec[*sinkPcapSettings]{
		use:   "pcap",
		short: "Write rolling pcap objects to S3",
		long: `sink pcap consumes CAPSTREAM_PACKETS (durable consumer capstream-sink-pcap,
shared by all replicas), keeps one open pcap object per capture, node and
interface, uploads it to S3 when it reaches its size or age limit, when the
capture stops or at shutdown, indexes it in ClickHouse (pcap_objects), and
only then acks its batches.

Configuration: --config FILE (see deploy/dev/sink-pcap.yaml), then environment
overrides CAPSTREAM_SINK_PCAP_<PATH>, e.g. CAPSTREAM_SINK_PCAP_S3_ACCESSKEY,
CAPSTREAM_SINK_PCAP_S3_SECRETKEY, CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD.`,
		envPrefix: sinkPcapEnvPrefix,
		defaults:  defaultSinkPcapSettings,
		run: func(ctx context.Context, cfg *sinkPcapSettings) error {
			s3, err := cfg.S3.Client()
			if err != nil {
				return err
			}
			return runSink(ctx, cfg.Log, cfg.HTTP, cfg.NATS, cfg.ClickHouse, cfg.MemoryLimit, "sink-pcap",
				func(logger *slog.Logger, reg prometheus.Registerer, js jetstream.JetStream, ch driver.Conn) (sinkComponent, error) {
					return pcapstore.New(cfg.Pcap, pcapstore.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch, S3: s3})
				})
		},
	})
}

func newSinkFlowsCmd() *cobra.Command {
	return serviceCmd(serviceSpec[*sinkFlowsSettings]{
		use:   "flows",
		short: "Write flow records to ClickHouse",
		long: `sink flows consumes CAPSTREAM_PACKETS (durable consumer capstream-sink-flows,
shared by all replicas), aggregates packets into bidirectional flow records
(Zeek-style fields, Community ID, DNS/TLS/HTTP hints), inserts them into
ClickHouse (flows) on active timeout, idle timeout, TCP close and capture
stop, and acks a batch once all of its packets are in inserted records.

Configuration: --config FILE (see deploy/dev/sink-flows.yaml), then environment
overrides CAPSTREAM_SINK_FLOWS_<PATH>, e.g.
CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD.`,
		envPrefix: sinkFlowsEnvPrefix,
		defaults:  defaultSinkFlowsSettings,
		run: func(ctx context.Context, cfg *sinkFlowsSettings) error {
			return runSink(ctx, cfg.Log, cfg.HTTP, cfg.NATS, cfg.ClickHouse, cfg.MemoryLimit, "sink-flows",
				func(logger *slog.Logger, reg prometheus.Registerer, js jetstream.JetStream, ch driver.Conn) (sinkComponent, error) {
					return flowstore.New(cfg.Flows, flowstore.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch})
				})
		},
	})
}

// sinkComponent is what both sinks provide.
type sinkComponent interface {
	Run(context.Context) error
	Ready() error
}

// runSink connects, builds the sink and runs it with the health and
// metrics server in one group until ctx ends or either fails.
func runSink(ctx context.Context, logCfg svc.LogConfig, httpCfg svc.HTTPConfig, natsCfg sink.NATSConfig, chCfg sink.ClickHouseConfig, memLimit int64, name string,
	build func(*slog.Logger, prometheus.Registerer, jetstream.JetStream, driver.Conn) (sinkComponent, error)) error {
	logger := svc.NewLogger(logCfg)
	applyMemoryLimit(logger, memLimit)
	reg := svc.NewRegistry()
	opts := []nats.Option{
		nats.Name(natsCfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// Start even when NATS is not up yet; Ready says so meanwhile.
		nats.RetryOnFailedConnect(true),
	}
	if natsCfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(natsCfg.CredsFile))
	}
	nc, err := nats.Connect(natsCfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", natsCfg.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ch, err := chCfg.Open()
	if err != nil {
		return err
	}
	defer func(c io.Closer) { _ = c.Close() }(ch)
	s, err := build(logger, reg, js, ch)
	if err != nil {
		return err
	}
	srv := svc.NewServer(httpCfg, reg, map[string]svc.Check{name: s.Ready}, logger)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}
