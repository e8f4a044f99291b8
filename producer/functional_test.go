package producer

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// TestCaptureMatchesTcpdump: the packets in JetStream equal, byte for
// byte, what tcpdump captured on the same interface in the same window,
// and traffic of other pods is absent.
func TestCaptureMatchesTcpdump(t *testing.T) {
	h := newHarness(t, podsABC...)
	a, b, c := h.node.Pods[0], h.node.Pods[1], h.node.Pods[2]
	stopDump := tcpdump(t, h.node, a.HostIface)
	_, _, stop := h.start(h.config(), Deps{})
	h.command("all", "uid-all", schemas.ActionCapture, nil, a)
	// Warm up until the producer has seen a packet, so its socket is
	// open before the compared window starts.
	h.warmUp(func() { ping(t, a, b.IPv4, 1) }, "all")
	from := time.Now()
	traffic(t, a, b, 50)
	traffic(t, b, c, 20) // not on a's interface
	to := time.Now()
	// The kernel hands a partly filled ring block over after the block
	// timeout (50ms here) and nothing outside the sockets shows when both
	// have read the window's last packet: wait out a few timeouts.
	time.Sleep(200 * time.Millisecond)
	all := stopDump()
	t.Logf("tcpdump: %d packets in all", len(all))
	dumped := window(all, from, to)
	stop()
	got := window(h.drain()["all"], from, to)
	if len(dumped) < 300 {
		t.Fatalf("tcpdump saw only %d packets", len(dumped))
	}
	if len(got) != len(dumped) {
		t.Fatalf("producer captured %d packets in the window, tcpdump %d", len(got), len(dumped))
	}
	// Each socket stamps the packet itself, microseconds apart, and two
	// packets microseconds apart (one sent, one received) can reach the two
	// sockets in either order: match each packet to an identical one close
	// by in the other list instead of index by index.
	used := make([]bool, len(dumped))
	for i := range got {
		match := -1
		for j := max(0, i-16); j < min(len(dumped), i+17); j++ {
			if !used[j] && got[i].data == dumped[j].data && got[i].orig == dumped[j].orig && got[i].ts.Sub(dumped[j].ts).Abs() <= time.Millisecond {
				match = j
				break
			}
		}
		if match < 0 {
			t.Fatalf("packet %d (%v, %d bytes) has no identical packet in tcpdump's capture near index %d (tcpdump there: %v/%d bytes)",
				i, got[i].ts, len(got[i].data), i, dumped[i].ts, len(dumped[i].data))
		}
		used[match] = true
	}
	isBC := func(ip net.IP) bool {
		return ip.Equal(b.IPv4) || ip.Equal(b.IPv6) || ip.Equal(c.IPv4) || ip.Equal(c.IPv6)
	}
	fromA := 0
	for _, r := range got {
		d, ok := decode(t, r.data)
		if ok && isBC(d.src) && isBC(d.dst) {
			t.Fatalf("packet %v -> %v between pods b and c captured on a's interface", d.src, d.dst)
		}
		if ok && (d.src.Equal(a.IPv4) || d.src.Equal(a.IPv6)) {
			fromA++
		}
	}
	if fromA < 300 {
		t.Errorf("only %d packets from pod a", fromA)
	}
	st := h.lastStatus("all")
	t.Logf("compared %d packets; status %+v", len(got), st)
	if st.KernelDrops != 0 || st.PublishDrops != 0 {
		t.Errorf("drops: kernel %d publish %d", st.KernelDrops, st.PublishDrops)
	}
}

