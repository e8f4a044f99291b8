package producer

import (
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
