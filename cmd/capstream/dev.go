package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/capstream/capstream/internal/netsim"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// devEnvPrefix prefixes `capstream dev`'s environment overrides, e.g.
// CAPSTREAM_DEV_S3_SECRETKEY or CAPSTREAM_DEV_NATS_STOREDIR.
const devEnvPrefix = "CAPSTREAM_DEV"

// devForeignEnv are variables that share the prefix but belong to
// deploy/dev/deps.sh and internal/testenv (where the services' env file
// lives); they are not settings and are left out of the overrides.
var devForeignEnv = []string{"CAPSTREAM_DEV_DIR", "CAPSTREAM_DEV_ENV"}

// devSettings is `capstream dev`'s configuration file: every service's
// section in one file, with the connections at the top so they are set
// once.
type devSettings struct {
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the one health and metrics listener of the whole pipeline.
	HTTP svc.HTTPConfig `yaml:"http"`
	// NATS is the embedded JetStream server.
	NATS devNATSConfig `yaml:"nats"`
	// Kube locates the API server; dev needs a kubeconfig.
	Kube router.KubeConfig `yaml:"kube"`
	// ClickHouse holds flows and pcap_objects.
	ClickHouse sink.ClickHouseConfig `yaml:"clickhouse"`
	// S3 receives the pcap objects.
	S3 sink.S3Config `yaml:"s3"`
	// CreateStorage creates the ClickHouse database and the S3 bucket
	// when they are missing, so a fresh machine needs no manual step.
	// Default true.
	CreateStorage bool `yaml:"createStorage"`
	// Nodes are the nodes served, one producer each. Default [sim-node].
	Nodes []string `yaml:"nodes"`
	// Router is the router's section. Its namespace is required in dev:
	// a development API server is often shared, and a dev router must
	// never touch other users' captures. Leader election is off by
	// default (one replica).
	Router router.Config `yaml:"router"`
	// Producer is every producer's section; node and nats are set by dev
	// (each node's name, the embedded server's URL).
	Producer producer.Config `yaml:"producer"`
	// Pcap is the pcap sink's section; its S3 comes from s3 above.
	Pcap pcapstore.Config `yaml:"pcap"`
	// Flows is the flow sink's section.
	Flows flowstore.Config `yaml:"flows"`
	// Simulate runs a simulated node (network namespaces, pods, traffic)
	// beside the pipeline; its node must be one of nodes, and with the
	// afpacket source the producer captures inside its namespace.
	Simulate netsim.Config `yaml:"simulate"`
}

// devNATSConfig configures the embedded nats-server.
type devNATSConfig struct {
	// Host is the client listener's address. Default 127.0.0.1.
	Host string `yaml:"host"`
	// Port is the client port; -1 picks a free one (logged at start).
	// Default -1.
	Port int `yaml:"port"`
	// StoreDir holds JetStream's files; empty means a temporary directory
	// removed at exit. Default empty.
	StoreDir string `yaml:"storeDir"`
	// PacketsMaxBytes bounds CAPSTREAM_PACKETS, in bytes. Default 1 GiB.
	PacketsMaxBytes int64 `yaml:"packetsMaxBytes"`
	// PacketsMaxAge bounds the age of unacked batches. Default 1h.
	PacketsMaxAge time.Duration `yaml:"packetsMaxAge"`
}

