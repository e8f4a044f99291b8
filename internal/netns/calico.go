package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
)

// Dir is where iproute2 mounts named network namespaces.
const Dir = "/var/run/netns/"

// Path is the path of a named network namespace, as Do and the producer's
// afpacket.Config.NetNS want it.
func Path(name string) string { return Dir + name }

// Node describes a network namespace standing in for a Kubernetes node.
// The demo's simulated node (internal/netsim) and the test harness
// (internal/testenv) both build theirs with AddNode and AddVeth, so the
// wiring producers capture on in tests is the demo's.
type Node struct {
	// Name is the namespace's name (under Dir).
	Name string
	// Addr is an IPv4 address put on the node's loopback: it gives the
	// ARP requests the node sends to its pods a source.
	Addr net.IP
	// IPv6 makes the node forward IPv6 and skip duplicate address
	// detection, so addresses are usable at once. Without it IPv6 is off in
	// the node: every veth would otherwise send neighbour discovery and MLD
	// packets.
	IPv6 bool
}

// Veth is one pod's network namespace wired to its node the way Calico
// wires workloads.
type Veth struct {
	// Node is the node's namespace name, made by AddNode.
	Node string
	// Pod is the pod's namespace name; AddVeth creates it.
	Pod string
	// HostIface is the node-side veth, named as Calico names it
	// (schemas.InterfaceName).
	HostIface string
	// IPv4 is the pod's address.
	IPv4 net.IP
	// IPv6 is the pod's IPv6 address; nil turns IPv6 off in the pod.
	IPv6 net.IP
}

// calicoMAC is the MAC Calico gives every host-side veth.
const calicoMAC = "ee:ee:ee:ee:ee:ee"

// noIPv6 turns IPv6 off in a namespace before its links exist.
const noIPv6 = "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"

// AddNode creates the node's namespace and makes it forward like a node,
// without touching the host's own settings. It needs root and iproute2.
func AddNode(ctx context.Context, n Node) error {
	sysctl := "echo 1 > /proc/sys/net/ipv4/ip_forward && " + noIPv6
	if n.IPv6 {
		sysctl = "echo 1 > /proc/sys/net/ipv4/ip_forward && " +
			"echo 1 > /proc/sys/net/ipv6/conf/all/forwarding && " +
			"echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"
	}
	return run(ctx, [][]string{
		{"netns", "add", n.Name},
		{"netns", "exec", n.Name, "sh", "-c", sysctl},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "addr", "add", n.Addr.String() + "/32", "dev", "lo"},
	})
}

// AddVeth creates the pod's namespace and its veth: on the node, the host
// side with Calico's MAC, proxy ARP and a /32 (and /128) route to the pod;
// in the pod, eth0 with a /32 (and /128) address and a default route via
// 169.254.1.1. On error the pod's namespace may be left for the caller to
// Delete.
func AddVeth(ctx context.Context, v Veth) error {
	node, pod, host, ip4 := v.Node, v.Pod, v.HostIface, v.IPv4.String()
	podSysctl := noIPv6
	if v.IPv6 != nil {
		podSysctl = "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"
	}
	steps := [][]string{
		{"netns", "add", pod},
		{"netns", "exec", pod, "sh", "-c", podSysctl},
		{"-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod},
		{"-n", node, "link", "set", host, "address", calicoMAC, "up"},
		{"netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/" + host + "/proxy_arp"},
		{"-n", node, "route", "add", ip4 + "/32", "dev", host},
	}
	if v.IPv6 != nil {
		steps = append(steps, []string{"-n", node, "-6", "route", "add", v.IPv6.String() + "/128", "dev", host})
	}
	steps = append(steps,
		[]string{"-n", pod, "link", "set", "lo", "up"},
		[]string{"-n", pod, "link", "set", "eth0", "up"},
		[]string{"-n", pod, "addr", "add", ip4 + "/32", "dev", "eth0"},
	)
	if v.IPv6 != nil {
		steps = append(steps, []string{"-n", pod, "-6", "addr", "add", v.IPv6.String() + "/128", "dev", "eth0", "nodad"})
	}
	steps = append(steps,
		[]string{"-n", pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		// Calico answers for 169.254.1.1 by proxy ARP because real nodes
		// have a default route; these nodes have none, so the neighbour is
		// pinned.
		[]string{"-n", pod, "neigh", "add", "169.254.1.1", "lladdr", calicoMAC, "dev", "eth0", "nud", "permanent"},
		[]string{"-n", pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	)
	if v.IPv6 != nil {
		// The host side's link-local address comes from its fixed MAC.
		steps = append(steps, []string{"-n", pod, "-6", "route", "add", "default", "via", "fe80::ecee:eeff:feee:eeee", "dev", "eth0"})
	}
	return run(ctx, steps)
}

// Delete removes a named network namespace; the veths in it go with it.
func Delete(ctx context.Context, name string) error {
	return run(ctx, [][]string{{"netns", "del", name}})
}

// run runs each `ip` command in turn and stops at the first failure.
func run(ctx context.Context, steps [][]string) error {
	for _, args := range steps {
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}
