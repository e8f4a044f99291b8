package netsim

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/capstream/capstream/internal/netns"
)

// netnsDir is where iproute2 mounts named network namespaces.
const netnsDir = "/var/run/netns/"

// PodNet is a pod's network namespace wired to its node the way Calico
// wires workloads. internal/testenv's NetNode wires the same way with `ip`
// commands bound to testing.TB; both enter namespaces through
// internal/netns.
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

// InterfaceName is Calico's host-side interface name for a pod: prefix plus
// the first 11 hex digits of sha1("<namespace>.<pod>"). The router computes
// the same name, so the veths built here are the ones it tells producers to
// capture.
func InterfaceName(prefix, namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(sum[:])[:11]
}

// NetNSPath is the path of a named network namespace, as producer's
// afpacket.Config.NetNS wants it.
func NetNSPath(name string) string { return netnsDir + name }

// buildNode creates the node namespace and one Calico-style veth per pod:
// a host side cali<hash> with MAC ee:ee:ee:ee:ee:ee, proxy ARP and a /32
// route to the pod; in the pod, eth0 with a /32 address and a default route
// via 169.254.1.1. Namespaces left by an earlier run with the same names
// are deleted first: the names are this simulator's own.
func buildNode(ctx context.Context, cfg Config) ([]*PodNet, error) {
	names := []string{cfg.NetNS}
	for i := range cfg.Pods {
		names = append(names, podNetNS(cfg.NetNS, i))
	}
	for _, n := range names {
		if _, err := os.Stat(NetNSPath(n)); err == nil {
			_ = ipCmd(ctx, "netns", "del", n)
		}
	}
	node := cfg.NetNS
	steps := [][]string{
		{"ip", "netns", "add", node},
		// Forward like a node, without touching the host's own setting.
		{"ip", "netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && " + noIPv6},
		{"ip", "-n", node, "link", "set", "lo", "up"},
		// A node address gives the node's ARP requests to pods a source.
		{"ip", "-n", node, "addr", "add", "10.66.255.1/32", "dev", "lo"},
	}
	if err := runSteps(ctx, steps); err != nil {
		return nil, err
	}
	var pods []*PodNet
	for i, p := range cfg.Pods {
		pn := &PodNet{
			Pod:       p,
			NetNS:     podNetNS(node, i),
			HostIface: InterfaceName(cfg.InterfacePrefix, p.Namespace, p.Name),
			IP:        net.IPv4(10, 66, 0, byte(i+2)).To4(),
		}
		ip := pn.IP.String()
		steps := [][]string{
			{"ip", "netns", "add", pn.NetNS},
			{"ip", "netns", "exec", pn.NetNS, "sh", "-c", noIPv6},
			{"ip", "-n", node, "link", "add", pn.HostIface, "type", "veth", "peer", "name", "eth0", "netns", pn.NetNS},
			{"ip", "-n", node, "link", "set", pn.HostIface, "address", "ee:ee:ee:ee:ee:ee", "up"},
			{"ip", "netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/" + pn.HostIface + "/proxy_arp"},
			{"ip", "-n", node, "route", "add", ip + "/32", "dev", pn.HostIface},
			{"ip", "-n", pn.NetNS, "link", "set", "lo", "up"},
			{"ip", "-n", pn.NetNS, "link", "set", "eth0", "up"},
			{"ip", "-n", pn.NetNS, "addr", "add", ip + "/32", "dev", "eth0"},
			{"ip", "-n", pn.NetNS, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
			// Calico answers for 169.254.1.1 by proxy ARP because real
			// nodes have a default route; this node has none, so the
			// neighbour is pinned.
			{"ip", "-n", pn.NetNS, "neigh", "add", "169.254.1.1", "lladdr", "ee:ee:ee:ee:ee:ee", "dev", "eth0", "nud", "permanent"},
			{"ip", "-n", pn.NetNS, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
		}
		pods = append(pods, pn)
		if err := runSteps(ctx, steps); err != nil {
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
		if err := ipCmd(ctx, "netns", "del", p.NetNS); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := ipCmd(ctx, "netns", "del", node); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete node %s: %s", node, strings.Join(errs, "; "))
	}
	return nil
}

// noIPv6 turns IPv6 off in a namespace before its links exist. The
// simulation is IPv4 only; without this every veth would send neighbour
// discovery and MLD packets, which only clutter the demo's flows.
const noIPv6 = "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"

func podNetNS(node string, i int) string { return fmt.Sprintf("%s-p%d", node, i) }

func runSteps(ctx context.Context, steps [][]string) error {
	for _, s := range steps {
		if err := command(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func ipCmd(ctx context.Context, args ...string) error { return command(ctx, "ip", args...) }

func command(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// DoInNetNS runs fn inside the named network namespace on a locked OS
// thread of a fresh goroutine. Sockets fn opens stay in that namespace
// after the thread switches back, which is how the simulator's servers and
// clients live in pods while the process stays on the host.
func DoInNetNS(name string, fn func() error) error { return netns.Do(NetNSPath(name), fn) }