func defaultDevSettings() *devSettings {
	limits := schemas.DefaultPacketsStreamLimits()
	r := router.DefaultConfig()
	r.LeaderElection.Enabled = false
	sim := netsim.DefaultConfig()
	r.Namespace = sim.Namespace
	pcap := pcapstore.DefaultConfig()
	// Short rotation so objects appear within seconds on a laptop.
	pcap.MaxObjectAge, pcap.StopAfter = 10*time.Second, 5*time.Second
	flows := flowstore.DefaultConfig()
	flows.ActiveTimeout, flows.IdleTimeout, flows.StopAfter = 10*time.Second, 5*time.Second, 10*time.Second
	return &devSettings{
		Log:           svc.LogConfig{Level: "info", Format: "auto"},
		HTTP:          svc.HTTPConfig{Listen: "127.0.0.1:9100"},
		NATS:          devNATSConfig{Host: "127.0.0.1", Port: -1, PacketsMaxBytes: limits.MaxBytes, PacketsMaxAge: limits.MaxAge},
		Kube:          router.DefaultKubeConfig(),
		ClickHouse:    sink.DefaultClickHouseConfig(),
		S3:            sink.S3Config{Bucket: "capstream"},
		CreateStorage: true,
		Nodes:         []string{sim.Node},
		Router:        r,
		Producer:      producer.DefaultConfig(),
		Pcap:          pcap,
		Flows:         flows,
		Simulate:      sim,
	}
}

// identRE is what CREATE DATABASE gets without quoting.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Validate copies the shared S3 section into the pcap section (config.Load
// calls it after the overrides) and checks every section and how they fit
// together.
func (s *devSettings) Validate() error {
	s.Pcap.S3 = s.S3
	errs := []error{s.Log.Validate(), s.ClickHouse.Validate(), s.Pcap.Validate(), s.Flows.Validate(), s.Router.Validate()}
	if s.NATS.Port < -1 || s.NATS.Port > 65535 {
		errs = append(errs, fmt.Errorf("nats.port %d: want -1 (any free port) to 65535", s.NATS.Port))
	}
	if err := s.packetLimits().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("nats: %w", err))
	}
	if s.Kube.Kubeconfig == "" {
		errs = append(errs, errors.New("kube.kubeconfig: required (dev never runs in-cluster)"))
	}
	if s.Router.Namespace == "" {
		errs = append(errs, errors.New("router.namespace: required in dev, so a shared API server's other captures are never touched"))
	}
	if s.CreateStorage && !identRE.MatchString(s.ClickHouse.Database) {
		errs = append(errs, fmt.Errorf("clickhouse.database %q: createStorage needs a plain identifier", s.ClickHouse.Database))
	}
	if len(s.Nodes) == 0 {
		errs = append(errs, errors.New("nodes: at least one node"))
	}
	for i, n := range s.Nodes {
		if slices.Index(s.Nodes, n) != i {
			errs = append(errs, fmt.Errorf("nodes: %q listed twice", n))
		}
		if err := s.producerConfig(n, "nats://127.0.0.1:4222", "").Validate(); err != nil {
			errs = append(errs, fmt.Errorf("producer for node %q: %w", n, err))
		}
	}
	if s.Simulate.Enabled {
		errs = append(errs, s.Simulate.Validate())
		if !slices.Contains(s.Nodes, s.Simulate.Node) {
			errs = append(errs, fmt.Errorf("simulate.node %q: not in nodes %v, so nothing would capture it", s.Simulate.Node, s.Nodes))
		}
		if s.Simulate.Namespace != s.Router.Namespace {
			errs = append(errs, fmt.Errorf("simulate.namespace %q: the router is scoped to %q and would not see the pods", s.Simulate.Namespace, s.Router.Namespace))
		}
		if s.Simulate.InterfacePrefix != s.Router.InterfacePrefix {
			errs = append(errs, fmt.Errorf("simulate.interfacePrefix %q: differs from router.interfacePrefix %q", s.Simulate.InterfacePrefix, s.Router.InterfacePrefix))
		}
	}
	return errors.Join(errs...)
}

func (s *devSettings) packetLimits() schemas.PacketsStreamLimits {
	l := schemas.DefaultPacketsStreamLimits()
	l.MaxBytes, l.MaxAge = s.NATS.PacketsMaxBytes, s.NATS.PacketsMaxAge
	return l
}

