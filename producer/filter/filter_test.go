package filter

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/schemas"
)

// pkt describes a hand-built frame.
type pkt struct {
	v6       bool
	vlan     bool
	proto    layers.IPProtocol
	sport    uint16
	dport    uint16
	options  bool   // IPv4 options (IHL 6)
	fragOff  uint16 // IPv4 fragment offset in 8-byte units
	ext      bool   // IPv6 hop-by-hop header before the L4 header
	arp      bool
	payload  int
	ethernet bool
}

func build(t testing.TB, p pkt) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}}
	var ls []gopacket.SerializableLayer
	ls = append(ls, eth)
	etype := layers.EthernetTypeIPv4
	switch {
	case p.arp:
		etype = layers.EthernetTypeARP
	case p.v6:
		etype = layers.EthernetTypeIPv6
	}
	if p.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 42, Type: etype})
	} else {
		eth.EthernetType = etype
	}
	if p.arp {
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: eth.SrcMAC, SourceProtAddress: []byte{10, 0, 0, 1}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 0, 0, 2}})
		return serialize(t, ls)
	}
	var nl gopacket.NetworkLayer
	if p.v6 {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p.proto, SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
		nl = ip6
		ls = append(ls, ip6)
		if p.ext {
			ip6.NextHeader = layers.IPProtocolIPv6HopByHop
			hbh := &layers.IPv6HopByHop{}
			hbh.NextHeader = p.proto
			hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
			ls = append(ls, hbh)
		}
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: p.proto, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2), FragOffset: p.fragOff}
		if p.options {
			ip4.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		nl = ip4
		ls = append(ls, ip4)
	}
	payload := gopacket.Payload(make([]byte, p.payload))
	switch {
	case p.fragOff != 0:
		// A non-first fragment: what follows the IP header is data, which
		// here looks like ports 80/80 to catch a filter reading it.
		ls = append(ls, gopacket.Payload([]byte{0, 80, 0, 80, 0, 0, 0, 0}))
	case p.proto == layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: true, Window: 100}
		_ = tcp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tcp, payload)
	case p.proto == layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		_ = udp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, udp, payload)
	case p.proto == layers.IPProtocolSCTP:
		ls = append(ls, &layers.SCTP{SrcPort: layers.SCTPPort(p.sport), DstPort: layers.SCTPPort(p.dport)}, payload)
	case p.proto == layers.IPProtocolICMPv4:
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}, payload)
	case p.proto == layers.IPProtocolICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
		_ = icmp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, icmp, payload)
	default:
		ls = append(ls, payload)
	}
	return serialize(t, ls)
}

