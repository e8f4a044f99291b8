package flowstore

import (
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/capstream/capstream/schemas"
)

// Packet is what the flow table needs from one decoded packet. It holds no
// reference to the decoder, so the decoder can be reused at once.
type Packet struct {
	// Key is the packet's 5-tuple in the direction it travelled.
	Key FlowKey
	// TCPFlags are the TCP flags (FIN=0x01 ... CWR=0x80), 0 for others.
	TCPFlags uint8
	// WireLen is the frame's length on the wire (the record's OrigLen).
	WireLen uint32
	// PayloadLen is the transport payload length (IP payload for
	// protocols without ports), as far as the IP header claims.
	PayloadLen uint32
	// Payload is the captured transport payload, for the L7 hints.
	Payload []byte
}

// FlowKey is a directional 5-tuple. IPv4 addresses are mapped into IPv6 so
// one key type serves both; for ICMP the ports are the type and code.
type FlowKey struct {
	// Src and Dst are IPv6 or IPv4-mapped addresses.
	Src, Dst [16]byte
	// SrcPort and DstPort are transport ports, or ICMP type and code.
	SrcPort, DstPort uint16
	// Proto is the IP protocol number.
	Proto uint8
	// IPVersion is 4 or 6.
	IPVersion uint8
}

// Decoder decodes pcap records into Packets with gopacket's
// DecodingLayerParser: the layers are preallocated and reused, so decoding
// does not allocate per packet. A Decoder is not safe for concurrent use.
type Decoder struct {
	eth     layers.Ethernet
	dot1q   layers.Dot1Q
	sll     layers.LinuxSLL
	ip4     layers.IPv4
	ip6     layers.IPv6
	tcp     layers.TCP
	udp     layers.UDP
	icmp4   layers.ICMPv4
	icmp6   layers.ICMPv6
	sctp    layers.SCTP
	payload gopacket.Payload

	parsers map[uint32]*gopacket.DecodingLayerParser
	raw4    *gopacket.DecodingLayerParser
	raw6    *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

// NewDecoder returns a decoder for the link types capstream writes.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 8)}
	all := []gopacket.DecodingLayer{&d.eth, &d.dot1q, &d.sll, &d.ip4, &d.ip6, &d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.sctp, &d.payload}
	mk := func(first gopacket.LayerType) *gopacket.DecodingLayerParser {
		p := gopacket.NewDecodingLayerParser(first, all...)
		// Unknown upper layers (ARP, IPsec, ...) end decoding quietly; the
		// caller sees which layers were decoded.
		p.IgnoreUnsupported = true
		return p
	}
	d.parsers = map[uint32]*gopacket.DecodingLayerParser{
		schemas.LinkTypeEthernet: mk(layers.LayerTypeEthernet),
		schemas.LinkTypeLinuxSLL: mk(layers.LayerTypeLinuxSLL),
	}
	d.raw4 = mk(layers.LayerTypeIPv4)
	d.raw6 = mk(layers.LayerTypeIPv6)
	return d
}

// Result classifies a decoded record.
type Result int

// Results of Decode.
const (
	// OK: pkt is filled in.
	OK Result = iota
	// NotIP: a frame without IPv4 or IPv6 (ARP, LLDP, ...); not a flow.
	NotIP
	// Malformed: a truncated or corrupt packet, or an unsupported link type.
	Malformed
)

