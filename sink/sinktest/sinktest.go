// Package sinktest builds test traffic for the sinks: synthetic packets
// made with gopacket layers (a TCP connection with data and teardown, DNS
// over UDP, a TLS ClientHello with SNI, an HTTP GET), pcap files for the
// reference tools, and packet batches published to CAPSTREAM_PACKETS the
// way a producer would. It is for tests and benchmarks only.
package sinktest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
)

// Packet is one captured frame.
type Packet struct {
	// TS is the capture time.
	TS time.Time
	// Data is the whole frame.
	Data []byte
}

// Gen builds Ethernet frames with increasing timestamps.
type Gen struct {
	// T is the next packet's time.
	T time.Time
	// Step is added to T after each packet.
	Step time.Duration
	// Pkts are the packets so far.
	Pkts []Packet
}

// NewGen starts at t, spacing packets by step.
func NewGen(t time.Time, step time.Duration) *Gen { return &Gen{T: t, Step: step} }

var macA = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
var macB = net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}

func (g *Gen) emit(ls ...gopacket.SerializableLayer) {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("serialize: %v", err))
	}
	g.Pkts = append(g.Pkts, Packet{TS: g.T, Data: append([]byte(nil), buf.Bytes()...)})
	g.T = g.T.Add(g.Step)
}

func ipLayers(src, dst net.IP, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if v4 := src.To4(); v4 != nil {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: v4, DstIP: dst.To4()}
		return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}, ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src, DstIP: dst}
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv6}, ip, ip
}

// TCP emits one TCP segment.
func (g *Gen) TCP(src, dst net.IP, sport, dport uint16, flags string, seq, ack uint32, payload []byte) {
	eth, ipl, nl := ipLayers(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: 65535}
	for _, c := range flags {
		switch c {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		}
	}
	_ = tcp.SetNetworkLayerForChecksum(nl)
	g.emit(eth, ipl, tcp, gopacket.Payload(payload))
}

// UDP emits one UDP datagram.
func (g *Gen) UDP(src, dst net.IP, sport, dport uint16, payload []byte) {
	eth, ipl, nl := ipLayers(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(nl)
	g.emit(eth, ipl, udp, gopacket.Payload(payload))
}

// Conn emits a whole TCP connection: handshake, the request and response
// payloads (split into segments of at most mss), and a FIN teardown.
func (g *Gen) Conn(cli, srv net.IP, cport, sport uint16, req, resp []byte, mss int) {
	cs, ss := uint32(1000), uint32(5000)
	g.TCP(cli, srv, cport, sport, "S", cs, 0, nil)
	g.TCP(srv, cli, sport, cport, "SA", ss, cs+1, nil)
	cs++
	ss++
	g.TCP(cli, srv, cport, sport, "A", cs, ss, nil)
	send := func(from, to net.IP, fp, tp uint16, seq, ack *uint32, data []byte) {
		for len(data) > 0 {
			n := min(len(data), mss)
			g.TCP(from, to, fp, tp, "PA", *seq, *ack, data[:n])
			*seq += uint32(n)
			data = data[n:]
		}
	}
	send(cli, srv, cport, sport, &cs, &ss, req)
	if len(req) > 0 {
		g.TCP(srv, cli, sport, cport, "A", ss, cs, nil)
	}
	send(srv, cli, sport, cport, &ss, &cs, resp)
	if len(resp) > 0 {
		g.TCP(cli, srv, cport, sport, "A", cs, ss, nil)
	}
	g.TCP(cli, srv, cport, sport, "FA", cs, ss, nil)
	g.TCP(srv, cli, sport, cport, "FA", ss, cs+1, nil)
	g.TCP(cli, srv, cport, sport, "A", cs+1, ss+1, nil)
}

// DNS emits a query for name and a response with rcode.
func (g *Gen) DNS(cli, srv net.IP, cport uint16, name string, rcode layers.DNSResponseCode) {
	q := &layers.DNS{ID: 0x1234, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
	buf := gopacket.NewSerializeBuffer()
	_ = q.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true})
	g.UDP(cli, srv, cport, 53, append([]byte(nil), buf.Bytes()...))
	r := *q
	r.QR, r.ResponseCode = true, rcode
	if rcode == layers.DNSResponseCodeNoErr {
		r.Answers = []layers.DNSResourceRecord{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 60, IP: net.IPv4(10, 0, 0, 9)}}
	}
	buf = gopacket.NewSerializeBuffer()
	_ = r.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true})
	g.UDP(srv, cli, 53, cport, append([]byte(nil), buf.Bytes()...))
}