func serialize(t testing.TB, ls []gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

var (
	tcp80     = pkt{proto: layers.IPProtocolTCP, sport: 40000, dport: 80}
	tcp80back = pkt{proto: layers.IPProtocolTCP, sport: 80, dport: 40000}
	tcp443    = pkt{proto: layers.IPProtocolTCP, sport: 40000, dport: 443}
	udp53     = pkt{proto: layers.IPProtocolUDP, sport: 40000, dport: 53}
	udp80     = pkt{proto: layers.IPProtocolUDP, sport: 40000, dport: 80}
	udp5000   = pkt{proto: layers.IPProtocolUDP, sport: 40000, dport: 5000}
	sctp80    = pkt{proto: layers.IPProtocolSCTP, sport: 1, dport: 80}
	icmp4     = pkt{proto: layers.IPProtocolICMPv4}
	icmp6     = pkt{v6: true, proto: layers.IPProtocolICMPv6}
	arp       = pkt{arp: true}
)

func v6(p pkt) pkt     { p.v6 = true; return p }
func vlan(p pkt) pkt   { p.vlan = true; return p }
func opts(p pkt) pkt   { p.options = true; return p }
func frag(p pkt) pkt   { p.fragOff = 185; return p }
func ext(p pkt) pkt    { p.ext = true; p.v6 = true; return p }
func big(p pkt) pkt    { p.payload = 1400; return p }
func proto(n int) pkt  { return pkt{proto: layers.IPProtocol(n), payload: 8} }
func proto6(n int) pkt { return pkt{v6: true, proto: layers.IPProtocol(n), payload: 8} }

func TestCompile(t *testing.T) {
	type tc struct {
		rules  []schemas.Filter
		match  map[string]pkt
		reject map[string]pkt
	}
	all := map[string]pkt{"tcp80": tcp80, "udp53": udp53, "icmp4": icmp4, "icmp6": icmp6, "arp": arp, "frag": frag(tcp80), "ext": ext(udp53)}
	cases := map[string]tc{
		"no rules":   {match: all},
		"empty rule": {rules: []schemas.Filter{{Protocol: "TCP"}, {}}, match: all},
		"tcp port 80": {
			rules: []schemas.Filter{{Protocol: "TCP", Ports: []string{"80"}}},
			match: map[string]pkt{"dst": tcp80, "src": tcp80back, "v6": v6(tcp80), "vlan": vlan(tcp80), "vlan v6": vlan(v6(tcp80)),
				"options": opts(tcp80), "vlan options": vlan(opts(tcp80)), "big": big(tcp80)},
			reject: map[string]pkt{"443": tcp443, "udp80": udp80, "sctp80": sctp80, "icmp": icmp4, "icmp6": icmp6, "arp": arp,
				"fragment": frag(tcp80), "v6 ext": ext(tcp80), "vlan udp80": vlan(udp80)},
		},
		"port range": {
			rules:  []schemas.Filter{{Protocol: "udp", Ports: []string{"1000:5000"}}},
			match:  map[string]pkt{"5000": udp5000, "v6": v6(udp5000), "low": {proto: layers.IPProtocolUDP, sport: 1000, dport: 999}},
			reject: map[string]pkt{"53": udp53, "5001": {proto: layers.IPProtocolUDP, sport: 5001, dport: 999}, "tcp": {proto: layers.IPProtocolTCP, sport: 2000, dport: 2000}},
		},
		"range from zero": {
			rules:  []schemas.Filter{{Protocol: "UDP", Ports: []string{"0:60"}}},
			match:  map[string]pkt{"53": udp53},
			reject: map[string]pkt{"80": udp80},
		},
		"all ports": {
			rules:  []schemas.Filter{{Protocol: "UDP", Ports: []string{"0:65535"}}},
			match:  map[string]pkt{"53": udp53, "v6": v6(udp80)},
			reject: map[string]pkt{"fragment": frag(udp53), "tcp": tcp80},
		},
		"ports without protocol": {
			rules:  []schemas.Filter{{Ports: []string{"80"}}},
			match:  map[string]pkt{"tcp": tcp80, "udp": udp80, "sctp": sctp80, "v6 udp": v6(udp80)},
			reject: map[string]pkt{"icmp": icmp4, "tcp443": tcp443, "proto 99": proto(99)},
		},
		"udp": {
			rules:  []schemas.Filter{{Protocol: "UDP"}},
			match:  map[string]pkt{"53": udp53, "v6": v6(udp53), "fragment": frag(udp53), "vlan": vlan(udp53)},
			reject: map[string]pkt{"tcp": tcp80, "icmp": icmp4, "v6 ext": ext(udp53), "arp": arp},
		},
		"icmp": {
			rules:  []schemas.Filter{{Protocol: "ICMP"}},
			match:  map[string]pkt{"icmp": icmp4, "vlan": vlan(icmp4)},
			reject: map[string]pkt{"icmp6": icmp6, "udp": udp53},
		},
		"icmpv6": {
			rules:  []schemas.Filter{{Protocol: "ICMPv6"}},
			match:  map[string]pkt{"icmp6": icmp6, "vlan": vlan(icmp6)},
			reject: map[string]pkt{"icmp": icmp4, "udp6": v6(udp53)},
		},
		"protocol number": {
			rules:  []schemas.Filter{{Protocol: "47"}},
			match:  map[string]pkt{"gre": proto(47), "gre6": proto6(47)},
			reject: map[string]pkt{"tcp": tcp80, "46": proto(46)},
		},
		"extension header number": {
			rules:  []schemas.Filter{{Protocol: "0"}},
			match:  map[string]pkt{"hop-by-hop": ext(udp53)},
			reject: map[string]pkt{"udp6": v6(udp53)},
		},
		"or of rules": {
			rules:  []schemas.Filter{{Protocol: "TCP", Ports: []string{"443", "80"}}, {Protocol: "UDP", Ports: []string{"53"}}, {Protocol: "ICMPv6"}},
			match:  map[string]pkt{"tcp80": tcp80, "tcp443": tcp443, "udp53": udp53, "icmp6": icmp6, "vlan udp53 v6": vlan(v6(udp53))},
			reject: map[string]pkt{"udp80": udp80, "icmp": icmp4, "arp": arp},
		},
	}
	const snap = 96
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			prog, err := Compile(c.rules, snap)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if _, err := bpf.Assemble(prog); err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatalf("NewVM: %v", err)
			}
			for pn, p := range c.match {
				data := build(t, p)
				n, err := vm.Run(data)
				if err != nil {
					t.Fatalf("%s: run: %v", pn, err)
				}
				// The VM returns the program's value; the kernel cuts it to
				// the frame's length.
				if n != snap {
					t.Errorf("%s: kept %d bytes, want %d (match)", pn, n, snap)
				}
			}
			for pn, p := range c.reject {
				n, err := vm.Run(build(t, p))
				if err != nil {
					t.Fatalf("%s: run: %v", pn, err)
				}
				if n != 0 {
					t.Errorf("%s: kept %d bytes, want 0 (reject)", pn, n)
				}
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	many := make([]string, schemas.MaxPorts)
	for i := range many {
		many[i] = strconv.Itoa(1000+i*3) + ":" + strconv.Itoa(1001+i*3)
	}
	var tooMany []schemas.Filter
	for range schemas.MaxFilters {
		tooMany = append(tooMany, schemas.Filter{Protocol: "TCP", Ports: many})
	}
	cases := map[string]struct {
		rules []schemas.Filter
		snap  uint32
		want  error
	}{
		"bad protocol":     {rules: []schemas.Filter{{Protocol: "bogus"}}, snap: 100, want: schemas.ErrMalformed},
		"ports on icmp":    {rules: []schemas.Filter{{Protocol: "ICMP", Ports: []string{"1"}}}, snap: 100, want: schemas.ErrMalformed},
		"bad range":        {rules: []schemas.Filter{{Protocol: "TCP", Ports: []string{"9:1"}}}, snap: 100, want: schemas.ErrMalformed},
		"too many rules":   {rules: tooMany, snap: 100, want: ErrTooComplex},
		"zero snap length": {snap: 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Compile(c.rules, c.snap)
			if err == nil {
				t.Fatal("Compile: no error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("Compile: %v, want %v", err, c.want)
			}
		})
	}
}

func BenchmarkFilter(b *testing.B) {
	prog, err := Compile([]schemas.Filter{{Protocol: "TCP", Ports: []string{"443", "80"}}, {Protocol: "UDP", Ports: []string{"53"}}}, 65535)
	if err != nil {
		b.Fatal(err)
	}
	vm, _ := bpf.NewVM(prog)
	data := build(b, udp53)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = vm.Run(data)
	}
}

