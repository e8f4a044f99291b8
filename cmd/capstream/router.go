package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	// Aliased: package main has a func run.
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/router"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// routerEnvPrefix prefixes the router's environment overrides, e.g.
// CAPSTREAM_ROUTER_NATS_URL or CAPSTREAM_ROUTER_NATS_PASSWORD.
const routerEnvPrefix = "CAPSTREAM_ROUTER"

// routerSettings is the router binary's configuration file. Connections
// sit at the top so their overrides are short (CAPSTREAM_ROUTER_NATS_URL,
// CAPSTREAM_ROUTER_KUBE_KUBECONFIG).
type routerSettings struct {
	// Kube says how to reach the API server; no kubeconfig means in-cluster.
	Kube router.KubeConfig `yaml:"kube"`
	// NATS is the NATS connection.
	NATS router.NATSConfig `yaml:"nats"`
	// Log configures the logger.
	Log svc.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP svc.HTTPConfig `yaml:"http"`
	// Router configures reconciling, status and leader election.
	Router router.Config `yaml:"router"`
}

func defaultRouterSettings() *routerSettings {
	return &routerSettings{
		Kube:   router.DefaultKubeConfig(),
		NATS:   router.DefaultNATSConfig(),
		Log:    svc.LogConfig{Level: "info", Format: "auto"},
		HTTP:   svc.HTTPConfig{Listen: ":8080"},
		Router: router.DefaultConfig(),
	}
}

// Validate checks every section; config.Load calls it after the overrides.
func (s *routerSettings) Validate() error {
	return errors.Join(s.Kube.Validate(), s.NATS.Validate(), s.Log.Validate(), s.Router.Validate())
}

func newRouterCmd() *cobra.Command {
	return serviceCmd(serviceSpec[*routerSettings]{
		use:   "router",
		short: "Watch PacketCaptures and publish per-node capture commands",
		long: `router watches PacketCapture resources, pods and namespaces, resolves each
capture's Calico selector to workload endpoints, publishes the desired state
per (node, capture) to CAPSTREAM_COMMANDS and writes the nodes' reports back
to the captures' status. Run two replicas: a Lease elects the active one.

Configuration: --config FILE (see deploy/dev/router.yaml), then environment
overrides CAPSTREAM_ROUTER_<PATH>, e.g. CAPSTREAM_ROUTER_NATS_URL,
CAPSTREAM_ROUTER_NATS_PASSWORD, CAPSTREAM_ROUTER_KUBE_KUBECONFIG and
CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE.`,
		envPrefix: routerEnvPrefix,
		defaults:  defaultRouterSettings,
		run:       runRouter,
	})
}

// runRouter runs the router and the health/metrics server until ctx ends
// (serviceCmd ends it on SIGINT or SIGTERM) or one of them fails.
func runRouter(ctx context.Context, cfg *routerSettings) error {
	logger := svc.NewLogger(cfg.Log)
	// client-go (leader election, informers) logs through klog: send it
	// to the same handler.
	klog.SetSlogLogger(logger.With("component", "client-go"))
	reg := svc.NewRegistry()

	restCfg, err := routerRESTConfig(cfg.Kube)
	if err != nil {
		return err
	}
	kube, dyn, err := kubeClients(restCfg)
	if err != nil {
		return err
	}
	// RetryOnFailedConnect: the router starts (and campaigns) while NATS
	// is still coming up; the leader waits for it.
	nc, err := nats.Connect(cfg.NATS.URL, routerNATSOptions(cfg.NATS)...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", cfg.NATS.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	rcfg := cfg.Router
	if rcfg.LeaderElection.Identity == "" {
		host, _ := os.Hostname()
		rcfg.LeaderElection.Identity = host + "_" + rand.String(8)
	}
	r, err := router.New(rcfg, router.Deps{Logger: logger, Registerer: reg, Kube: kube, Dynamic: dyn, JetStream: js})
	if err != nil {
		return usageError{err}
	}
	srv := svc.NewServer(cfg.HTTP, reg, map[string]svc.Check{"router": r.Ready}, logger)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}

// routerRESTConfig loads the kubeconfig file, or the in-cluster config
// when none is set.
func routerRESTConfig(k router.KubeConfig) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	if k.Kubeconfig != "" {
		c, err = clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	} else {
		c, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	c.QPS, c.Burst = k.QPS, k.Burst
	c.UserAgent = "capstream-router"
	return c, nil
}

// kubeClients builds the typed and dynamic clients the router uses.
func kubeClients(c *rest.Config) (kubernetes.Interface, dynamic.Interface, error) {
	kube, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(c)
	if err != nil {
		return nil, nil, fmt.Errorf("dynamic client: %w", err)
	}
	return kube, dyn, nil
}

func routerNATSOptions(n router.NATSConfig) []nats.Option {
	opts := []nats.Option{
		nats.Name("capstream-router"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
	}
	switch {
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	case n.User != "" || n.Password != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	case n.Token != "":
		opts = append(opts, nats.Token(strings.TrimSpace(n.Token)))
	}
	return opts
}
