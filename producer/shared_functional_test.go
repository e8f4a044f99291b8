package producer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer/filter"
	"github.com/capstream/capstream/schemas"
)

// sharedCapture is one capture of the shared-socket tests: its rules, its
// snap length and what its rules select, for the comparison with tcpdump.
type sharedCapture struct {
	rules []schemas.Filter
	snap  int
	want  func(d decoded) bool
}

// startShared publishes a capture of pod a's interface for each of cs.
func (h *harness) startShared(a *testenv.PodNet, cs map[string]sharedCapture) {
	h.t.Helper()
	for name, c := range cs {
		h.publishCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: name, UID: "uid-" + name,
			Generation: 1, Node: testNode, Filters: c.rules, SnapLength: c.snap, IssuedAt: time.Now(),
			Endpoints: []schemas.Endpoint{{Pod: a.Name, Namespace: a.Namespace, Interface: a.HostIface}}})
	}
}

// checkShared compares what capture name stored in [from, to] with what
// tcpdump saw on the interface: exactly the packets c selects, cut to its
// snap length, with their wire lengths.
func checkShared(t *testing.T, name string, c sharedCapture, dumped, got []record) {
	t.Helper()
	var want, have []string
	for _, r := range dumped {
		if d, ok := decode(t, r.data); (ok || c.rules == nil) && (c.want == nil || ok && c.want(d)) {
			want = append(want, fmt.Sprintf("%d/%x", r.orig, r.data[:min(len(r.data), c.snap)]))
		}
	}
	for _, r := range got {
		have = append(have, fmt.Sprintf("%d/%x", r.orig, r.data))
	}
	if len(want) == 0 {
		t.Fatalf("%s: the traffic has no packet for its rules", name)
	}
	slices.Sort(want)
	slices.Sort(have)
	if len(have) != len(want) {
		// Which side has what the other lacks: a capture storing a
		// packet twice and tcpdump missing one under load look alike
		// by count alone.
		count := map[string]int{}
		for _, h := range have {
			count[h]++
		}
		for _, w := range want {
			count[w]--
		}
		var extra, missing []string
		for k, n := range count {
			k = k[:min(len(k), 120)]
			switch {
			case n > 0 && len(extra) < 5:
				extra = append(extra, fmt.Sprintf("%dx %s", n, k))
			case n < 0 && len(missing) < 5:
				missing = append(missing, fmt.Sprintf("%dx %s", -n, k))
			}
		}
		t.Fatalf("%s: captured %d packets, tcpdump saw %d that its rules select; only captured: %q; only in tcpdump: %q",
			name, len(have), len(want), extra, missing)
	}
	for i := range have {
		if have[i] != want[i] {
			t.Fatalf("%s: packet %d (sorted) differs:\n got %s\nwant %s", name, i, have[i], want[i])
		}
	}
}

// TestSharedInterface: three captures with different filters and snap
// lengths on one interface share one socket and one ring; each stores
// exactly the packets its own rules select, cut to its own snap length
// (one below filter.HeaderBytes, so the shared socket must keep more
// than any capture asks for its user-space filters to see the ports).
// Stopping one leaves the others capturing; stopping the last closes the
// socket and releases the ring.
func TestSharedInterface(t *testing.T) {
	h := newHarness(t, podsABC[:2]...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	cs := map[string]sharedCapture{
		"all": {snap: 100},
		"udp": {rules: []schemas.Filter{{Protocol: "UDP"}}, snap: 200,
			want: func(d decoded) bool { return d.proto == layers.IPProtocolUDP }},
		"icmp-tcp8080": {rules: []schemas.Filter{{Protocol: "ICMP"}, {Protocol: "TCP", Ports: []string{"8080"}}}, snap: 50,
			want: func(d decoded) bool {
				return !d.v6 && d.proto == layers.IPProtocolICMPv4 || d.proto == layers.IPProtocolTCP && (d.sport == 8080 || d.dport == 8080)
			}},
	}
	stopDump := tcpdump(t, h.node, a.HostIface)
	cfg := h.config()
	_, reg, stop := h.start(cfg, Deps{})
	metric := func(name string) float64 { return testenv.Metric(t, reg, "capstream_producer_"+name, nil) }
	ring := float64(cfg.AFPacket.RingBytes)
	h.startShared(a, cs)
	h.warmUp(func() { traffic(t, a, b, 1) }, slices.Collect(maps.Keys(cs))...)
	if got := metric("ring_bytes"); got != ring {
		t.Errorf("three captures of one interface reserve %v ring bytes, want one ring of %v", got, ring)
	}
	if sockets, subs := metric("shared_sockets"), metric("shared_subscribers"); sockets != 1 || subs != 3 {
		t.Errorf("%v shared sockets with %v subscribers, want 1 and 3", sockets, subs)
	}
	from := time.Now()
	traffic(t, a, b, 20)
	to := time.Now()
	time.Sleep(100 * time.Millisecond) // the ring's block timeout, as in TestFilters

	// One capture leaves: the others keep the socket and capture on.
	h.command("icmp-tcp8080", "uid-icmp-tcp8080", schemas.ActionStop, nil)
	h.waitState("icmp-tcp8080", schemas.StateFinished)
	if got, subs := metric("ring_bytes"), metric("shared_subscribers"); got != ring || subs != 2 {
		t.Errorf("after one capture stopped: %v ring bytes, %v subscribers; want %v and 2", got, subs, ring)
	}
	from2 := time.Now()
	traffic(t, a, b, 10)
	to2 := time.Now()
	time.Sleep(100 * time.Millisecond)

	// The last ones leave: socket closed, ring released.
	h.command("all", "uid-all", schemas.ActionStop, nil)
	h.command("udp", "uid-udp", schemas.ActionStop, nil)
	h.waitState("all", schemas.StateFinished)
	h.waitState("udp", schemas.StateFinished)
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, sockets, subs := metric("ring_bytes"), metric("shared_sockets"), metric("shared_subscribers"); got != 0 || sockets != 0 || subs != 0 {
			return fmt.Errorf("after the last capture stopped: %v ring bytes, %v sockets, %v subscribers", got, sockets, subs)
		}
		return nil
	})
	dumped := stopDump()
	all := h.drain()
	stop()
	for name, c := range cs {
		checkShared(t, name+" (3 captures)", c, window(dumped, from, to), window(all[name], from, to))
		for _, hdr := range h.batches[name] {
			if hdr.SnapLength != uint32(c.snap) || hdr.Interface != a.HostIface {
				t.Errorf("%s: batch %d has snap length %d on %s, want %d on %s", name, hdr.Seq, hdr.SnapLength, hdr.Interface, c.snap, a.HostIface)
			}
		}
		h.lastMarks(name, 1) // each capture's own run, marked when it stopped
	}
	for _, name := range []string{"all", "udp"} {
		checkShared(t, name+" (after one left)", cs[name], window(dumped, from2, to2), window(all[name], from2, to2))
	}
	if n := len(window(all["icmp-tcp8080"], from2, to2)); n != 0 {
		t.Errorf("icmp-tcp8080 stored %d packets after it stopped", n)
	}
	if n := metric("shared_unfiltered_sockets"); n != 0 {
		t.Errorf("%v sockets unfiltered, want 0: the union fits a program", n)
	}
}