// TestFilters runs one capture per rule set on the same interface, next
// to an unfiltered one, and checks that each captured exactly the packets
// of the unfiltered capture that its rules select.
func TestFilters(t *testing.T) {
	h := newHarness(t, podsABC[:2]...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	hasPort := func(d decoded, lo, hi uint16) bool {
		return (d.sport >= lo && d.sport <= hi) || (d.dport >= lo && d.dport <= hi)
	}
	cases := map[string]struct {
		rules []schemas.Filter
		want  func(d decoded) bool
		v6    bool // some IPv6 packet must match
	}{
		"tcp80": {rules: []schemas.Filter{{Protocol: "TCP", Ports: []string{"80"}}},
			want: func(d decoded) bool { return d.proto == layers.IPProtocolTCP && hasPort(d, 80, 80) }},
		"udp-range": {rules: []schemas.Filter{{Protocol: "UDP", Ports: []string{"1000:6000"}}},
			want: func(d decoded) bool { return d.proto == layers.IPProtocolUDP && hasPort(d, 1000, 6000) }},
		"udp": {rules: []schemas.Filter{{Protocol: "UDP"}}, v6: true,
			want: func(d decoded) bool { return d.proto == layers.IPProtocolUDP }},
		"icmp": {rules: []schemas.Filter{{Protocol: "ICMP"}},
			want: func(d decoded) bool { return !d.v6 && d.proto == layers.IPProtocolICMPv4 }},
		"icmpv6": {rules: []schemas.Filter{{Protocol: "ICMPv6"}}, v6: true,
			want: func(d decoded) bool { return d.v6 && d.proto == layers.IPProtocolICMPv6 }},
		"port53-any": {rules: []schemas.Filter{{Ports: []string{"53"}}}, v6: true,
			want: func(d decoded) bool {
				return (d.proto == layers.IPProtocolUDP || d.proto == layers.IPProtocolTCP) && hasPort(d, 53, 53)
			}},
		"or": {rules: []schemas.Filter{{Protocol: "TCP", Ports: []string{"8080"}}, {Protocol: "1"}},
			want: func(d decoded) bool {
				return (d.proto == layers.IPProtocolTCP && hasPort(d, 8080, 8080)) || (!d.v6 && d.proto == layers.IPProtocolICMPv4)
			}},
	}
	_, _, stop := h.start(h.config(), Deps{})
	h.command("ref", "uid-ref", schemas.ActionCapture, nil, a)
	for name, c := range cases {
		h.command(name, "uid-"+name, schemas.ActionCapture, c.rules, a)
	}
	h.warmUp(func() { ping(t, a, b.IPv4, 1) }, "ref", "icmp", "or")
	from := time.Now()
	traffic(t, a, b, 20)
	to := time.Now()
	// As in TestCaptureMatchesTcpdump: wait out the ring's block timeout
	// before stopping, so the window's last packets have been read.
	time.Sleep(100 * time.Millisecond)
	stop()
	all := h.drain()
	ref := window(all["ref"], from, to)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var want []string
			sawV6 := false
			for _, r := range ref {
				if d, ok := decode(t, r.data); ok && c.want(d) {
					want = append(want, r.data)
					sawV6 = sawV6 || d.v6
				}
			}
			var got []string
			for _, r := range window(all[name], from, to) {
				got = append(got, r.data)
			}
			if len(want) == 0 || (c.v6 && !sawV6) {
				t.Fatalf("traffic has no packet for this rule (v6 %v)", sawV6)
			}
			if len(got) != len(want) {
				t.Fatalf("captured %d packets, want %d", len(got), len(want))
			}
			// Two sockets may see packets microseconds apart in either
			// order, so compare the packets as multisets.
			slices.Sort(got)
			slices.Sort(want)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("packet %d (sorted) differs: %d bytes, want %d", i, len(got[i]), len(want[i]))
				}
			}
		})
	}
}

// TestFilterRefused: a rule set the compiler cannot express is an error
// in status, and nothing is captured.
func TestFilterRefused(t *testing.T) {
	h := newHarness(t, podsABC[:1]...)
	a := h.node.Pods[0]
	h.start(h.config(), Deps{})
	ports := make([]string, schemas.MaxPorts)
	for i := range ports {
		ports[i] = fmt.Sprintf("%d:%d", 1000+2*i, 1001+2*i)
	}
	var rules []schemas.Filter
	for range schemas.MaxFilters {
		rules = append(rules, schemas.Filter{Protocol: "TCP", Ports: ports})
	}
	h.command("huge", "uid-huge", schemas.ActionCapture, rules, a)
	st := h.waitState("huge", schemas.StateError)
	if !strings.Contains(st.LastError, "too complex") {
		t.Errorf("last error %q", st.LastError)
	}
}

