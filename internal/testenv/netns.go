package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/netns"
	"github.com/capstream/capstream/schemas"
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

// CalicoInterfaceName is Calico's host-side interface name for a pod; it is
// schemas.InterfaceName, kept for the tests that name it so.
func CalicoInterfaceName(prefix, namespace, pod string) string {
	return schemas.InterfaceName(prefix, namespace, pod)
}

// NetNode builds a node namespace with one Calico-style veth per pod
// (netns.AddNode and netns.AddVeth, IPv4 and IPv6). All namespaces are
// deleted when the test ends. It needs root and iproute2.
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
	ctx := context.Background()
	n := &Node{NetNS: "csn-" + randomHex(4)}
	addNetNS(t, n.NetNS, func() error {
		return netns.AddNode(ctx, netns.Node{Name: n.NetNS, Addr: net.IPv4(10, 64, 0, 1), IPv6: true})
	})
	for i, p := range pods {
		pn := &PodNet{
			Pod:       p,
			NetNS:     fmt.Sprintf("csp-%s-%d", n.NetNS[4:], i),
			HostIface: schemas.InterfaceName("cali", p.Namespace, p.Name),
			IPv4:      net.IPv4(10, 65, byte(i/250), byte(i%250+2)).To4(),
			IPv6:      net.ParseIP(fmt.Sprintf("fd00:65::%x", i+2)),
		}
		addNetNS(t, pn.NetNS, func() error {
			return netns.AddVeth(ctx, netns.Veth{Node: n.NetNS, Pod: pn.NetNS, HostIface: pn.HostIface, IPv4: pn.IPv4, IPv6: pn.IPv6})
		})
		n.Pods = append(n.Pods, pn)
	}
	return n
}

// addNetNS runs add, which creates the namespace name and wires it, and
// fails the test if add fails. If add made the namespace, even with a later
// step failing, it is deleted when the test ends.
func addNetNS(t testing.TB, name string, add func() error) {
	t.Helper()
	_, err := os.Stat(netns.Path(name))
	existed := err == nil
	addErr := add()
	if _, err := os.Stat(netns.Path(name)); err == nil && !existed {
		t.Cleanup(func() { ipNoFail(t, "netns", "del", name) })
	}
	if addErr != nil {
		t.Fatal(addErr)
	}
}

// Do runs fn inside the pod's network namespace, on a locked OS thread.
// Sockets fn opens stay in that namespace after Do returns.
func (p *PodNet) Do(fn func() error) error { return doInNetNS(p.NetNS, fn) }

// Do runs fn inside the node's network namespace (see PodNet.Do).
func (n *Node) Do(fn func() error) error { return doInNetNS(n.NetNS, fn) }

// doInNetNS is internal/netns's: one implementation of the thread-locked
// setns.
func doInNetNS(name string, fn func() error) error { return netns.Do(netns.Path(name), fn) }

// Exec runs a command inside the node's namespace and returns its output.
func (n *Node) Exec(t testing.TB, args ...string) string { return nsExec(t, n.NetNS, args...) }

// Exec runs a command inside the pod's namespace and returns its output.
func (p *PodNet) Exec(t testing.TB, args ...string) string { return nsExec(t, p.NetNS, args...) }

func nsExec(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

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
