package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const testNode = "node-1"

// harness is a producer under test with its JetStream and node.
type harness struct {
	t    *testing.T
	srv  *testenv.NATSServer
	node *testenv.Node
	cons jetstream.Consumer

	mu     sync.Mutex
	status map[string]*schemas.Status // by subject

	// batches lists, by capture, the batches drain has read, in stream
	// order, so tests can check where the last-batch marks fall.
	batches map[string][]schemas.BatchHeader
}

func newHarness(t *testing.T, pods ...testenv.Pod) *harness {
	t.Helper()
	h := &harness{t: t, status: map[string]*schemas.Status{}, batches: map[string][]schemas.BatchHeader{}}
	if len(pods) > 0 {
		h.node = testenv.NetNode(t, pods...)
	}
	h.srv = testenv.NATS(t)
	if err := schemas.EnsureStreams(t.Context(), h.srv.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	// The packets stream keeps batches only for existing consumers.
	cons, err := h.srv.JS.CreateOrUpdateConsumer(t.Context(), schemas.StreamPackets, schemas.PcapSinkConsumer())
	if err != nil {
		t.Fatal(err)
	}
	h.cons = cons
	sub, err := h.srv.Conn.Subscribe(schemas.StatusSubjectsAll, func(m *nats.Msg) {
		s, err := schemas.DecodeStatus(m.Data)
		if err != nil {
			t.Errorf("bad status on %s: %v", m.Subject, err)
			return
		}
		h.mu.Lock()
		h.status[m.Subject] = s
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

func (h *harness) config() Config {
	cfg := DefaultConfig()
	cfg.Node = testNode
	cfg.NATS.URL = h.srv.URL
	cfg.AFPacket.RingBytes = 8 << 20
	if h.node != nil {
		cfg.AFPacket.NetNS = "/var/run/netns/" + h.node.NetNS
	}
	cfg.StatusInterval = 300 * time.Millisecond
	cfg.BatchDelay = 20 * time.Millisecond
	cfg.GracePeriod = 3 * time.Second
	return cfg
}

// start runs a producer until the returned stop is called (or the test
// ends) and waits until it follows commands.
func (h *harness) start(cfg Config, deps Deps) (*Producer, *prometheus.Registry, func()) {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(h.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	deps.Registerer = reg
	p, err := New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				h.t.Errorf("Run did not return")
			}
		})
	}
	h.t.Cleanup(stop)
	testenv.Eventually(h.t, 10*time.Second, p.Ready)
	return p, reg, stop
}

func (h *harness) command(name, uid string, action schemas.Action, filters []schemas.Filter, pods ...*testenv.PodNet) {
	h.t.Helper()
	cmd := &schemas.Command{Action: action, Namespace: "default", Name: name, UID: uid, Generation: 1, Node: testNode,
		Filters: filters, IssuedAt: time.Now()}
	for _, p := range pods {
		cmd.Endpoints = append(cmd.Endpoints, schemas.Endpoint{Pod: p.Name, Namespace: p.Namespace, Interface: p.HostIface})
	}
	h.publishCommand(cmd)
}

func (h *harness) publishCommand(cmd *schemas.Command) {
	h.t.Helper()
	data, err := schemas.EncodeCommand(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	subj, _ := schemas.CommandSubject(cmd.Node, cmd.Namespace, cmd.Name)
	if _, err := h.srv.JS.Publish(h.t.Context(), subj, data); err != nil {
		h.t.Fatal(err)
	}
}

// waitState waits for a producer status of capture name in state.
func (h *harness) waitState(name string, state schemas.State) *schemas.Status {
	h.t.Helper()
	subj, _ := schemas.StatusSubject("default", name, testNode)
	var got *schemas.Status
	testenv.Eventually(h.t, 15*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		s := h.status[subj]
		if s == nil || s.State != state {
			return fmt.Errorf("status of %s: %+v, want %s", name, s, state)
		}
		got = s
		return nil
	})
	return got
}

func (h *harness) lastStatus(name string) *schemas.Status {
	subj, _ := schemas.StatusSubject("default", name, testNode)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status[subj]
}

// record is a packet as stored, for comparisons.
type record struct {
	ts   time.Time
	data string
	orig uint32
}

// drain fetches every batch now in the stream (acking them) and returns
// the records by capture name.
func (h *harness) drain() map[string][]record {
	h.t.Helper()
	out := map[string][]record{}
	for {
		batch, err := h.cons.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			hdr, err := schemas.DecodeBatchHeader(msg.Headers())
			if err != nil {
				h.t.Fatalf("batch header: %v", err)
			}
			h.batches[hdr.Capture] = append(h.batches[hdr.Capture], hdr)
			rr := schemas.NewRecordReader(msg.Data(), hdr.SnapLength)
			var got uint32
			for {
				r, err := rr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					h.t.Fatalf("batch body: %v", err)
				}
				got++
				out[hdr.Capture] = append(out[hdr.Capture], record{ts: r.Timestamp(), data: string(r.Data), orig: r.OrigLen})
			}
			if got != hdr.Packets {
				h.t.Errorf("batch has %d records, header says %d", got, hdr.Packets)
			}
			_ = msg.Ack()
		}
		if batch.Error() != nil {
			h.t.Fatal(batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// lastMarks checks the batches drain read for capture: per interface, a
// last mark on the final batch only, and one per producer run (wantRuns).
func (h *harness) lastMarks(capture string, wantRuns int) {
	h.t.Helper()
	type run struct{ iface, producer string }
	final := map[run]schemas.BatchHeader{}
	marks := 0
	for _, b := range h.batches[capture] {
		r := run{b.Interface, b.Producer}
		if prev, ok := final[r]; ok && prev.Last {
			h.t.Errorf("%s: batch %d of %s follows the last batch %d", capture, b.Seq, r.iface, prev.Seq)
		}
		final[r] = b
		if b.Last {
			marks++
		}
	}
	for r, b := range final {
		if !b.Last {
			h.t.Errorf("%s: the final batch %d of %s (producer %s) is not marked last", capture, b.Seq, r.iface, r.producer)
		}
	}
	if marks != wantRuns {
		h.t.Errorf("%s: %d batches marked last, want %d", capture, marks, wantRuns)
	}
}

// tcpdump runs tcpdump on iface in the node's namespace until stop.
func tcpdump(t *testing.T, node *testenv.Node, iface string) (stop func() []record) {
	t.Helper()
	path := t.TempDir() + "/tcpdump.pcap"
	cmd := exec.Command("ip", "netns", "exec", node.NetNS, "tcpdump", "-i", iface, "-w", path, "-U", "-n", "--immediate-mode",
		"--time-stamp-precision=nano", "-s", "262144", "-Z", "root")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("tcpdump: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(stderr.String(), "listening on") {
			return fmt.Errorf("tcpdump not listening yet: %q", stderr.String())
		}
		return nil
	})
	return func() []record {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("%v; tcpdump said %s", err, stderr.String())
		}
		defer f.Close()
		r, err := pcapgo.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var out []record
		for {
			data, ci, err := r.ReadPacketData()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Logf("tcpdump file: %v; tcpdump said %s", err, stderr.String())
				}
				break
			}
			out = append(out, record{ts: ci.Timestamp, data: string(data), orig: uint32(ci.Length)})
		}
		return out
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// traffic sends a mix from pod a to pod b: UDP to ports 53, 80 and 5000,
// TCP to ports 80 and 8080 (with listeners in b), ICMP echo over IPv4 and
// ICMPv6 echo, UDP over IPv6.
func traffic(t *testing.T, a, b *testenv.PodNet, rounds int) {
	t.Helper()
	var lns []net.Listener
	var udps []net.PacketConn
	err := b.Do(func() error {
		for _, port := range []int{80, 8080} {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		for _, port := range []int{53, 80, 5000} {
			pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			udps = append(udps, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, pc := range udps {
			pc.Close()
		}
	}()
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
			}
		}()
	}
	for _, pc := range udps {
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
	}
	var conns []net.Conn
	err = a.Do(func() error {
		for _, addr := range []string{
			net.JoinHostPort(b.IPv4.String(), "53"), net.JoinHostPort(b.IPv4.String(), "80"),
			net.JoinHostPort(b.IPv4.String(), "5000"), net.JoinHostPort(b.IPv6.String(), "53"),
		} {
			c, err := net.Dial("udp", addr)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		for _, addr := range []string{net.JoinHostPort(b.IPv4.String(), "80"), net.JoinHostPort(b.IPv4.String(), "8080")} {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("capstream"), 20)
	for range rounds {
		for _, c := range conns {
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	ping(t, a, b.IPv4, 3)
	ping(t, a, b.IPv6, 3)
	// Let the TCP closes and the last pings cross.
	time.Sleep(100 * time.Millisecond)
}

// ping sends count ICMP echo requests from pod to dst (IPv4 or IPv6) and
// waits for each reply.
func ping(t *testing.T, pod *testenv.PodNet, dst net.IP, count int) {
	t.Helper()
	network, addr := "ip4:icmp", "0.0.0.0"
	var typ icmp.Type = ipv4.ICMPTypeEcho
	proto := 1
	if dst.To4() == nil {
		network, addr, typ, proto = "ip6:ipv6-icmp", "::", ipv6.ICMPTypeEchoRequest, 58
	}
	var pc *icmp.PacketConn
	if err := pod.Do(func() error {
		var err error
		pc, err = icmp.ListenPacket(network, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	buf := make([]byte, 1500)
	for i := range count {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 0x4242, Seq: i, Data: []byte("capstream-ping")}}
		wb, err := msg.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(wb, &net.IPAddr{IP: dst}); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("ping %s: %v", dst, err)
			}
			if m, err := icmp.ParseMessage(proto, buf[:n]); err == nil && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
				break
			}
		}
	}
}

// decoded is what filter checks look at.
type decoded struct {
	v6           bool
	proto        layers.IPProtocol
	sport, dport uint16
	src, dst     net.IP
}

func decode(t *testing.T, data string) (decoded, bool) {
	t.Helper()
	p := gopacket.NewPacket([]byte(data), layers.LayerTypeEthernet, gopacket.Default)
	var d decoded
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		d.proto, d.src, d.dst = ip.Protocol, ip.SrcIP, ip.DstIP
	case *layers.IPv6:
		d.v6, d.proto, d.src, d.dst = true, ip.NextHeader, ip.SrcIP, ip.DstIP
	default:
		return d, false
	}
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		d.sport, d.dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	case *layers.UDP:
		d.sport, d.dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	}
	return d, true
}

func window(rs []record, from, to time.Time) []record {
	var out []record
	for _, r := range rs {
		if !r.ts.Before(from) && !r.ts.After(to) {
			out = append(out, r)
		}
	}
	return out
}

var podsABC = []testenv.Pod{{Namespace: "default", Name: "pod-a"}, {Namespace: "default", Name: "pod-b"}, {Namespace: "default", Name: "pod-c"}}

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
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		if s := h.lastStatus("all"); s == nil || s.State != schemas.StateCapturing {
			return fmt.Errorf("not capturing yet: %+v", s)
		}
		return nil
	})
	from := time.Now()
	traffic(t, a, b, 50)
	traffic(t, b, c, 20) // not on a's interface
	to := time.Now()
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
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		for _, name := range []string{"ref", "icmp", "or"} {
			if s := h.lastStatus(name); s == nil || s.State != schemas.StateCapturing {
				return fmt.Errorf("%s not capturing yet: %+v", name, s)
			}
		}
		return nil
	})
	from := time.Now()
	traffic(t, a, b, 20)
	to := time.Now()
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
	_, _, stop := h.start(cfg, Deps{})

	// An interface that does not exist yet: waiting.
	ghost := &testenv.PodNet{Pod: testenv.Pod{Namespace: "default", Name: "ghost"}, HostIface: "caliGhost"}
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, ghost)
	h.waitState("cap", schemas.StateWaitingForTraffic)

	// Update to pod a's interface: capturing a.
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, a)
	testenv.Eventually(t, 10*time.Second, func() error {
		ping(t, a, b.IPv4, 1)
		if s := h.lastStatus("cap"); s == nil || s.State != schemas.StateCapturing {
			return fmt.Errorf("not capturing: %+v", s)
		}
		return nil
	})
	// Update to pod b's interface only.
	h.command("cap", "uid-cap", schemas.ActionCapture, nil, b)
	time.Sleep(300 * time.Millisecond)
	h.drain()
	ping(t, a, a.IPv4, 1) // a to itself: never leaves a's namespace
	ping(t, b, b.IPv4, 1)
	ping(t, a, h.node.Pods[1].IPv4, 2)
	time.Sleep(200 * time.Millisecond)
	ifaces := map[string]int{}
	msgs, err := h.cons.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range msgs.Messages() {
		hdr, err := schemas.DecodeBatchHeader(msg.Headers())
		if err != nil {
			t.Fatal(err)
		}
		ifaces[hdr.Interface] += int(hdr.Packets)
		_ = msg.Ack()
	}
	if ifaces[b.HostIface] == 0 || ifaces[a.HostIface] != 0 {
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
	time.Sleep(300 * time.Millisecond)
	if got := h.drain()["cap"]; len(got) != 0 {
		t.Fatalf("%d packets captured after stop", len(got))
	}
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
	drops := func() float64 { return counterValue(t, reg, "capstream_producer_publish_drops_total") }
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
	cfg.Source = SourceFile
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
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatal(err)
		}
		want := record{ts: ci.Timestamp.UTC(), data: string(data), orig: uint32(ci.Length)}
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
	cfg.Source = SourceFile
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
	time.Sleep(100 * time.Millisecond)
	if n := len(h.drain()["flush"]); n != 0 {
		t.Fatalf("%d packets published before shutdown; the batch delay should hold them", n)
	}
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
	_, _, stop := h.start(cfg, Deps{})
	h.command("cap", "uid-cap", schemas.ActionCapture, []schemas.Filter{{Protocol: "UDP", Ports: []string{"9999:10010"}}}, a)
	h.waitState("cap", schemas.StateWaitingForTraffic)
	time.Sleep(300 * time.Millisecond) // the socket opens after the first report
	sent := blast(t, a, b, time.Second)
	time.Sleep(300 * time.Millisecond)
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
