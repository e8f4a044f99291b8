package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// hostileSize scales the hostile input with the throughput workload's
// size: 300000 flows on 2000 interfaces at the default 1M packets.
func hostileSize(packets int) (flows, ifaces int) {
	flows = min(hostileFlowsMax, max(1000, packets*3/10))
	ifaces = min(hostileIfacesMax, max(10, flows/150))
	return flows / ifaces * ifaces, ifaces
}

// publishHostile publishes the hostile input: flows distinct TCP flows,
// each with three long L7 names of its own (DNS, TLS SNI, HTTP Host), spread over ifaces interfaces of one capture,
// hostileRounds small batches per interface, round by round, so every
// interface's object and every flow is open at once. No batch is marked
// Last: the sinks close each interface when it has been quiet for
// stopAfter, as they would after a producer crash.
func (e *memEnv) publishHostile(ctx context.Context, r *memoryRun, packets int) error {
	flows, ifaces := hostileSize(packets)
	perIf := flows / ifaces
	name := memCapture(memInputHostile)
	p := &publisher{js: e.js, r: r}
	r.Interfaces, r.Flows = ifaces, flows
	// At the start of an active-timeout window (the default, 1m, windows
	// align on the epoch): all rounds, a few seconds of packet time, fall
	// in one window, so no flow is released before the interface goes
	// quiet, whatever the second the run starts at.
	base := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	hdrs := make([]schemas.BatchHeader, ifaces)
	for k := range hdrs {
		hdrs[k] = sinktest.Header(benchNamespace, name, "uid-"+name, benchNode, benchPod, fmt.Sprintf("veth%05d", k))
		hdrs[k].Producer = memoryProducer
	}
	var frame, msg []byte
	for round := range hostileRounds {
		lo, hi := round*perIf/hostileRounds, (round+1)*perIf/hostileRounds
		for k := range ifaces {
			var body []byte
			var n uint32
			for j := lo; j < hi; j++ {
				f := k*perIf + j
				cli := [4]byte{10, byte(64 + (f>>16)&63), byte(f >> 8), byte(f)}
				srv := [4]byte{10, 96, 0, 1}
				cport := uint16(20000 + f%40000)
				ts := base.Add(time.Duration(round)*time.Second + time.Duration(j)*10*time.Microsecond)
				// The most a flow record holds: a TCP flow to port 53 whose
				// first payloads give it all three L7 names, each long and
				// its own (a DNS-over-TCP query, a TLS ClientHello, an
				// HTTP request), then the server's empty ACK.
				seq := uint32(1)
				for i, kind := range []int{hintDNS, hintSNI, hintHost} {
					msg = hostilePayload(msg[:0], kind, f)
					frame = tcpFrame(frame[:0], cli, srv, cport, 53, seq, tcpPSH|tcpACK, msg)
					body = schemas.AppendRecord(body, ts.Add(time.Duration(i)*time.Microsecond), frame, len(frame))
					seq += uint32(len(msg))
				}
				frame = tcpFrame(frame[:0], srv, cli, 53, cport, 1, tcpACK, nil)
				body = schemas.AppendRecord(body, ts.Add(3*time.Microsecond), frame, len(frame))
				n += hostilePackets
			}
			if n == 0 {
				continue
			}
			h := &hdrs[k]
			h.Seq++
			h.Packets = n
			if err := p.publish(*h, body); err != nil {
				return err
			}
		}
	}
	return p.wait(ctx, e.o.Timeout)
}

// The L7 names a hostile flow carries, and its packets.
const (
	hintDNS = iota
	hintSNI
	hintHost
	hostilePackets = 4
	// hostileName is the length of each name: four 60-byte labels, close
	// to the longest name the flow sink keeps (255).
	hostileName = 243
)

// hostileNameOf returns flow f's name for kind: four 60-byte labels, the
// first unique to the flow and kind.
func hostileNameOf(kind, f int) string {
	var sb strings.Builder
	for l := range 4 {
		if l > 0 {
			sb.WriteByte('.')
		}
		label := fmt.Sprintf("%c%c%09d", 'a'+kind, 'a'+l, f)
		sb.WriteString(label)
		sb.WriteString(strings.Repeat("x", 60-len(label)))
	}
	return sb.String()
}

// hostilePayload appends flow f's payload of kind: a DNS-over-TCP query, a
// TLS ClientHello with SNI, or an HTTP request with Host.
func hostilePayload(dst []byte, kind, f int) []byte {
	name := hostileNameOf(kind, f)
	switch kind {
	case hintDNS:
		var q []byte
		q = binary.BigEndian.AppendUint16(q, uint16(f))
		q = append(q, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0) // query, RD, one question
		for _, label := range strings.Split(name, ".") {
			q = append(q, byte(len(label)))
			q = append(q, label...)
		}
		q = append(q, 0, 0, 1, 0, 1) // root, type A, class IN
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(q)))
		return append(dst, q...)
	case hintSNI:
		return append(dst, sinktest.ClientHello(name)...)
	default:
		return append(dst, "GET / HTTP/1.1\r\nHost: "+name+"\r\n\r\n"...)
	}
}

// TCP flags tcpFrame sets.
const (
	tcpPSH = 0x08
	tcpACK = 0x10
)

// tcpFrame appends an Ethernet/IPv4/TCP frame carrying payload, with valid
// IP and TCP checksums.
func tcpFrame(dst []byte, src, dstIP [4]byte, sport, dport uint16, seq uint32, flags byte, payload []byte) []byte {
	dst = append(dst, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x08, 0x00)
	ip := len(dst)
	dst = append(dst, 0x45, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(20+20+len(payload)))
	dst = append(dst, 0, 0, 0x40, 0, 64, 6, 0, 0)
	dst = append(dst, src[:]...)
	dst = append(dst, dstIP[:]...)
	binary.BigEndian.PutUint16(dst[ip+10:], ^fold(sum16(0, dst[ip:ip+20])))
	tcp := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, sport)
	dst = binary.BigEndian.AppendUint16(dst, dport)
	dst = binary.BigEndian.AppendUint32(dst, seq)
	dst = binary.BigEndian.AppendUint32(dst, 1) // ack
	dst = append(dst, 5<<4, flags, 0xff, 0xff, 0, 0, 0, 0)
	dst = append(dst, payload...)
	// Pseudo-header: addresses, protocol, TCP length.
	var ph [12]byte
	copy(ph[0:4], src[:])
	copy(ph[4:8], dstIP[:])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(dst)-tcp))
	binary.BigEndian.PutUint16(dst[tcp+16:], ^fold(sum16(sum16(0, ph[:]), dst[tcp:])))
	return dst
}

// sum16 adds b to the one's-complement sum s, as 16-bit big-endian words.
func sum16(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