// producerConfig is the producer section for one node. With the afpacket
// source and no namespace of its own, the simulated node's producer
// captures inside the simulated node's network namespace.
func (s *devSettings) producerConfig(node, url, simNetNS string) producer.Config {
	p := s.Producer
	p.Node = node
	p.NATS.URL = url
	p.NATS.Name = "capstream-producer-" + node
	if simNetNS != "" && s.Simulate.Enabled && node == s.Simulate.Node && p.Source == producer.SourceAFPacket && p.AFPacket.NetNS == "" {
		p.AFPacket.NetNS = simNetNS
	}
	return p
}

// devEnviron is the process environment without devForeignEnv.
func devEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(devForeignEnv, name) {
			env = append(env, kv)
		}
	}
	return env
}

// newDevCmd is `capstream dev`.
func newDevCmd() *cobra.Command {
	return serviceCmd(serviceSpec[*devSettings]{
		use:   "dev",
		short: "Run the whole pipeline in one process for a laptop or CI box",
		long: `dev runs the router, one producer per configured node, the pcap sink and the
flow sink in one process, with an embedded JetStream server (store in
nats.storeDir), against the ClickHouse, S3 and kube-apiserver that
deploy/dev/deps.sh starts. One listener serves /healthz, /readyz and
/metrics for all of them. SIGINT or SIGTERM stops the producers first
(their last batches are published), then the router and the sinks (open
pcap objects are completed, open flows inserted).

With simulate.enabled, dev also builds a simulated node: network namespaces
with Calico-style cali* veths, pods registered in the API server on that
node, and HTTP, HTTPS (TLS with SNI) and DNS traffic between them every
simulate.interval. The producer of that node captures live inside its
namespace. This needs root. make demo runs it (deploy/dev/demo.sh).

The router is scoped to router.namespace (required): it never touches
captures in other namespaces of a shared API server. The PacketCapture CRD
must be installed first (kubectl apply -f schemas/v3/crd.yaml); with
createStorage (default) the ClickHouse database and the S3 bucket are
created when missing.

Configuration: --config FILE (see deploy/dev/dev.yaml), then environment
overrides CAPSTREAM_DEV_<PATH>, e.g. CAPSTREAM_DEV_S3_ENDPOINT,
CAPSTREAM_DEV_S3_ACCESSKEY, CAPSTREAM_DEV_S3_SECRETKEY,
CAPSTREAM_DEV_CLICKHOUSE_ADDR, CAPSTREAM_DEV_KUBE_KUBECONFIG,
CAPSTREAM_DEV_SIMULATE_ENABLED. CAPSTREAM_DEV_DIR and CAPSTREAM_DEV_ENV
belong to deps.sh and are not settings.`,
		envPrefix: devEnvPrefix,
		environ:   devEnviron,
		defaults:  defaultDevSettings,
		run:       func(ctx context.Context, cfg *devSettings) error { return runDev(ctx, cfg, nil) },
	})
}

// devHooks let tests see inside a running pipeline; nil in the binary.
type devHooks struct {
	// started is called once everything is built, before the components
	// run, with the embedded server's client URL and the simulator (nil
	// when simulate is off).
	started func(natsURL string, sim *netsim.Simulator)
}

// devSetupTimeout bounds the start-up steps that talk to services
// (streams, durables, database, bucket).
const devSetupTimeout = time.Minute

