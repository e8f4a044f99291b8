package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// workload is a generated capture on disk.
type workload struct {
	// Path is the pcap file.
	Path string
	// Packets is the number of records in it.
	Packets int
	// FrameBytes is the sum of the frame lengths.
	FrameBytes int64
	// FileBytes is the file's size, headers included: the figure bytes/s
	// are computed from, for the pipeline and the references alike.
	FileBytes int64
	// Flows is how many flows the generator started (a TCP connection, a
	// DNS exchange or a UDP conversation each).
	Flows int
}

// concurrentFlows is how many flows are open at once in the generated
// traffic: their packets interleave, as on a busy pod's veth, so the flow
// table holds many flows and consecutive packets rarely share one.
const concurrentFlows = 256

// meanGap is the mean spacing of packet timestamps (exponential): about
// 250k packets/s of recorded traffic. It matters only for where the flow
// sink cuts active-timeout windows; the replay runs as fast as it can.
const meanGap = 4 * time.Microsecond

// flowGen builds one flow's packets at a time, with addresses and ports
// drawn from pools large enough that flows rarely share a 5-tuple.
type flowGen struct {
	rng *rand.Rand
	// payload is random bytes that responses are cut from.
	payload []byte
}

func newFlowGen(seed uint64) *flowGen {
	rng := rand.New(rand.NewPCG(seed, 0x6361707374726561))
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return &flowGen{rng: rng, payload: p}
}

// responseSize draws a response body size: mostly small, with a heavy tail,
// so that both minimum-size ACKs and full-size segments are common.
func (f *flowGen) responseSize() int {
	switch r := f.rng.Float64(); {
	case r < 0.40:
		return 200 + f.rng.IntN(1800)
	case r < 0.75:
		return 2000 + f.rng.IntN(18000)
	case r < 0.95:
		return 20000 + f.rng.IntN(180000)
	default:
		return 200000 + f.rng.IntN(400000)
	}
}

func (f *flowGen) addrs(v6 bool) (cli, srv net.IP) {
	if v6 {
		cli = net.ParseIP(fmt.Sprintf("fd00:65::%x:%x", f.rng.IntN(256), f.rng.IntN(65536)))
		srv = net.ParseIP(fmt.Sprintf("fd00:96::%x", 1+f.rng.IntN(200)))
		return cli, srv
	}
	cli = net.IPv4(10, 65, byte(f.rng.IntN(256)), byte(1+f.rng.IntN(254)))
	srv = net.IPv4(10, 96, byte(f.rng.IntN(4)), byte(1+f.rng.IntN(50)))
	return cli, srv
}

// next returns the packets of one new flow, in order. The mix by flow:
// 35% HTTP, 30% TLS with SNI, 25% DNS, 10% other UDP; a fifth of each is
// IPv6.
func (f *flowGen) next() []sinktest.Packet {
	g := sinktest.NewGen(time.Time{}, 0)
	cli, srv := f.addrs(f.rng.IntN(5) == 0)
	cport := uint16(32768 + f.rng.IntN(28000))
	switch r := f.rng.Float64(); {
	case r < 0.35:
		req := fmt.Appendf(nil, "GET /obj/%d HTTP/1.1\r\nHost: web%d.example.com\r\nUser-Agent: bench\r\n\r\n", f.rng.IntN(1e6), f.rng.IntN(50))
		g.Conn(cli, srv, cport, 80, req, f.body(), 1448)
	case r < 0.65:
		g.Conn(cli, srv, cport, 443, sinktest.ClientHello(fmt.Sprintf("api%d.example.net", f.rng.IntN(50))), f.body(), 1448)
	case r < 0.90:
		rcode := layers.DNSResponseCodeNoErr
		if f.rng.IntN(10) == 0 {
			rcode = layers.DNSResponseCodeNXDomain
		}
		g.DNS(cli, srv, cport, fmt.Sprintf("svc%d.ns%d.svc.cluster.local", f.rng.IntN(500), f.rng.IntN(20)), rcode)
	default:
		sport := uint16(5000 + f.rng.IntN(100))
		for range 2 + f.rng.IntN(20) {
			g.UDP(cli, srv, cport, sport, f.payload[:50+f.rng.IntN(1150)])
			if f.rng.IntN(2) == 0 {
				g.UDP(srv, cli, sport, cport, f.payload[:50+f.rng.IntN(1150)])
			}
		}
	}
	return g.Pkts
}

func (f *flowGen) body() []byte {
	n := f.responseSize()
	off := f.rng.IntN(len(f.payload) - n)
	return f.payload[off : off+n]
}

// genWorkload writes n packets of interleaved flows, timestamped from
// start, to path as a nanosecond pcap.
func genWorkload(path string, n int, start time.Time) (workload, error) {
	w := workload{Path: path, Packets: n}
	pf, err := sinktest.CreatePcap(path)
	if err != nil {
		return w, fmt.Errorf("create workload: %w", err)
	}
	fg := newFlowGen(1)
	type slot struct {
		pkts []sinktest.Packet
		i    int
	}
	slots := make([]slot, concurrentFlows)
	t := start
	for written := 0; written < n; written++ {
		s := &slots[fg.rng.IntN(len(slots))]
		if s.i == len(s.pkts) {
			s.pkts, s.i = fg.next(), 0
			w.Flows++
		}
		data := s.pkts[s.i].Data
		s.pkts[s.i].Data = nil // let the frame go once written
		s.i++
		if err := pf.Write(t, data); err != nil {
			pf.Close()
			return w, fmt.Errorf("write workload: %w", err)
		}
		w.FrameBytes += int64(len(data))
		t = t.Add(time.Duration(fg.rng.ExpFloat64() * float64(meanGap)))
	}
	if w.FileBytes, err = pf.Close(); err != nil {
		return w, fmt.Errorf("write workload: %w", err)
	}
	return w, nil
}

