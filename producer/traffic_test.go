package producer

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/capstream/capstream/internal/testenv"
)

// Traffic for the functional tests and benchmarks: what pods send each
// other, tcpdump as the reference capture, and decoding for the filter
// checks.

// tcpdump runs tcpdump on iface in the node's namespace until stop.
func tcpdump(t *testing.T, node *testenv.Node, iface string) (stop func() []record) {
	t.Helper()
	path := t.TempDir() + "/tcpdump.pcap"
	cmd := exec.Command("ip", "netns", "exec", node.NetNS, "tcpdump", "-i", iface, "-w", path, "-U", "-n", "--immediate-mode",
		"--time-stamp-precision=nano", "-s", "262144", "-Z", "root")
	var stderr testenv.Buffer
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
		// tcpdump drops what it has not read from its socket when
		// interrupted, and it lags on a loaded machine: wait until its
		// file stops growing first.
		last, still := -1, 0
		for deadline := time.Now().Add(5 * time.Second); still < 3 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			fi, err := os.Stat(path)
			if err != nil {
				continue
			}
			if n := int(fi.Size()); n == last {
				still++
			} else {
				last, still = n, 0
			}
		}
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		recs, err := testenv.ReadPcap(path)
		if recs == nil && err != nil {
			t.Fatalf("%v; tcpdump said %s", err, stderr.String())
		}
		if err != nil {
			// tcpdump was interrupted: keep what it wrote before.
			t.Logf("tcpdump file: %v; tcpdump said %s", err, stderr.String())
		}
		var out []record
		for _, r := range recs {
			out = append(out, record{ts: r.Info.Timestamp, data: string(r.Data), orig: uint32(r.Info.Length)})
		}
		return out
	}
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
		// Paced on purpose: a burst would fill the test's small rings
		// and the comparisons would be about drops.
		time.Sleep(2 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	ping(t, a, b.IPv4, 3)
	ping(t, a, b.IPv6, 3)
	// A quiet gap on purpose: the TCP closes and the last pings cross
	// before the caller ends its compared window, so no packet of this
	// traffic is stamped next to the window's end.
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