// TestLifecycle: interface appearing late, update of the interface list,
// stop, and a producer restart that rebuilds its state from the stream.
func TestLifecycle(t *testing.T) {
	h := newHarness(t, podsABC...)
	a, b, c := h.node.Pods[0], h.node.Pods[1], h.node.Pods[2]
	cfg := h.config()
	_, reg, stop := h.start(cfg, Deps{})

	// An interface that does not exist yet: waiting.
	ghost := &testenv.PodNet{Pod: testenv.Pod{Namespace: "default", Name: "ghost"}, HostIface: "caliGhost"}
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, ghost)
	h.waitState("cap", schemas.StateWaitingForTraffic)

	// Update to pod a's interface: capturing a.
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, a)
	h.warmUp(func() { ping(t, a, b.IPv4, 1) }, "cap")
	// Update to pod b's interface only.
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, b)
	testenv.Eventually(t, 10*time.Second, func() error {
		open := testenv.Metric(t, reg, "capstream_producer_interfaces", map[string]string{"state": "open"}) +
			testenv.Metric(t, reg, "capstream_producer_interfaces", map[string]string{"state": "capturing"})
		if s := h.lastStatus("cap"); s == nil || !slices.Equal(s.Interfaces, []string{b.HostIface}) || open != 1 {
			return fmt.Errorf("update to b not applied: status %+v, %v interfaces open", s, open)
		}
		return nil
	})
	// a's read loop notices its cancel at its next poll timeout (100ms)
	// and nothing outside it shows when it has closed its socket.
	time.Sleep(300 * time.Millisecond)
	h.drain()
	ping(t, a, a.IPv4, 1) // a to itself: never leaves a's namespace
	ping(t, b, b.IPv4, 1)
	ping(t, a, h.node.Pods[1].IPv4, 2)
	// Each fetch waits half a second for batches, longer than the ring's
	// block timeout and the batch delay together, so a batch of a's
	// interface would have come with b's.
	ifaces := map[string]int{}
	testenv.Eventually(t, 10*time.Second, func() error {
		msgs, err := h.cons.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return err
		}
		for msg := range msgs.Messages() {
			hdr, err := schemas.DecodeBatchHeader(msg.Headers())
			if err != nil {
				t.Fatal(err)
			}
			ifaces[hdr.Interface] += int(hdr.Packets)
			_ = msg.Ack()
		}
		// The 2 echo requests from a to b and their replies cross b's
		// interface.
		if ifaces[b.HostIface] < 4 {
			return fmt.Errorf("packets by interface %v, want 4 on %s", ifaces, b.HostIface)
		}
		return nil
	})
	if ifaces[a.HostIface] != 0 {
		t.Fatalf("after update to b: packets by interface %v", ifaces)
	}

	// Restart: the new producer rebuilds the capture from the stream.
	stop()
	h.drain()
	_, _, stop2 := h.start(cfg, Deps{})
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		got := h.drain()["cap"]
		if len(got) == 0 {
			return errors.New("nothing captured after restart")
		}
		return nil
	})

	// The pod goes: its interface vanishes and the capture waits.
	h.node.Exec(t, "ip", "link", "del", b.HostIface)
	h.waitState("cap", schemas.StateWaitingForTraffic)

	// Back to a, then stop: Finished, and nothing more is published.
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, a)
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, c.IPv4, 1)
		if len(h.drain()["cap"]) == 0 {
			return errors.New("nothing captured on a")
		}
		return nil
	})
	h.command("cap", "uid-cap", schemas.ActionStop, nil)
	h.waitState("cap", schemas.StateFinished)
	h.drain()
	ping(t, a, c.IPv4, 3)
	testenv.Consistently(t, 600*time.Millisecond, func() error {
		if got := h.drain()["cap"]; len(got) != 0 {
			return fmt.Errorf("%d packets captured after stop", len(got))
		}
		return nil
	})
	stop2()
}

