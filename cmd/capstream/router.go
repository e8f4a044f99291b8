package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/klog/v2"

	"github.com/capstream/capstream/internal/clients"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/router"
)

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
