package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/klog/v2"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/clients"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// The service subcommands: each loads its package's Settings (run.Command),
// dials through internal/clients, builds the component and runs it with the
// health and metrics server (run.Serve).

func newRouterCmd() *cobra.Command {
	return svc.Command(svc.Spec[*router.Settings]{
		Use:   "router",
		Short: "Watch PacketCaptures and publish per-node capture commands",
		Long: `router watches PacketCapture resources, pods and namespaces, resolves each
capture's Calico selector to workload endpoints, publishes the desired state
per (node, capture) to CAPSTREAM_COMMANDS and writes the nodes' reports back
to the captures' status. Run two replicas: a Lease elects the active one.

Configuration: --config FILE (see deploy/dev/router.yaml), then environment
overrides CAPSTREAM_ROUTER_<PATH>, e.g. CAPSTREAM_ROUTER_NATS_URL,
CAPSTREAM_ROUTER_NATS_PASSWORD, CAPSTREAM_ROUTER_KUBE_KUBECONFIG and
CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE.`,
		EnvPrefix: router.EnvPrefix,
		Defaults:  router.DefaultSettings,
		Run:       runRouter,
	})
}

// runRouter runs the router and the health/metrics server until ctx ends
// (SIGINT or SIGTERM) or one of them fails.
func runRouter(ctx context.Context, cfg *router.Settings) error {
	logger := svc.NewLogger(cfg.Log)
	// client-go (leader election, informers) logs through klog: send it
	// to the same handler.
	klog.SetSlogLogger(logger.With("component", "client-go"))
	warnInsecure(logger, cfg.NATS.Warnings()...)
	reg := svc.NewRegistry()
	kube, dyn, err := cfg.Kube.Clients("capstream-router")
	if err != nil {
		return err
	}
	// The router starts (and campaigns) while NATS is still coming up; the
	// leader waits for it.
	nc, js, err := clients.JetStream(cfg.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	rcfg := cfg.Router
	if rcfg.LeaderElection.Identity == "" {
		host, _ := os.Hostname()
		rcfg.LeaderElection.Identity = host + "_" + rand.String(8)
	}
	r, err := router.New(rcfg, router.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, JetStream: js})
	if err != nil {
		return usageError{Err: err}
	}
	return svc.Serve(ctx, cfg.HTTP, reg, logger, map[string]svc.Component{"router": r})
}

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
	warnInsecure(logger, cfg.NATS.Warnings()...)
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
					warnInsecure(logger, cfg.S3.Warnings()...)
					return pcapstore.New(cfg.Pcap, sink.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch, S3: s3})
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
					return flowstore.New(cfg.Flows, sink.Deps{Logger: logger, Registerer: reg, JetStream: js, ClickHouse: ch})
				})
		},
	})
}

func newAccessCmd() *cobra.Command {
	return svc.Command(svc.Spec[*access.Settings]{
		Use:   "access",
		Short: "Serve pcaps and flows to callers Kubernetes RBAC allows",
		Long: `access serves the HTTPS access API the user commands use: it checks each
caller's bearer token with a TokenReview and each request with a
SubjectAccessReview on packetcaptures/files (get: list, download, flows;
delete: clean) in the capture's namespace, and only then reads S3 or
queries ClickHouse (as a read-only user). It is the only user-facing part
that holds the S3 and ClickHouse credentials.

Configuration: --config FILE, then environment overrides
CAPSTREAM_ACCESS_<PATH>, e.g. CAPSTREAM_ACCESS_S3_SECRETKEY,
CAPSTREAM_ACCESS_CLICKHOUSE_PASSWORD, CAPSTREAM_ACCESS_ACCESS_CERTFILE.`,
		EnvPrefix: access.EnvPrefix,
		Defaults:  access.DefaultSettings,
		Run:       runAccess,
	})
}

// runAccess runs the access API and the health/metrics server until ctx
// ends or one of them fails.
func runAccess(ctx context.Context, cfg *access.Settings) error {
	logger := svc.NewLogger(cfg.Log)
	klog.SetSlogLogger(logger.With("component", "client-go"))
	warnInsecure(logger, append(append(cfg.Access.Warnings(), cfg.S3.Warnings()...), cfg.ClickHouse.Warnings()...)...)
	reg := svc.NewRegistry()
	kube, dyn, err := cfg.Kube.Clients("capstream-access")
	if err != nil {
		return err
	}
	s3, err := cfg.S3.Client()
	if err != nil {
		return err
	}
	ch, err := cfg.ClickHouse.Open()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	a, err := access.New(cfg.Access, access.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, S3: s3, Bucket: cfg.S3.Bucket, ClickHouse: ch})
	if err != nil {
		return usageError{Err: err}
	}
	return svc.Serve(ctx, cfg.HTTP, reg, logger, map[string]svc.Component{"access": a})
}

func newNATSAuthCmd() *cobra.Command {
	return svc.Command(svc.Spec[*natsauth.Settings]{
		Use:   "nats-auth",
		Short: "Give each node's producer its own NATS identity (auth callout)",
		Long: `nats-auth is the NATS auth callout of a cluster: nats-server sends it each new
connection that is not one of its static users, it checks the connection's
token (the producer pod's projected service-account token) with a
TokenReview, requires a producer service account and a pod bound to a node,
and answers with a user JWT holding that node's producer permissions, or a
refusal. Run two replicas: they share the requests.

Configuration: --config FILE (see deploy/k8s/25-nats-auth.yaml), then
environment overrides CAPSTREAM_NATSAUTH_<PATH>, e.g.
CAPSTREAM_NATSAUTH_NATS_PASSWORD, CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED and
CAPSTREAM_NATSAUTH_KUBE_KUBECONFIG.`,
		EnvPrefix: natsauth.EnvPrefix,
		Defaults:  natsauth.DefaultSettings,
		Run:       runNATSAuth,
	})
}

// runNATSAuth runs the callout and the health/metrics server until ctx
// ends or one of them fails.
func runNATSAuth(ctx context.Context, cfg *natsauth.Settings) error {
	logger := svc.NewLogger(cfg.Log)
	klog.SetSlogLogger(logger.With("component", "client-go"))
	warnInsecure(logger, cfg.NATS.Warnings()...)
	reg := svc.NewRegistry()
	kube, err := cfg.Kube.Client("capstream-nats-auth")
	if err != nil {
		return err
	}
	nc, err := cfg.NATS.Connect(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		logger.Error("nats", "error", err)
	}))
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := natsauth.New(cfg.Callout, natsauth.Deps{Logger: logger, Registerer: reg, NATS: nc, Kube: kube})
	if err != nil {
		return usageError{Err: err}
	}
	return svc.Serve(ctx, cfg.HTTP, reg, logger, map[string]svc.Component{"nats-auth": c})
}

// warnInsecure logs each non-empty warning about a setting that turns a
// protection off.
func warnInsecure(logger *slog.Logger, warnings ...string) {
	for _, w := range warnings {
		if w != "" {
			logger.Warn(w)
		}
	}
}

// runSink connects, builds the sink and runs it with the health and
// metrics server until ctx ends or either fails.
func runSink(ctx context.Context, c sink.ServiceSettings, name string,
	build func(*slog.Logger, prometheus.Registerer, jetstream.JetStream, driver.Conn) (svc.Component, error)) error {
	logger := svc.NewLogger(c.Log)
	warnInsecure(logger, append(c.NATS.Warnings(), c.ClickHouse.Warnings()...)...)
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
