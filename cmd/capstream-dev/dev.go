package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/netsim"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/pipeline"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// devEnvPrefix prefixes `capstream-dev`'s environment overrides, e.g.
// CAPSTREAM_DEV_S3_SECRETKEY or CAPSTREAM_DEV_NATS_STOREDIR.
const devEnvPrefix = "CAPSTREAM_DEV"

// devForeignEnv are variables that share the prefix but belong to
// deploy/dev/deps.sh and internal/testenv (where the services' env file
// lives); they are not settings and are left out of the overrides.
var devForeignEnv = []string{"CAPSTREAM_DEV_DIR", "CAPSTREAM_DEV_ENV"}

// devSettings is `capstream-dev`'s configuration file: every service's
// section in one file, with the connections at the top so they are set
// once.
type devSettings struct {
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the one health and metrics listener of the whole pipeline.
	HTTP svc.HTTPConfig `yaml:"http"`
	// NATS is the embedded JetStream server.
	NATS pipeline.ServerConfig `yaml:"nats"`
	// Kube locates the API server; dev needs a kubeconfig.
	Kube router.KubeConfig `yaml:"kube"`
	// ClickHouse holds flows and pcap_objects.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// S3 receives the pcap objects.
	S3 clients.S3Config `yaml:"s3"`
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
	// Producer is every producer's section; dev sets each one's node.
	Producer producer.Config `yaml:"producer"`
	// Pcap is the pcap sink's section; its S3 comes from s3 above.
	Pcap pcapstore.Config `yaml:"pcap"`
	// Flows is the flow sink's section.
	Flows flowstore.Config `yaml:"flows"`
	// Access is the access API served beside the pipeline (as the kube
	// section's identity, with the clickhouse and s3 sections); its key
	// prefix is the pcap sink's. Default: any free loopback port, logged
	// at start, with the dev CA's server certificate.
	Access access.Config `yaml:"access"`
	// Simulate runs a simulated node (network namespaces, pods, traffic)
	// beside the pipeline; its node must be one of nodes, and with the
	// afpacket source the producer captures inside its namespace.
	Simulate netsim.Config `yaml:"simulate"`
}

// devTLSDir is where deps.sh leaves the dev CA and certificates.
const devTLSDir = "/tmp/capstream-dev/tls"

func defaultDevSettings() *devSettings {
	r := router.DefaultConfig()
	r.LeaderElection.Enabled = false
	sim := netsim.DefaultConfig()
	r.Namespace = sim.Namespace
	pcap := pcapstore.DefaultConfig()
	// Short rotation so objects appear within seconds on a laptop.
	pcap.MaxObjectAge, pcap.StopAfter = 10*time.Second, 5*time.Second
	flows := flowstore.DefaultConfig()
	flows.ActiveTimeout, flows.IdleTimeout, flows.StopAfter = 10*time.Second, 5*time.Second, 10*time.Second
	nats := pipeline.DefaultServerConfig()
	// deps.sh up makes these with deploy/dev/certs.sh.
	nats.TLS = pipeline.ServerTLS{CertFile: devTLSDir + "/server.pem", KeyFile: devTLSDir + "/server-key.pem", CAFile: devTLSDir + "/ca.pem"}
	return &devSettings{
		Log:           svc.DefaultLogConfig(),
		HTTP:          svc.HTTPConfig{Listen: "127.0.0.1:9100"},
		NATS:          nats,
		Kube:          router.DefaultKubeConfig(),
		ClickHouse:    clients.DefaultClickHouseConfig(),
		S3:            clients.DefaultS3Config(),
		CreateStorage: true,
		Nodes:         []string{sim.Node},
		Router:        r,
		Producer:      producer.DefaultConfig(),
		Pcap:          pcap,
		Flows:         flows,
		Simulate:      sim,
		Access:        devAccessConfig(),
	}
}

func devAccessConfig() access.Config {
	c := access.DefaultConfig()
	c.Listen, c.CertFile, c.KeyFile = "127.0.0.1:0", devTLSDir+"/server.pem", devTLSDir+"/server-key.pem"
	return c
}