// runDev runs the whole pipeline until ctx ends or a component fails.
func runDev(ctx context.Context, cfg *devSettings, hooks *devHooks) error {
	// Said up front rather than as a failed `ip netns add` after the
	// services have been set up.
	if cfg.Simulate.Enabled && os.Geteuid() != 0 {
		return errors.New("simulate.enabled needs root (network namespaces, veths, AF_PACKET): run as root or set simulate.enabled to false")
	}
	logger := svc.NewLogger(cfg.Log)
	// client-go logs through klog: send it to the same handler.
	klog.SetSlogLogger(logger.With("component", "client-go"))
	reg := svc.NewRegistry()

	ns, storeDir, err := startNATS(cfg.NATS)
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		if cfg.NATS.StoreDir == "" {
			_ = os.RemoveAll(storeDir)
		}
	}()
	url := ns.ClientURL()
	logger.Info("embedded jetstream started", "url", url, "store", storeDir)

	// One connection per component, as separate processes would have, so
	// a slow sink never holds up the router's publishes.
	routerJS, closeRouter, err := devJetStream(url, "capstream-router")
	if err != nil {
		return err
	}
	defer closeRouter()
	pcapJS, closePcap, err := devJetStream(url, "capstream-sink-pcap")
	if err != nil {
		return err
	}
	defer closePcap()
	flowsJS, closeFlows, err := devJetStream(url, "capstream-sink-flows")
	if err != nil {
		return err
	}
	defer closeFlows()

	s3, err := cfg.S3.Client()
	if err != nil {
		return err
	}
	if err := devSetup(ctx, cfg, routerJS, s3, logger); err != nil {
		return err
	}

	restCfg, err := routerRESTConfig(cfg.Kube)
	if err != nil {
		return usageError{err}
	}
	restCfg.UserAgent = "capstream-dev"
	kube, dyn, err := kubeClients(restCfg)
	if err != nil {
		return err
	}
	rcfg := cfg.Router
	// dev sizes the packets stream from its nats section; the router must
	// keep those limits rather than re-applying its own defaults.
	l := cfg.packetLimits()
	rcfg.PacketsStream = router.PacketsStreamConfig{Manage: true, MaxBytes: l.MaxBytes, MaxAge: l.MaxAge, Replicas: l.Replicas, Duplicates: l.Duplicates}
	if rcfg.LeaderElection.Identity == "" {
		host, _ := os.Hostname()
		rcfg.LeaderElection.Identity = "dev_" + host
	}
	r, err := router.New(rcfg, router.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, JetStream: routerJS})
	if err != nil {
		return err
	}
	pcapCH, err := cfg.ClickHouse.Open()
	if err != nil {
		return err
	}
	defer func(c io.Closer) { _ = c.Close() }(pcapCH)
	flowsCH, err := cfg.ClickHouse.Open()
	if err != nil {
		return err
	}
	defer func(c io.Closer) { _ = c.Close() }(flowsCH)
	pcapSink, err := pcapstore.New(cfg.Pcap, pcapstore.Deps{Logger: logger, Registerer: reg, JetStream: pcapJS, ClickHouse: pcapCH, S3: s3})
	if err != nil {
		return err
	}
	flowSink, err := flowstore.New(cfg.Flows, flowstore.Deps{Logger: logger, Registerer: reg, JetStream: flowsJS, ClickHouse: flowsCH})
	if err != nil {
		return err
	}

	var sim *netsim.Simulator
	simNetNS := ""
	if cfg.Simulate.Enabled {
		if sim, err = netsim.New(cfg.Simulate, netsim.Deps{Logger: logger, Kube: kube}); err != nil {
			return err
		}
		simNetNS = sim.NodeNetNS()
	}
	checks := map[string]svc.Check{"router": r.Ready, "sink-pcap": pcapSink.Ready, "sink-flows": flowSink.Ready}
	var producers []*producer.Producer
	for _, node := range cfg.Nodes {
		// Each producer's metrics carry its node, so several share one
		// registry without clashing.
		p, err := producer.New(cfg.producerConfig(node, url, simNetNS), producer.Deps{
			Logger:     logger,
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"node": node}, reg),
		})
		if err != nil {
			return err
		}
		producers = append(producers, p)
		checks["producer-"+node] = p.Ready
	}
	if sim != nil {
		checks["simulate"] = sim.Ready
	}
	srv := svc.NewServer(cfg.HTTP, reg, checks, logger)
	if hooks != nil && hooks.started != nil {
		hooks.started(url, sim)
	}

	// Two stages: traffic and producers stop first, so their last batches
	// and reports are published while the sinks and the router still
	// consume; then the sinks complete their objects and flows, the
	// router writes the last status, and the listener closes.
	g, gctx := errgroup.WithContext(ctx)
	lateCtx, lateCancel := context.WithCancel(context.WithoutCancel(gctx))
	defer lateCancel()
	var early sync.WaitGroup
	goEarly := func(run func(context.Context) error) {
		early.Add(1)
		g.Go(func() error {
			defer early.Done()
			return run(gctx)
		})
	}
	if sim != nil {
		goEarly(sim.Run)
	}
	for _, p := range producers {
		goEarly(p.Run)
	}
	late := map[string]func(context.Context) error{"router": r.Run, "sink-pcap": pcapSink.Run, "sink-flows": flowSink.Run, "http": srv.Run}
	for name, run := range late {
		g.Go(func() error {
			err := run(lateCtx)
			if err != nil && lateCtx.Err() != nil {
				// Shutdown had begun: the component's own grace handling
				// is done, so its error is reported but does not turn a
				// requested stop into a failure. (flowstore returns
				// "packet consumer closed" on a clean cancel when its
				// pull drains after the grace timer started.)
				logger.Warn("component ended with an error during shutdown", "component", name, "error", err)
				return nil
			}
			return err
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		early.Wait()
		logger.Info("producers stopped; stopping router and sinks")
		lateCancel()
		return nil
	})
	err = g.Wait()
	logger.Info("dev pipeline stopped")
	return err
}

