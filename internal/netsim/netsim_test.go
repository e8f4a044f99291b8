package netsim_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/netsim"
	"github.com/capstream/capstream/internal/testenv"
)

func TestConfigValidate(t *testing.T) {
	if err := netsim.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := map[string]func(*netsim.Config){
		"bad node":       func(c *netsim.Config) { c.Node = "Bad_Node" },
		"long netns":     func(c *netsim.Config) { c.NetNS = strings.Repeat("n", 41) },
		"bad namespace":  func(c *netsim.Config) { c.Namespace = "a.b" },
		"long prefix":    func(c *netsim.Config) { c.InterfacePrefix = "calico" },
		"fast interval":  func(c *netsim.Config) { c.Interval = time.Millisecond },
		"one pod":        func(c *netsim.Config) { c.Pods = c.Pods[:1] },
		"duplicate pods": func(c *netsim.Config) { c.Pods[1].Name = c.Pods[0].Name },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := netsim.DefaultConfig()
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Error("Validate accepted it")
			}
		})
	}
}

// TestSimulatorTraffic runs a node with pods registered in the real
// kube-apiserver, checks that every exchange succeeds, and that stopping
// removes namespaces and pods.
func TestSimulatorTraffic(t *testing.T) {
	testenv.RequireRoot(t)
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	cfg := netsim.DefaultConfig()
	cfg.Namespace = ns
	cfg.NetNS = "csim-" + ns[len(ns)-6:]
	cfg.Interval = 200 * time.Millisecond
	sim, err := netsim.New(cfg, netsim.Deps{Logger: testenv.Logger(t), Kube: k.Client})
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.Start(t, "netsim", sim.Run)
	testenv.Eventually(t, 30*time.Second, func() error {
		if st := sim.Stats(); st.OK < 12 {
			return fmt.Errorf("stats %+v (ready: %v)", st, sim.Ready())
		}
		return nil
	})
	if st := sim.Stats(); st.Failed != 0 {
		t.Errorf("failed exchanges: %+v", st)
	}
	pods, err := k.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "k8s-app=sample-app"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Errorf("sample-app pods = %d, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != cfg.Node || p.Status.Phase != "Running" || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %q ip %q", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
		}
	}
	// The server pod's veth carries the traffic, seen from the node.
	web := sim.Pods()[0]
	out, err := exec.Command("ip", "-n", cfg.NetNS, "-s", "link", "show", web.HostIface).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s: %v: %s", web.HostIface, err, out)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(netsim.NetNSPath(cfg.NetNS)); !os.IsNotExist(err) {
		t.Errorf("node netns still present after Run: %v", err)
	}
	left, err := k.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 0 {
		t.Errorf("%d pods left after Run", len(left.Items))
	}
}
