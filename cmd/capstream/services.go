package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/nats-io/nats.go"
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
	return serve(ctx, "router", cfg.Log, cfg.HTTP, cfg.NATS.Warnings(), func(s *service) (svc.Component, error) {
		// Leader election and the informers log through klog.
		s.useClientGo()
		kube, dyn, err := cfg.Kube.Clients("capstream-router")
		if err != nil {
			return nil, err
		}
		// The router starts (and campaigns) while NATS is still coming up;
		// the leader waits for it.
		nc, js, err := clients.JetStream(cfg.NATS)
		if err != nil {
			return nil, err
		}
		s.onStop(nc.Close)
		rcfg := cfg.Router
		if rcfg.LeaderElection.Identity == "" {
			host, _ := os.Hostname()
			rcfg.LeaderElection.Identity = host + "_" + rand.String(8)
		}
		return usage(router.New(rcfg, router.Deps{Logger: s.logger, Registerer: s.reg, Kube: kube, Dynamic: dyn, JetStream: js}))
	})
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
	return serve(ctx, "producer", cfg.Log, cfg.HTTP, cfg.NATS.Warnings(), func(s *service) (svc.Component, error) {
		nc, err := cfg.NATS.Connect(producer.ConnOptions(s.logger)...)
		if err != nil {
			return nil, err
		}
		s.onStop(nc.Close)
		return producer.New(cfg.Producer, producer.Deps{Logger: s.logger, Registerer: s.reg, NATS: nc})
	})
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
			return runSink(ctx, cfg.ServiceSettings, "sink-pcap", cfg.S3.Warnings(), func(deps sink.Deps) (svc.Component, error) {
				deps.S3 = s3
				return pcapstore.New(cfg.Pcap, deps)
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
			return runSink(ctx, cfg.ServiceSettings, "sink-flows", nil, func(deps sink.Deps) (svc.Component, error) {
				return flowstore.New(cfg.Flows, deps)
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
	warnings := append(append(cfg.Access.Warnings(), cfg.S3.Warnings()...), cfg.ClickHouse.Warnings()...)
	return serve(ctx, "access", cfg.Log, cfg.HTTP, warnings, func(s *service) (svc.Component, error) {
		s.useClientGo()
		kube, dyn, err := cfg.Kube.Clients("capstream-access")
		if err != nil {
			return nil, err
		}
		s3, err := cfg.S3.Client()
		if err != nil {
			return nil, err
		}
		ch, err := cfg.ClickHouse.Open()
		if err != nil {
			return nil, err
		}
		s.onStop(func() { _ = ch.Close() })
		return usage(access.New(cfg.Access, access.Deps{Logger: s.logger, Registerer: s.reg, Kube: kube, Dynamic: dyn, S3: s3, Bucket: cfg.S3.Bucket, ClickHouse: ch}))
	})
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
	return serve(ctx, "nats-auth", cfg.Log, cfg.HTTP, cfg.NATS.Warnings(), func(s *service) (svc.Component, error) {
		s.useClientGo()
		kube, err := cfg.Kube.Client("capstream-nats-auth")
		if err != nil {
			return nil, err
		}
		nc, err := cfg.NATS.Connect(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.logger.Error("nats", "error", err)
		}))
		if err != nil {
			return nil, err
		}
		s.onStop(nc.Close)
		return usage(natsauth.New(cfg.Callout, natsauth.Deps{Logger: s.logger, Registerer: s.reg, NATS: nc, Kube: kube}))
	})
}

// service is what serve hands the function that dials and builds a
// service's component: the logger and registry every service has, and
// what to close once it has stopped.
type service struct {
	logger  *slog.Logger
	reg     *prometheus.Registry
	closers []func()
}

// serve runs one service: it makes the logger, logs each warning about a
// setting that turns a protection off, makes the registry, has build dial
// and build the component, and runs it as name with the health and
// metrics server until ctx ends (SIGINT or SIGTERM) or either fails. What
// build handed to onStop is closed last, the latest first.
func serve(ctx context.Context, name string, log svc.LogConfig, http svc.HTTPConfig, warnings []string,
	build func(*service) (svc.Component, error)) error {
	s := &service{logger: svc.NewLogger(log)}
	defer func() {
		for i := len(s.closers) - 1; i >= 0; i-- {
			s.closers[i]()
		}
	}()
	warnInsecure(s.logger, warnings...)
	s.reg = svc.NewRegistry()
	c, err := build(s)
	if err != nil {
		return err
	}
	return svc.Serve(ctx, http, s.reg, s.logger, map[string]svc.Component{name: c})
}

// onStop has serve call f once the service has stopped.
func (s *service) onStop(f func()) { s.closers = append(s.closers, f) }

// useClientGo sends client-go's logs (klog) to the service's logger, for
// the services that talk to the Kubernetes API.
func (s *service) useClientGo() { klog.SetSlogLogger(s.logger.With("component", "client-go")) }

// usage returns what a component's New returned, an error as a usage
// error: New refuses only configuration.
func usage[C svc.Component](c C, err error) (svc.Component, error) {
	if err != nil {
		return nil, usageError{Err: err}
	}
	return c, nil
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

// runSink dials NATS and ClickHouse, has build build the sink from its
// Deps and serves it; warnings are the sink's own, beside those of the
// shared sections.
func runSink(ctx context.Context, c sink.ServiceSettings, name string, warnings []string, build func(sink.Deps) (svc.Component, error)) error {
	warnings = append(append(c.NATS.Warnings(), c.ClickHouse.Warnings()...), warnings...)
	return serve(ctx, name, c.Log, c.HTTP, warnings, func(s *service) (svc.Component, error) {
		applyMemoryLimit(s.logger, c.MemoryLimit)
		nc, js, err := clients.JetStream(c.NATS)
		if err != nil {
			return nil, err
		}
		s.onStop(nc.Close)
		ch, err := c.ClickHouse.Open()
		if err != nil {
			return nil, err
		}
		s.onStop(func() { _ = ch.Close() })
		return build(sink.Deps{Logger: s.logger, Registerer: s.reg, JetStream: js, ClickHouse: ch})
	})
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
