// Package netsim simulates one Kubernetes node for `capstream-dev` and
// tests: a network namespace standing in for the node, one Calico-style
// veth and pod namespace per pod, matching Pod objects in the API server
// (scheduled on the node and marked Running, so the router resolves them to
// the same cali* interfaces), and real client/server traffic between the
// pods: HTTP with a Host header, DNS over UDP, and TLS with SNI.
//
// Lifecycle: New only checks the configuration. Run builds the namespaces,
// registers the pods, serves and sends traffic until its context ends, and
// then removes everything it made (pods, namespaces) under a fresh timeout
// context; every goroutine it starts has ended when it returns. It needs
// root and iproute2, and it only ever sends traffic inside its own
// namespaces.
package netsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// Pod is one simulated pod. The first pod of a Config is the server; the
// others are clients that talk to it.
type Pod struct {
	// Name is the pod's name in Config.Namespace.
	Name string `yaml:"name"`
	// Labels are the pod's labels, which PacketCapture selectors match.
	Labels map[string]string `yaml:"labels"`
	// Namespace is filled from Config.Namespace.
	Namespace string `yaml:"-"`
}

// Config configures the simulated node.
type Config struct {
	// Enabled is read by the caller (`capstream-dev` runs a simulator only
	// when it is set); New ignores it. Default false.
	Enabled bool `yaml:"enabled"`
	// Node is the Kubernetes node name the pods are scheduled on; a
	// producer must serve the same node. Default "sim-node".
	Node string `yaml:"node"`
	// NetNS names the node's network namespace (under /var/run/netns);
	// pod namespaces are NetNS-p0, NetNS-p1, ... Default "capstream-sim".
	NetNS string `yaml:"netns"`
	// Namespace is the pods' Kubernetes namespace, created when missing.
	// Default "sample-namespace".
	Namespace string `yaml:"namespace"`
	// InterfacePrefix is the host-side veth prefix; it must equal the
	// router's. Default "cali".
	InterfacePrefix string `yaml:"interfacePrefix"`
	// Interval is the period of the clients' rounds (one HTTP request,
	// one HTTPS request, two DNS queries per client). Default 1s.
	Interval time.Duration `yaml:"interval"`
	// Pods are the pods; the first serves. Default: sample-web and
	// sample-client labelled k8s-app=sample-app, and other-client
	// labelled k8s-app=other-app.
	Pods []Pod `yaml:"pods"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Node:            "sim-node",
		NetNS:           "capstream-sim",
		Namespace:       "sample-namespace",
		InterfacePrefix: "cali",
		Interval:        time.Second,
		Pods: []Pod{
			{Name: "sample-web", Labels: map[string]string{"k8s-app": "sample-app"}},
			{Name: "sample-client", Labels: map[string]string{"k8s-app": "sample-app"}},
			{Name: "other-client", Labels: map[string]string{"k8s-app": "other-app"}},
		},
	}
}

// Validate returns every problem with c.
func (c Config) Validate() error {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(c.Node) {
		errs = append(errs, fmt.Errorf("simulate.node %q: %s", c.Node, msg))
	}
	// iproute2 keeps names as files; short names also keep "ip netns"
	// output readable.
	if len(c.NetNS) > 40 {
		errs = append(errs, fmt.Errorf("simulate.netns %q: want at most 40 characters", c.NetNS))
	}
	for _, msg := range validation.IsDNS1123Label(c.NetNS) {
		errs = append(errs, fmt.Errorf("simulate.netns %q: %s", c.NetNS, msg))
	}
	for _, msg := range validation.IsDNS1123Label(c.Namespace) {
		errs = append(errs, fmt.Errorf("simulate.namespace %q: %s", c.Namespace, msg))
	}
	if n := len(c.InterfacePrefix); n < 1 || n > 4 {
		errs = append(errs, fmt.Errorf("simulate.interfacePrefix %q: want 1 to 4 bytes", c.InterfacePrefix))
	}
	if c.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("simulate.interval %s: want at least 10ms", c.Interval))
	}
	if len(c.Pods) < 2 || len(c.Pods) > 200 {
		errs = append(errs, fmt.Errorf("simulate.pods: want 2 to 200 pods (a server and clients), have %d", len(c.Pods)))
	}
	seen := map[string]bool{}
	for i, p := range c.Pods {
		for _, msg := range validation.IsDNS1123Subdomain(p.Name) {
			errs = append(errs, fmt.Errorf("simulate.pods[%d].name %q: %s", i, p.Name, msg))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("simulate.pods[%d].name %q: duplicate", i, p.Name))
		}
		seen[p.Name] = true
	}
	return errors.Join(errs...)
}

// Deps are the simulator's collaborators.
type Deps struct {
	// Logger receives the simulator's logs; component=netsim is added.
	Logger *slog.Logger
	// Kube, when set, receives the Pod objects; nil simulates the network
	// only (tests that replay or capture without a router).
	Kube kubernetes.Interface
}

// Stats count the clients' exchanges since Run started.
type Stats struct {
	// OK and Failed count exchanges (one request or query each).
	OK, Failed uint64
}

// Simulator is one simulated node. See the package comment.
type Simulator struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	ready  atomic.Bool
	pods   atomic.Pointer[[]*PodNet]
	ok     atomic.Uint64
	failed atomic.Uint64
}

// New checks cfg; it does no I/O.
func New(cfg Config, deps Deps) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("netsim config: %w", err)
	}
	if deps.Logger == nil {
		return nil, errors.New("netsim: logger is required")
	}
	for i := range cfg.Pods {
		cfg.Pods[i].Namespace = cfg.Namespace
	}
	return &Simulator{cfg: cfg, deps: deps, log: deps.Logger.With("component", "netsim", "node", cfg.Node)}, nil
}

// NodeNetNS is the path of the node's network namespace, where a producer
// opens its AF_PACKET sockets (producer afpacket.Config.NetNS). It exists
// while Run runs.
func (s *Simulator) NodeNetNS() string { return NetNSPath(s.cfg.NetNS) }

// Pods returns the wired pods once Run has built them, else nil.
func (s *Simulator) Pods() []*PodNet {
	if p := s.pods.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats returns the exchange counters.
func (s *Simulator) Stats() Stats { return Stats{OK: s.ok.Load(), Failed: s.failed.Load()} }

// Ready reports whether the node is built, the pods registered and the
// servers listening.
func (s *Simulator) Ready() error {
	if !s.ready.Load() {
		return errors.New("simulated node not built yet")
	}
	return nil
}

// cleanupTimeout bounds removing pods and namespaces after Run's context
// ended.
const cleanupTimeout = 30 * time.Second

// Run builds the node, registers the pods and runs the traffic until ctx
// ends, then removes what it made. A clean cancel returns nil.
func (s *Simulator) Run(ctx context.Context) (err error) {
	pods, err := buildNode(ctx, s.cfg)
	if err != nil {
		return fmt.Errorf("build simulated node %s: %w", s.cfg.Node, err)
	}
	s.pods.Store(&pods)
	defer func() {
		s.ready.Store(false)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		var errs []error
		if s.deps.Kube != nil {
			errs = append(errs, unregisterPods(cctx, s.deps.Kube, pods))
		}
		errs = append(errs, deleteNode(cctx, s.cfg.NetNS, pods))
		if cerr := errors.Join(errs...); cerr != nil {
			s.log.Warn("cleanup", "error", cerr)
			if err == nil && ctx.Err() == nil {
				err = cerr
			}
		}
		s.log.Info("simulated node removed")
	}()
	for _, p := range pods {
		s.log.Info("pod wired", "namespace", p.Namespace, "pod", p.Name, "ip", p.IP.String(), "interface", p.HostIface, "netns", p.NetNS)
	}
	if s.deps.Kube != nil {
		if err := registerPods(ctx, s.deps.Kube, s.cfg.Node, pods); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("register simulated pods: %w", err)
		}
	}
	t, err := newTraffic(s, pods)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	t.start(gctx, g)
	s.ready.Store(true)
	s.log.Info("simulated node ready", "netns", s.NodeNetNS(), "pods", len(pods))
	return g.Wait()
}