// TestSharedUnionTooComplex: two captures whose rule sets each fit a
// kernel program but whose union does not share the socket with no kernel
// filter, which the metric shows; each still stores exactly its packets.
func TestSharedUnionTooComplex(t *testing.T) {
	h := newHarness(t, podsABC[:2]...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	// SCTP rules that no traffic matches pad each capture's program to
	// just over half the kernel's limit.
	pad := func(base int) []schemas.Filter {
		var rules []schemas.Filter
		for i := 0; ; i++ {
			ports := make([]string, schemas.MaxPorts)
			for j := range ports {
				p := base + 2*(i*schemas.MaxPorts+j)
				ports[j] = fmt.Sprintf("%d:%d", p, p+1)
			}
			rules = append(rules, schemas.Filter{Protocol: "SCTP", Ports: ports})
			if prog, err := filter.Compile(rules, 1000); err != nil || len(prog) > filter.MaxInstructions*6/10 {
				return rules[:len(rules)-1]
			}
		}
	}
	cs := map[string]sharedCapture{
		"udp53": {rules: append(pad(10000), schemas.Filter{Protocol: "UDP", Ports: []string{"53"}}), snap: 1000,
			want: func(d decoded) bool { return d.proto == layers.IPProtocolUDP && (d.sport == 53 || d.dport == 53) }},
		"tcp80": {rules: append(pad(30000), schemas.Filter{Protocol: "TCP", Ports: []string{"80"}}), snap: 1000,
			want: func(d decoded) bool { return d.proto == layers.IPProtocolTCP && (d.sport == 80 || d.dport == 80) }},
	}
	var union []schemas.Filter
	for _, c := range cs {
		if _, err := filter.Compile(c.rules, 1000); err != nil {
			t.Fatalf("one capture's rules alone: %v", err)
		}
		union = append(union, c.rules...)
	}
	if _, err := filter.Compile(union, 1000); !errors.Is(err, filter.ErrTooComplex) {
		t.Fatalf("the union compiles (%v): the test needs one that does not", err)
	}
	stopDump := tcpdump(t, h.node, a.HostIface)
	_, reg, stop := h.start(h.config(), Deps{})
	h.startShared(a, cs)
	h.warmUp(func() { traffic(t, a, b, 1) }, slices.Collect(maps.Keys(cs))...)
	if n := testenv.Metric(t, reg, "capstream_producer_shared_unfiltered_sockets", nil); n != 1 {
		t.Errorf("%v sockets unfiltered, want 1", n)
	}
	from := time.Now()
	traffic(t, a, b, 20)
	to := time.Now()
	time.Sleep(100 * time.Millisecond)
	stop()
	dumped := stopDump()
	all := h.drain()
	for name, c := range cs {
		checkShared(t, name, c, window(dumped, from, to), window(all[name], from, to))
	}
}