// startNATS starts the embedded JetStream server and waits until it takes
// connections.
func startNATS(c devNATSConfig) (*server.Server, string, error) {
	dir := c.StoreDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "capstream-dev-nats-"); err != nil {
			return nil, "", fmt.Errorf("nats store dir: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("nats store dir %s: %w", dir, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "capstream-dev",
		Host:       c.Host,
		Port:       c.Port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		// Signals are the command's: it stops the pipeline in order.
		NoSigs: true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, "", fmt.Errorf("embedded nats on %s:%d: not ready after 10s", c.Host, c.Port)
	}
	return ns, dir, nil
}

func devJetStream(url, name string) (jetstream.JetStream, func(), error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nc.Close, nil
}

// devSetup creates the streams and both sink durables before any producer
// runs: CAPSTREAM_PACKETS has interest retention, so a batch published
// before the sinks bound their consumers would be discarded. With
// createStorage it also makes the database and the bucket.
func devSetup(ctx context.Context, cfg *devSettings, js jetstream.JetStream, s3 *minio.Client, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, devSetupTimeout)
	defer cancel()
	if err := schemas.EnsureStreams(ctx, js, cfg.packetLimits()); err != nil {
		return err
	}
	if _, err := sink.Bind(ctx, js, schemas.PcapSinkConsumer(), cfg.Pcap.Consumer.AckWait); err != nil {
		return err
	}
	if _, err := sink.Bind(ctx, js, schemas.FlowSinkConsumer(), cfg.Flows.Consumer.AckWait); err != nil {
		return err
	}
	if !cfg.CreateStorage {
		return nil
	}
	admin := cfg.ClickHouse
	admin.Database = "default"
	conn, err := admin.Open()
	if err != nil {
		return err
	}
	defer func(c driver.Conn) { _ = c.Close() }(conn)
	// identRE (Validate) keeps the name safe to splice in.
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.ClickHouse.Database); err != nil {
		return fmt.Errorf("create clickhouse database %s on %s: %w", cfg.ClickHouse.Database, cfg.ClickHouse.Addr, err)
	}
	ok, err := s3.BucketExists(ctx, cfg.S3.Bucket)
	if err != nil {
		return fmt.Errorf("s3 bucket %s on %s: %w", cfg.S3.Bucket, cfg.S3.Endpoint, err)
	}
	if !ok {
		if err := s3.MakeBucket(ctx, cfg.S3.Bucket, minio.MakeBucketOptions{Region: cfg.S3.Region}); err != nil {
			return fmt.Errorf("create s3 bucket %s: %w", cfg.S3.Bucket, err)
		}
		logger.Info("created s3 bucket", "bucket", cfg.S3.Bucket)
	}
	return nil
}