// TestJetStreamOutage: with the server down the producer keeps capturing,
// drops and counts; when the server is back it publishes again.
func TestJetStreamOutage(t *testing.T) {
	h := newHarness(t, podsABC[:2]...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	p, reg, _ := h.start(h.config(), Deps{})
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, a)
	h.waitState("cap", schemas.StateWaitingForTraffic)
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		if len(h.drain()["cap"]) == 0 {
			return errors.New("nothing captured yet")
		}
		return nil
	})

	h.srv.Stop()
	traffic(t, a, b, 20)
	drops := func() float64 { return testenv.Metric(t, reg, "capstream_producer_publish_drops_total", nil) }
	testenv.Eventually(t, 10*time.Second, func() error {
		if drops() == 0 {
			return errors.New("no publish drops counted")
		}
		return nil
	})
	if p.Ready() == nil {
		t.Error("ready while NATS is down")
	}
	t.Logf("publish drops during outage: %v packets", drops())

	if err := h.srv.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, p.Ready)
	testenv.Eventually(t, 15*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		if len(h.drain()["cap"]) == 0 {
			return errors.New("nothing published after the server came back")
		}
		return nil
	})
	st := h.waitState("cap", schemas.StateCapturing)
	testenv.Eventually(t, 5*time.Second, func() error {
		if st = h.lastStatus("cap"); st.PublishDrops == 0 {
			return fmt.Errorf("status shows no publish drops: %+v", st)
		}
		return nil
	})
	t.Logf("status after outage: %+v", st)
}

// TestReplayEndToEnd: a replayed file arrives in JetStream record for
// record, and the capture ends Finished.
func TestReplayEndToEnd(t *testing.T) {
	h := newHarness(t)
	path := t.TempDir() + "/in.pcap"
	genPcap(t, path, 5000, 10*time.Microsecond)
	cfg := h.config()
	cfg.Source, cfg.InterfacePrefix = SourceFile, "replay"
	cfg.File.Files = map[string]string{"replay0": path}
	cfg.BatchBytes = 64 << 10
	h.start(cfg, Deps{})
	h.publishCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: "replay", UID: "uid-replay",
		Node: testNode, IssuedAt: time.Now(), Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "default", Interface: "replay0"}}})
	st := h.waitState("replay", schemas.StateFinished)
	var got []record
	testenv.Eventually(t, 10*time.Second, func() error {
		got = append(got, h.drain()["replay"]...)
		if len(got) < 5000 {
			return fmt.Errorf("%d records so far", len(got))
		}
		return nil
	})
	recs, err := testenv.ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < len(got) {
		t.Fatalf("%d records published, the file has %d", len(got), len(recs))
	}
	for i := range got {
		want := record{ts: recs[i].Info.Timestamp.UTC(), data: string(recs[i].Data), orig: uint32(recs[i].Info.Length)}
		if got[i] != want {
			t.Fatalf("record %d differs", i)
		}
	}
	if st.Packets != 5000 || st.PublishDrops != 0 {
		t.Errorf("status %+v", st)
	}
	h.lastMarks("replay", 1) // the replay's end
}

