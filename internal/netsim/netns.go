package netsim

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/capstream/capstream/internal/netns"
	"github.com/capstream/capstream/schemas"
)

// PodNet is a pod's network namespace wired to its node the way Calico
// wires workloads. internal/testenv's NetNode builds the same wiring: both
// use internal/netns.
type PodNet struct {
	Pod
	// NetNS is the pod's network namespace name (under /var/run/netns).
	NetNS string
	// HostIface is the node-side veth, named as Calico names it.
	HostIface string
	// IP is the pod's IPv4 address.
	IP net.IP
}

// Do runs fn inside the pod's network namespace on a locked OS thread.
// Sockets fn opens stay in that namespace after Do returns.
func (p *PodNet) Do(fn func() error) error { return DoInNetNS(p.NetNS, fn) }

// NetNSPath is the path of a named network namespace, as producer's
// afpacket.Config.NetNS wants it.
func NetNSPath(name string) string { return netns.Path(name) }

// buildNode creates the node namespace and one Calico-style veth per pod
// (netns.AddNode and netns.AddVeth, IPv4 only). Namespaces left by an
// earlier run with the same names are deleted first: the names are this
// simulator's own.
func buildNode(ctx context.Context, cfg Config) ([]*PodNet, error) {
	names := []string{cfg.NetNS}
	for i := range cfg.Pods {
		names = append(names, podNetNS(cfg.NetNS, i))
	}
	for _, n := range names {
		if _, err := os.Stat(NetNSPath(n)); err == nil {
			_ = netns.Delete(ctx, n)
		}
	}
	node := cfg.NetNS
	if err := netns.AddNode(ctx, netns.Node{Name: node, Addr: net.IPv4(10, 66, 255, 1)}); err != nil {
		return nil, err
	}
	var pods []*PodNet
	for i, p := range cfg.Pods {
		pn := &PodNet{
			Pod:       p,
			NetNS:     podNetNS(node, i),
			HostIface: schemas.InterfaceName(cfg.InterfacePrefix, p.Namespace, p.Name),
			IP:        net.IPv4(10, 66, 0, byte(i+2)).To4(),
		}
		pods = append(pods, pn)
		if err := netns.AddVeth(ctx, netns.Veth{Node: node, Pod: pn.NetNS, HostIface: pn.HostIface, IPv4: pn.IP}); err != nil {
			deleteNode(context.WithoutCancel(ctx), node, pods)
			return nil, err
		}
	}
	return pods, nil
}

// deleteNode removes the pod and node namespaces; the veths go with them.
func deleteNode(ctx context.Context, node string, pods []*PodNet) error {
	var errs []string
	for _, p := range pods {
		if err := netns.Delete(ctx, p.NetNS); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := netns.Delete(ctx, node); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete node %s: %s", node, strings.Join(errs, "; "))
	}
	return nil
}

func podNetNS(node string, i int) string { return fmt.Sprintf("%s-p%d", node, i) }

// DoInNetNS runs fn inside the named network namespace on a locked OS
// thread of a fresh goroutine. Sockets fn opens stay in that namespace
// after the thread switches back, which is how the simulator's servers and
// clients live in pods while the process stays on the host.
func DoInNetNS(name string, fn func() error) error { return netns.Do(NetNSPath(name), fn) }
