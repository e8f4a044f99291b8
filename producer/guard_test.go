package producer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// TestRefusesForeignEndpoints: a command that names an interface outside
// the prefix (the node's eth0) or a pod of another namespace is refused,
// whoever sent it: the capture reports Error saying why, the refusal is
// counted, and not one packet is published, while a proper command on the
// same producer captures.
func TestRefusesForeignEndpoints(t *testing.T) {
	h := newHarness(t)
	path := t.TempDir() + "/in.pcap"
	genPcap(t, path, 200, 10*time.Microsecond)
	cfg := h.config()
	cfg.Source = SourceFile
	cfg.File.Files = map[string]string{"eth0": path, "cali1234567890a": path}
	_, reg, _ := h.start(cfg, Deps{})
	capture := func(name string, ep schemas.Endpoint) {
		h.publishCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: name, UID: "uid-" + name,
			Node: testNode, IssuedAt: time.Now(), Endpoints: []schemas.Endpoint{ep}})
	}
	capture("host-iface", schemas.Endpoint{Pod: "p", Namespace: "default", Interface: "eth0"})
	capture("other-ns", schemas.Endpoint{Pod: "p", Namespace: "kube-system", Interface: "cali1234567890a"})
	capture("good", schemas.Endpoint{Pod: "p", Namespace: "default", Interface: "cali1234567890a"})
	for name, why := range map[string]string{"host-iface": `interface "eth0" does not start with "cali"`, "other-ns": "outside the capture's namespace default"} {
		st := h.waitState(name, schemas.StateError)
		if !strings.Contains(st.LastError, why) || st.Packets != 0 {
			t.Errorf("%s: status %+v, want an error saying %q and no packets", name, st, why)
		}
	}
	h.waitState("good", schemas.StateFinished)
	got := h.drain()
	if len(got["host-iface"]) != 0 || len(got["other-ns"]) != 0 || len(got["good"]) != 200 {
		t.Errorf("published: host-iface %d, other-ns %d, good %d packets; want 0, 0, 200", len(got["host-iface"]), len(got["other-ns"]), len(got["good"]))
	}
	if n := testenv.Metric(t, reg, "capstream_producer_commands_total", map[string]string{"result": "refused"}); n != 2 {
		t.Errorf("refused commands counted %v, want 2", n)
	}
}

// TestRingBudget: with room for one ring on the node, a second capture's
// interface waits and its status says why, without packets, until the
// first capture stops and its ring is released; then it captures.
func TestRingBudget(t *testing.T) {
	h := newHarness(t, podsABC...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	cfg := h.config()
	cfg.MaxRingBytes = int64(cfg.AFPacket.RingBytes) // one ring
	_, reg, _ := h.start(cfg, Deps{})
	h.command("first", "uid-first", schemas.ActionCapture, nil, a)
	h.waitState("first", schemas.StateWaitingForTraffic)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := testenv.Metric(t, reg, "capstream_producer_ring_bytes", nil); n != float64(cfg.AFPacket.RingBytes) {
			return fmt.Errorf("ring bytes in use %v", n)
		}
		return nil
	})
	h.command("second", "uid-second", schemas.ActionCapture, nil, b)
	testenv.Eventually(t, 10*time.Second, func() error {
		st := h.lastStatus("second")
		if st == nil || st.State != schemas.StateWaitingForTraffic || !strings.Contains(st.LastError, "ring budget full") {
			return fmt.Errorf("second: %+v", st)
		}
		return nil
	})
	traffic(t, a, b, 3)
	if st := h.lastStatus("second"); st.Packets != 0 {
		t.Errorf("second captured %d packets without a ring", st.Packets)
	}
	h.command("first", "uid-first", schemas.ActionStop, nil)
	h.waitState("first", schemas.StateFinished)
	testenv.Eventually(t, 15*time.Second, func() error {
		traffic(t, a, b, 1)
		if st := h.lastStatus("second"); st == nil || st.State != schemas.StateCapturing || st.Packets == 0 {
			return fmt.Errorf("second after the first stopped: %+v", st)
		}
		return nil
	})
	if n := testenv.Metric(t, reg, "capstream_producer_ring_budget_waits_total", nil); n == 0 {
		t.Error("no ring budget wait counted")
	}
}
