package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/netsim"
)

// Pod describes a pod to wire into a Node.
type Pod struct {
	Namespace string
	Name      string
}

// PodNet is a pod's network namespace, wired to its node the way Calico
// wires workloads: a veth whose host side is cali<hash> with MAC
// ee:ee:ee:ee:ee:ee and proxy ARP, a /32 (and /128) route to the pod on the
// node, and a default route in the pod via 169.254.1.1.
type PodNet struct {
	Pod
	// NetNS is the pod's network namespace name (under /var/run/netns).
	NetNS string
	// HostIface is the node-side veth, as Calico names it.
	HostIface string
	IPv4      net.IP
	IPv6      net.IP
}

// Node is a network namespace standing in for a Kubernetes node.
type Node struct {
	NetNS string
	Pods  []*PodNet
}

var netnsProbe probe

// CalicoInterfaceName is Calico's host-side interface name for a pod:
// prefix plus the first 11 hex digits of sha1("<namespace>.<pod>").
func CalicoInterfaceName(prefix, namespace, pod string) string {
	return netsim.InterfaceName(prefix, namespace, pod)
}

// NetNode builds a node namespace with one Calico-style veth per pod. All
// namespaces are deleted when the test ends. It needs root and iproute2.
func NetNode(t testing.TB, pods ...Pod) *Node {
	t.Helper()
	skipShort(t, "network namespaces")
	if err := netnsProbe.check(func() error {
		if os.Geteuid() != 0 {
			return fmt.Errorf("network namespaces need root (euid %d)", os.Geteuid())
		}
		_, err := exec.LookPath("ip")
		return err
	}); err != nil {
		unavailable(t, "network namespaces", err)
	}
	n := &Node{NetNS: "csn-" + randomHex(4)}
	ip(t, "netns", "add", n.NetNS)
	t.Cleanup(func() { ipNoFail(t, "netns", "del", n.NetNS) })
	// Forward like a node; skip duplicate address detection so addresses
	// are usable at once.
	nsExec(t, n.NetNS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && "+
		"echo 1 > /proc/sys/net/ipv6/conf/all/forwarding && "+
		"echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad")
	ip(t, "-n", n.NetNS, "link", "set", "lo", "up")
	// A node address gives ARP requests the node sends to pods a source.
	ip(t, "-n", n.NetNS, "addr", "add", "10.64.0.1/32", "dev", "lo")
	for i, p := range pods {
		pn := &PodNet{
			Pod:       p,
			NetNS:     fmt.Sprintf("csp-%s-%d", n.NetNS[4:], i),
			HostIface: CalicoInterfaceName("cali", p.Namespace, p.Name),
			IPv4:      net.IPv4(10, 65, byte(i/250), byte(i%250+2)).To4(),
			IPv6:      net.ParseIP(fmt.Sprintf("fd00:65::%x", i+2)),
		}
		ip(t, "netns", "add", pn.NetNS)
		t.Cleanup(func() { ipNoFail(t, "netns", "del", pn.NetNS) })
		nsExec(t, pn.NetNS, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad")
		ip(t, "-n", n.NetNS, "link", "add", pn.HostIface, "type", "veth", "peer", "name", "eth0", "netns", pn.NetNS)
		ip(t, "-n", n.NetNS, "link", "set", pn.HostIface, "address", "ee:ee:ee:ee:ee:ee", "up")
		nsExec(t, n.NetNS, "sh", "-c", fmt.Sprintf("echo 1 > /proc/sys/net/ipv4/conf/%s/proxy_arp", pn.HostIface))
		ip(t, "-n", n.NetNS, "route", "add", pn.IPv4.String()+"/32", "dev", pn.HostIface)
		ip(t, "-n", n.NetNS, "-6", "route", "add", pn.IPv6.String()+"/128", "dev", pn.HostIface)
		ip(t, "-n", pn.NetNS, "link", "set", "lo", "up")
		ip(t, "-n", pn.NetNS, "link", "set", "eth0", "up")
		ip(t, "-n", pn.NetNS, "addr", "add", pn.IPv4.String()+"/32", "dev", "eth0")
		ip(t, "-n", pn.NetNS, "-6", "addr", "add", pn.IPv6.String()+"/128", "dev", "eth0", "nodad")
		ip(t, "-n", pn.NetNS, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		// Calico answers for 169.254.1.1 by proxy ARP because its nodes
		// have a default route; this node has none, so pin the neighbour.
		ip(t, "-n", pn.NetNS, "neigh", "add", "169.254.1.1", "lladdr", "ee:ee:ee:ee:ee:ee", "dev", "eth0", "nud", "permanent")
		ip(t, "-n", pn.NetNS, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		// The cali side's link-local address comes from its fixed MAC.
		ip(t, "-n", pn.NetNS, "-6", "route", "add", "default", "via", "fe80::ecee:eeff:feee:eeee", "dev", "eth0")
		n.Pods = append(n.Pods, pn)
	}
	return n
}

// Do runs fn inside the pod's network namespace, on a locked OS thread.
// Sockets fn opens stay in that namespace after Do returns.
func (p *PodNet) Do(fn func() error) error { return doInNetNS(p.NetNS, fn) }

// Do runs fn inside the node's network namespace (see PodNet.Do).
func (n *Node) Do(fn func() error) error { return doInNetNS(n.NetNS, fn) }

// doInNetNS is netsim's: one implementation of the thread-locked setns.
func doInNetNS(name string, fn func() error) error { return netsim.DoInNetNS(name, fn) }

// Exec runs a command inside the node's namespace and returns its output.
func (n *Node) Exec(t testing.TB, args ...string) string { return nsExec(t, n.NetNS, args...) }

// Exec runs a command inside the pod's namespace and returns its output.
func (p *PodNet) Exec(t testing.TB, args ...string) string { return nsExec(t, p.NetNS, args...) }

func nsExec(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

func ip(t testing.TB, args ...string) { t.Helper(); run(t, "ip", args...) }

func ipNoFail(t testing.TB, args ...string) {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Logf("cleanup: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}