// latencyPort is the UDP port the latency markers are sent to; nothing else
// in the latency capture uses it.
const latencyPort = 7777

// latencyWorkload is the small paced capture of the latency phase.
type latencyWorkload struct {
	// Path is the pcap file.
	Path string
	// Markers maps a marker's packet index in the file to its source
	// port: each marker is a one-packet UDP flow to latencyPort.
	Markers map[int]uint16
	// Duration is the recorded span of the file.
	Duration time.Duration
}

// genLatency writes a capture of d of recorded time: a background UDP
// conversation with a packet every 20ms (so the flow sink sees packet time
// advance and releases each active-timeout window when the next begins, as
// it would on a live interface) and markers one-packet flows spread evenly
// over it.
func genLatency(path string, start time.Time, d time.Duration, markers int) (latencyWorkload, error) {
	lw := latencyWorkload{Path: path, Markers: map[int]uint16{}, Duration: d}
	g := sinktest.NewGen(start, 0)
	bgCli, bgSrv := net.IPv4(10, 70, 0, 1), net.IPv4(10, 96, 9, 1)
	mCli, mSrv := net.IPv4(10, 71, 0, 1), net.IPv4(10, 96, 9, 2)
	const tick = 20 * time.Millisecond
	// Markers sit between ticks, offset so that they fall at varied
	// places inside the active-timeout windows.
	every := d / time.Duration(markers+1)
	next, m := start.Add(every/2+tick/2), 0
	for at := start; at.Before(start.Add(d)); at = at.Add(tick) {
		for m < markers && !next.After(at) {
			g.T = next
			lw.Markers[len(g.Pkts)] = uint16(40000 + m)
			g.UDP(mCli, mSrv, uint16(40000+m), latencyPort, []byte("marker"))
			m++
			next = next.Add(every)
		}
		g.T = at
		g.UDP(bgCli, bgSrv, 5000, 5001, []byte("background"))
	}
	if m < markers {
		return lw, fmt.Errorf("latency workload: placed %d of %d markers", m, markers)
	}
	return lw, sinktest.WritePcap(path, g.Pkts)
}

// eachBatch reads the pcap at path into batches as the producer's replay
// cuts them (a batch goes out before a record that would take it past
// schemas.DefaultBatchBytes), numbered on from h.Seq with the file's link
// type, the last one marked Last (empty if the file has no packets), and
// calls fn with each in order. fn owns the body.
func eachBatch(path string, h schemas.BatchHeader, fn func(h schemas.BatchHeader, body []byte) error) error {
	b := &batcher{h: h, fn: fn, prealloc: true}
	err := eachRecord(path, func(lt uint32) { b.h.LinkType = lt }, func(_ int, ci gopacket.CaptureInfo, data []byte) error {
		return b.add(ci, data)
	})
	if err != nil {
		return err
	}
	return b.send(true)
}

// eachRecord reads the pcap at path: start gets the file's link type, then
// fn every record in order with its index. data is valid only during fn.
func eachRecord(path string, start func(linkType uint32), fn func(i int, ci gopacket.CaptureInfo, data []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	start(uint32(rd.LinkType()))
	for i := 0; ; i++ {
		data, ci, err := rd.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if err := fn(i, ci, data); err != nil {
			return err
		}
	}
}

// batcher cuts one interface's records into batches as the producer does
// and hands each to fn, which owns the body.
type batcher struct {
	h    schemas.BatchHeader
	body []byte
	fn   func(h schemas.BatchHeader, body []byte) error
	// prealloc sizes each body for a whole batch at once (the floor keeps
	// every batch in memory: no slack); otherwise bodies grow as needed
	// (thousands of interfaces filling at once).
	prealloc bool
}

// add appends a record, sending the batch first if the record would take
// it past schemas.DefaultBatchBytes.
func (b *batcher) add(ci gopacket.CaptureInfo, data []byte) error {
	if b.h.Packets > 0 && len(b.body)+schemas.RecordHeaderLen+len(data) > schemas.DefaultBatchBytes {
		if err := b.send(false); err != nil {
			return err
		}
	}
	if b.body == nil && b.prealloc {
		b.body = make([]byte, 0, schemas.DefaultBatchBytes+schemas.RecordHeaderLen+len(data))
	}
	b.body = schemas.AppendRecord(b.body, ci.Timestamp, data, ci.Length)
	b.h.Packets++
	return nil
}

// send hands the batch to fn, numbered next, marked Last if last.
func (b *batcher) send(last bool) error {
	b.h.Seq++
	b.h.Last = last
	err := b.fn(b.h, b.body)
	b.body, b.h.Packets = nil, 0
	return err
}