// ClientHello returns a minimal TLS 1.2 ClientHello record carrying sni.
func ClientHello(sni string) []byte {
	var ext []byte
	name := []byte(sni)
	// server_name extension: list len, type 0, name len, name.
	sn := binary.BigEndian.AppendUint16(nil, uint16(len(name)+3))
	sn = append(sn, 0)
	sn = binary.BigEndian.AppendUint16(sn, uint16(len(name)))
	sn = append(sn, name...)
	ext = binary.BigEndian.AppendUint16(ext, 0)
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(sn)))
	ext = append(ext, sn...)
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	hs := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{22, 3, 1, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// Mixed builds the reference traffic mix: for each of n rounds a TCP
// connection carrying an HTTP GET, a TLS connection with SNI, a DNS
// exchange and an IPv6 UDP exchange, all between distinct ports.
func Mixed(start time.Time, n int, bulk int) *Gen {
	g := NewGen(start, time.Millisecond)
	cli, srv := net.IPv4(10, 65, 0, 2), net.IPv4(10, 96, 0, 10)
	cli6, srv6 := net.ParseIP("fd00:65::2"), net.ParseIP("fd00:96::10")
	rnd := rand.New(rand.NewSource(1))
	for i := range n {
		p := uint16(20000 + 4*i)
		resp := make([]byte, bulk)
		rnd.Read(resp)
		g.Conn(cli, srv, p, 80, []byte("GET /x HTTP/1.1\r\nHost: web.example.com\r\nUser-Agent: t\r\n\r\n"), resp, 1400)
		g.Conn(cli, srv, p+1, 443, ClientHello("secure.example.com"), resp[:min(len(resp), 3000)], 1400)
		rcode := layers.DNSResponseCodeNoErr
		if i%3 == 2 {
			rcode = layers.DNSResponseCodeNXDomain
		}
		g.DNS(cli, srv, p+2, fmt.Sprintf("host%d.example.com", i), rcode)
		g.UDP(cli6, srv6, p+3, 9999, []byte("ping"))
		g.UDP(srv6, cli6, 9999, p+3, []byte("pong!"))
	}
	return g
}

// WritePcap writes packets as a nanosecond pcap file.
func WritePcap(path string, pkts []Packet) error {
	pf, err := CreatePcap(path)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		if err := pf.Write(p.TS, p.Data); err != nil {
			pf.f.Close()
			return err
		}
	}
	_, err = pf.Close()
	return err
}

// PcapFile is a nanosecond Ethernet pcap file written packet by packet,
// for captures too large to hold in memory.
type PcapFile struct {
	f  *os.File
	bw *bufio.Writer
	w  *pcapgo.Writer
}

// CreatePcap creates path and writes the file header (snap length
// schemas.MaxSnapLength).
func CreatePcap(path string) (*PcapFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	pf := &PcapFile{f: f, bw: bufio.NewWriterSize(f, 1<<20)}
	pf.w = pcapgo.NewWriterNanos(pf.bw)
	if err := pf.w.WriteFileHeader(schemas.MaxSnapLength, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, err
	}
	return pf, nil
}

// Write appends one whole frame captured at ts.
func (pf *PcapFile) Write(ts time.Time, data []byte) error {
	return pf.w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}, data)
}

// Close flushes and closes the file and returns its size, headers
// included. On error the file is closed all the same.
func (pf *PcapFile) Close() (int64, error) {
	if err := pf.bw.Flush(); err != nil {
		pf.f.Close()
		return 0, err
	}
	fi, err := pf.f.Stat()
	if err != nil {
		pf.f.Close()
		return 0, err
	}
	return fi.Size(), pf.f.Close()
}

// Header returns a valid batch header for one interface.
func Header(ns, capture, uid, node, pod, iface string) schemas.BatchHeader {
	return schemas.BatchHeader{
		Namespace: ns, Capture: capture, CaptureUID: uid, Node: node, Pod: pod, Interface: iface,
		LinkType: schemas.LinkTypeEthernet, SnapLength: 262144, Producer: "p1",
	}
}

// Batches cuts packets into batch bodies of at most maxBytes, numbering
// them from h.Seq+1, with the run's counts as a producer sends them
// (schemas.RunCounts, from h.Counts.PacketsBefore).
func Batches(h schemas.BatchHeader, pkts []Packet, maxBytes int) []Batch {
	var out []Batch
	var body []byte
	var n uint32
	h.Counts.Known = true
	flush := func() {
		if n == 0 {
			return
		}
		if len(out) > 0 {
			h.Counts.PacketsBefore += uint64(h.Packets)
		}
		h.Seq++
		h.Packets = n
		out = append(out, Batch{Header: h, Body: body})
		body, n = nil, 0
	}
	for _, p := range pkts {
		if len(body)+schemas.RecordHeaderLen+len(p.Data) > maxBytes {
			flush()
		}
		body = schemas.AppendRecord(body, p.TS, p.Data, len(p.Data))
		n++
	}
	flush()
	return out
}

// EndRun marks the end of the interface's run as a producer does when a
// capture stops: the last batch gets the Last mark or, with empty, an
// empty batch with the next sequence number is appended and marked.
func EndRun(batches []Batch, empty bool) []Batch {
	if empty {
		b := batches[len(batches)-1]
		b.Header.Counts.PacketsBefore += uint64(b.Header.Packets)
		b.Header.Seq++
		b.Header.Packets, b.Body = 0, nil
		batches = append(batches, b)
	}
	batches[len(batches)-1].Header.Last = true
	return batches
}

// Batch is one batch to publish.
type Batch struct {
	// Header is encoded into the NATS headers.
	Header schemas.BatchHeader
	// Body is the run of pcap records.
	Body []byte
}

// Msg returns the batch as a NATS message on its packet subject.
func (b *Batch) Msg() *nats.Msg {
	subj, err := schemas.PacketSubject(b.Header.Namespace, b.Header.Capture, b.Header.Node)
	if err != nil {
		panic(err)
	}
	m := nats.NewMsg(subj)
	b.Header.Encode(m.Header)
	m.Data = b.Body
	return m
}

// Publish publishes batches synchronously, in order.
func Publish(ctx context.Context, js jetstream.JetStream, batches []Batch) error {
	for i := range batches {
		if _, err := js.PublishMsg(ctx, batches[i].Msg()); err != nil {
			return fmt.Errorf("publish batch %d: %w", batches[i].Header.Seq, err)
		}
	}
	return nil
}