// identRE is what CREATE DATABASE gets without quoting.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Validate copies the shared S3 section into the pcap section (config.Load
// calls it after the overrides) and checks every section and how they fit
// together.
func (s *devSettings) Validate() error {
	s.Pcap.S3 = s.S3
	s.Access.Prefix = s.Pcap.Prefix
	errs := []error{s.Log.Validate(), s.HTTP.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), s.Pcap.Validate(), s.Flows.Validate(), s.Router.Validate(), s.Access.Validate()}
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
		if err := s.producerConfig(n, "").Validate(); err != nil {
			errs = append(errs, fmt.Errorf("producer for node %q: %w", n, err))
		}
	}
	if s.Producer.InterfacePrefix != s.Router.InterfacePrefix {
		errs = append(errs, fmt.Errorf("producer.interfacePrefix %q: differs from router.interfacePrefix %q, so every command would be refused", s.Producer.InterfacePrefix, s.Router.InterfacePrefix))
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

// producerConfig is the producer section for one node. With the afpacket
// source and no namespace of its own, the simulated node's producer
// captures inside the simulated node's network namespace.
func (s *devSettings) producerConfig(node, simNetNS string) producer.Config {
	p := s.Producer
	p.Node = node
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

// newDevCmd is `capstream-dev`.
func newDevCmd() *cobra.Command {
	return svc.Command(svc.Spec[*devSettings]{
		Use:   "capstream-dev",
		Short: "Run the whole capstream pipeline in one process for a laptop or CI box",
		Long: `capstream-dev runs the router, one producer per configured node, the pcap sink and the
flow sink in one process, with an embedded JetStream server (store in
nats.storeDir), against the ClickHouse, S3 and kube-apiserver that
deploy/dev/deps.sh starts. One listener serves /healthz, /readyz and
/metrics for all of them. SIGINT or SIGTERM stops the producers first
(their last batches are published), then the router and the sinks (open
pcap objects are completed, open flows inserted).

With simulate.enabled, capstream-dev also builds a simulated node: network namespaces
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
		EnvPrefix: devEnvPrefix,
		Environ:   devEnviron,
		Defaults:  defaultDevSettings,
		Run:       func(ctx context.Context, cfg *devSettings) error { return runDev(ctx, cfg, nil) },
	})
}

// devHooks let tests see inside a running pipeline; nil in the binary.
type devHooks struct {
	// started is called once everything is built, before the components
	// run, with the pipeline and the simulator (nil when simulate is off).
	started func(p *pipeline.Pipeline, sim *netsim.Simulator)
}

// devSetupTimeout bounds creating the database and the bucket.
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

	if cfg.CreateStorage {
		if err := createStorage(ctx, cfg, logger); err != nil {
			return err
		}
	}
	kube, dyn, err := cfg.Kube.Clients("capstream-dev")
	if err != nil {
		return usageError{Err: err}
	}
	rcfg := cfg.Router
	if rcfg.LeaderElection.Identity == "" {
		host, _ := os.Hostname()
		rcfg.LeaderElection.Identity = "dev_" + host
	}
	deps := pipeline.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, Early: map[string]svc.Component{}}
	var sim *netsim.Simulator
	simNetNS := ""
	if cfg.Simulate.Enabled {
		if sim, err = netsim.New(cfg.Simulate, netsim.Deps{Logger: logger, Kube: kube}); err != nil {
			return err
		}
		simNetNS = sim.NodeNetNS()
		deps.Early["simulate"] = sim
	}
	api, closeAPI, err := newDevAccess(cfg, logger, reg, kube, dyn)
	if err != nil {
		return err
	}
	defer closeAPI()
	deps.Early["access"] = api
	pcfg := pipeline.Config{Server: cfg.NATS, Router: &rcfg, Pcap: cfg.Pcap, Flows: cfg.Flows, ClickHouse: cfg.ClickHouse, S3: cfg.S3}
	for _, node := range cfg.Nodes {
		pcfg.Producers = append(pcfg.Producers, cfg.producerConfig(node, simNetNS))
	}
	p, err := pipeline.Start(ctx, pcfg, deps)
	if err != nil {
		return err
	}
	defer p.Close()
	if hooks != nil && hooks.started != nil {
		hooks.started(p, sim)
	}
	srv := svc.NewServer(cfg.HTTP, reg, p.Checks(), logger)
	// The listener outlives the pipeline's staged stop, so /readyz shows
	// the components stopping.
	// A listener that fails (its port is taken) stops the pipeline, as it
	// stops every service.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	srvCtx, srvCancel := context.WithCancel(context.WithoutCancel(ctx))
	srvDone := make(chan error, 1)
	go func() {
		err := srv.Run(srvCtx)
		if err != nil {
			stopRun()
		}
		srvDone <- err
	}()
	err = p.Run(runCtx)
	srvCancel()
	if serr := <-srvDone; err == nil {
		err = serr
	}
	return err
}

// newDevAccess builds the access API on the dev pipeline's stores.
func newDevAccess(cfg *devSettings, logger *slog.Logger, reg prometheus.Registerer, kube kubernetes.Interface, dyn dynamic.Interface) (*access.Server, func(), error) {
	s3, err := cfg.S3.Client()
	if err != nil {
		return nil, nil, err
	}
	ch, err := cfg.ClickHouse.Open()
	if err != nil {
		return nil, nil, err
	}
	api, err := access.New(cfg.Access, access.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, S3: s3, Bucket: cfg.S3.Bucket, ClickHouse: ch})
	if err != nil {
		_ = ch.Close()
		return nil, nil, usageError{Err: err}
	}
	return api, func() { _ = ch.Close() }, nil
}

// createStorage makes the ClickHouse database and the S3 bucket when they
// are missing, so a fresh machine needs no manual step.
func createStorage(ctx context.Context, cfg *devSettings, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, devSetupTimeout)
	defer cancel()
	admin := cfg.ClickHouse
	admin.Database = "default"
	conn, err := admin.Open()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	// identRE (Validate) keeps the name safe to splice in.
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.ClickHouse.Database); err != nil {
		return fmt.Errorf("create clickhouse database %s on %s: %w", cfg.ClickHouse.Database, cfg.ClickHouse.Addr, err)
	}
	s3, err := cfg.S3.Client()
	if err != nil {
		return err
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