// TestScheduleAndShutdownFlush: a start time ahead is Scheduled, then the
// capture runs; an end time finishes it. A producer stopped with an open
// batch publishes it (a batch delay far longer than the test).
func TestScheduleAndShutdownFlush(t *testing.T) {
	h := newHarness(t)
	path := t.TempDir() + "/in.pcap"
	genPcap(t, path, 4, 50*time.Millisecond) // replayed in a slow loop
	cfg := h.config()
	cfg.Source, cfg.InterfacePrefix = SourceFile, "replay"
	cfg.File = fileConfig(map[string]string{"replay0": path}, true, true)
	cfg.BatchDelay = time.Hour
	cfg.BatchBytes = schemas.DefaultBatchBytes
	_, _, stop := h.start(cfg, Deps{})

	startAt := time.Now().Add(time.Second)
	endAt := startAt.Add(time.Second)
	cmd := &schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: "sched", UID: "uid-sched",
		Node: testNode, IssuedAt: time.Now(), StartTime: &startAt, EndTime: &endAt,
		Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "default", Interface: "replay0"}}}
	h.publishCommand(cmd)
	h.waitState("sched", schemas.StateScheduled)
	h.waitState("sched", schemas.StateCapturing)
	st := h.waitState("sched", schemas.StateFinished)
	if d := time.Since(endAt); d < 0 {
		t.Errorf("finished %v before the end time", -d)
	}
	got := len(h.drain()["sched"])
	if got == 0 || uint64(got) != st.Packets {
		t.Errorf("stream has %d packets, status says %d", got, st.Packets)
	}

	// A new capture, open batch, then shutdown.
	cmd = &schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: "flush", UID: "uid-flush",
		Node: testNode, IssuedAt: time.Now(), Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "default", Interface: "replay0"}}}
	h.publishCommand(cmd)
	h.waitState("flush", schemas.StateCapturing)
	testenv.Consistently(t, 300*time.Millisecond, func() error {
		if n := len(h.drain()["flush"]); n != 0 {
			return fmt.Errorf("%d packets published before shutdown; the batch delay should hold them", n)
		}
		return nil
	})
	stop()
	got = len(h.drain()["flush"])
	if got == 0 {
		t.Fatal("shutdown published nothing: the open batch was not flushed")
	}
	h.lastMarks("sched", 1) // the end time
	h.lastMarks("flush", 1) // the shutdown
	// The final report is published at shutdown but reaches the test's
	// subscription asynchronously.
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := h.lastStatus("flush"); st == nil || uint64(got) != st.Packets || st.PublishDrops != 0 {
			return fmt.Errorf("after shutdown: stream has %d packets, final status %+v", got, st)
		}
		return nil
	})
}

// TestKernelDropsCounted: with a ring far too small for a UDP blast the
// kernel drops, and every packet sent is either captured or counted as a
// kernel drop.
func TestKernelDropsCounted(t *testing.T) {
	h := newHarness(t, podsABC[:2]...)
	a, b := h.node.Pods[0], h.node.Pods[1]
	cfg := h.config()
	cfg.AFPacket.RingBytes = 128 << 10
	cfg.AFPacket.BlockBytes = 64 << 10
	_, reg, stop := h.start(cfg, Deps{})
	h.command("cap", "uid-cap", schemas.ActionCapture, []schemas.Filter{{Protocol: "UDP", Ports: []string{"9999:10010"}}}, a)
	h.waitState("cap", schemas.StateWaitingForTraffic)
	// The socket opens after the first report.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := testenv.Metric(t, reg, "capstream_producer_interfaces", map[string]string{"state": "open"}); n != 1 {
			return fmt.Errorf("%v interfaces open, want 1", n)
		}
		return nil
	})
	sent := blast(t, a, b, time.Second)
	// The read loop polls the ring's drop count every second.
	testenv.Eventually(t, 10*time.Second, func() error {
		got := testenv.Metric(t, reg, "capstream_producer_packets_total", nil) +
			testenv.Metric(t, reg, "capstream_producer_kernel_drops_total", nil)
		if got < float64(sent) {
			return fmt.Errorf("sent %d, read or dropped %v so far", sent, got)
		}
		return nil
	})
	stop()
	var st *schemas.Status
	testenv.Eventually(t, 5*time.Second, func() error {
		if st = h.lastStatus("cap"); st.Packets+st.KernelDrops < uint64(sent) {
			return fmt.Errorf("sent %d, status %+v", sent, st)
		}
		return nil
	})
	t.Logf("sent %d: captured %d, kernel drops %d", sent, st.Packets, st.KernelDrops)
	if st.Packets+st.KernelDrops != uint64(sent) {
		t.Errorf("sent %d, captured %d + kernel drops %d", sent, st.Packets, st.KernelDrops)
	}
	if st.State != schemas.StateCapturing {
		t.Errorf("final state %s", st.State)
	}
}