// TestHeaderBytes: the deepest read of any program is a port behind a VLAN
// tag and the largest IPv4 header; HeaderBytes is exactly that.
func TestHeaderBytes(t *testing.T) {
	raw := buildMaxOptions(t, tcp80)
	prog, err := Compile([]schemas.Filter{{Protocol: "TCP", Ports: []string{"80"}}}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		n    int
		want bool
	}{{len(raw), true}, {HeaderBytes, true}, {HeaderBytes - 1, false}} {
		n, err := vm.Run(raw[:c.n])
		if got := err == nil && n > 0; got != c.want {
			t.Errorf("frame cut to %d of %d bytes: accepted %v, want %v", c.n, len(raw), got, c.want)
		}
	}
}

// buildMaxOptions builds p's ports in TCP over IPv4 with 40 bytes of
// options (IHL 15), behind a VLAN tag.
func buildMaxOptions(t *testing.T, p pkt) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, EthernetType: layers.EthernetTypeDot1Q}
	ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
	for range 39 {
		ip4.Options = append(ip4.Options, layers.IPv4Option{OptionType: 1})
	}
	ip4.Options = append(ip4.Options, layers.IPv4Option{OptionType: 0})
	tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: true, Window: 100}
	_ = tcp.SetNetworkLayerForChecksum(ip4)
	raw := serialize(t, []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4}, ip4, tcp})
	if ihl := raw[18] & 0x0f; ihl != 15 {
		t.Fatalf("IHL %d, want 15", ihl)
	}
	return raw
}