// Decode decodes one record's data. It never panics on hostile input:
// gopacket's layers bound-check, and a decode error is Malformed.
func (d *Decoder) Decode(linkType uint32, data []byte, wireLen uint32, pkt *Packet) Result {
	var p *gopacket.DecodingLayerParser
	if linkType == schemas.LinkTypeRaw {
		if len(data) == 0 {
			return Malformed
		}
		switch data[0] >> 4 {
		case 4:
			p = d.raw4
		case 6:
			p = d.raw6
		default:
			return Malformed
		}
	} else if p = d.parsers[linkType]; p == nil {
		return Malformed
	}
	d.decoded = d.decoded[:0]
	err := p.DecodeLayers(data, &d.decoded)
	*pkt = Packet{WireLen: wireLen}
	var haveIP, haveL4 bool
	for _, lt := range d.decoded {
		switch lt {
		case layers.LayerTypeIPv4:
			haveIP = true
			pkt.Key.IPVersion = 4
			copy(pkt.Key.Src[:], v4prefix)
			copy(pkt.Key.Src[12:], d.ip4.SrcIP.To4())
			copy(pkt.Key.Dst[:], v4prefix)
			copy(pkt.Key.Dst[12:], d.ip4.DstIP.To4())
			pkt.Key.Proto = uint8(d.ip4.Protocol)
			if hl := int(d.ip4.IHL) * 4; int(d.ip4.Length) >= hl {
				pkt.PayloadLen = uint32(int(d.ip4.Length) - hl)
			}
			pkt.Payload = d.ip4.Payload
			if d.ip4.FragOffset != 0 {
				// A later fragment carries no transport header: it joins
				// the flow without ports, as a flow tool without
				// reassembly does.
				haveL4 = true
			}
		case layers.LayerTypeIPv6:
			haveIP = true
			pkt.Key.IPVersion = 6
			copy(pkt.Key.Src[:], d.ip6.SrcIP.To16())
			copy(pkt.Key.Dst[:], d.ip6.DstIP.To16())
			pkt.Key.Proto = uint8(d.ip6.NextHeader)
			pkt.PayloadLen = uint32(d.ip6.Length)
			pkt.Payload = d.ip6.Payload
		case layers.LayerTypeTCP:
			haveL4 = true
			pkt.Key.SrcPort, pkt.Key.DstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			pkt.TCPFlags = tcpFlags(&d.tcp)
			hl := uint32(d.tcp.DataOffset) * 4
			pkt.PayloadLen = sat(pkt.PayloadLen, hl)
			pkt.Payload = d.tcp.Payload
		case layers.LayerTypeUDP:
			haveL4 = true
			pkt.Key.SrcPort, pkt.Key.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
			pkt.PayloadLen = sat(pkt.PayloadLen, 8)
			pkt.Payload = d.udp.Payload
		case layers.LayerTypeSCTP:
			haveL4 = true
			pkt.Key.SrcPort, pkt.Key.DstPort = uint16(d.sctp.SrcPort), uint16(d.sctp.DstPort)
			pkt.PayloadLen = sat(pkt.PayloadLen, 12)
			pkt.Payload = nil
		case layers.LayerTypeICMPv4:
			haveL4 = true
			pkt.Key.SrcPort, pkt.Key.DstPort = uint16(d.icmp4.TypeCode.Type()), uint16(d.icmp4.TypeCode.Code())
			pkt.Payload = nil
		case layers.LayerTypeICMPv6:
			haveL4 = true
			pkt.Key.SrcPort, pkt.Key.DstPort = uint16(d.icmp6.TypeCode.Type()), uint16(d.icmp6.TypeCode.Code())
			pkt.Payload = nil
		}
	}
	if !haveIP {
		if err != nil || len(d.decoded) == 0 {
			return Malformed
		}
		return NotIP
	}
	if err != nil {
		return Malformed
	}
	switch pkt.Key.Proto {
	case 6, 17, 132, 1, 58:
		if !haveL4 {
			// The IP header promised a transport header that is not
			// there: the capture was cut too short or the packet is bad.
			return Malformed
		}
	}
	return OK
}

var v4prefix = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}

func sat(a, b uint32) uint32 {
	if a < b {
		return 0
	}
	return a - b
}

// TCP flag bits as on the wire.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

func tcpFlags(t *layers.TCP) uint8 {
	var f uint8
	for i, set := range [8]bool{t.FIN, t.SYN, t.RST, t.PSH, t.ACK, t.URG, t.ECE, t.CWR} {
		if set {
			f |= 1 << i // the wire's bit order, FIN lowest
		}
	}
	return f
}
