package flowstore

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"math"
	"time"

	"github.com/capstream/capstream/schemas"
)

// StreamKey identifies one captured interface: flows, windows and the
// replay ledger are kept per interface because the producer sends each
// interface's batches in order, which makes packet time a usable clock.
type StreamKey struct {
	// CaptureUID is the PacketCapture's UID.
	CaptureUID string
	// Node is the capturing node.
	Node string
	// Interface is the captured interface.
	Interface string
}

// Record is one flow record, a row of the flows table (see
// schemas/clickhouse/migrations/001_flows.sql for the column meanings).
type Record struct {
	// Namespace, Capture, CaptureUID, Node, Pod and Interface say where
	// the packets were captured.
	Namespace, Capture, CaptureUID, Node, Pod, Interface string

	// RecordID is deterministic in the record's first packet, see recordID.
	RecordID uint64
	// Start and End are the first and last packet times, ns since epoch.
	Start, End int64
	// IPVersion is 4 or 6; Proto the IP protocol number.
	IPVersion, Proto uint8
	// OrigAddr and RespAddr are IPv6 or IPv4-mapped addresses; the
	// originator sent the record's first packet. ICMP ports are type and
	// code.
	OrigAddr, RespAddr [16]byte
	OrigPort, RespPort uint16

	// Packets and frame bytes (wire length) per direction, and transport
	// payload bytes.
	OrigPackets, OrigBytes, OrigPayload uint64
	RespPackets, RespBytes, RespPayload uint64
	// OrigFlags and RespFlags are the unions of the TCP flags seen.
	OrigFlags, RespFlags uint8

	// History is Zeek's history string (originator upper case).
	History string
	// ConnState is Zeek's conn_state.
	ConnState string
	// CommunityID is the Community ID v1 with seed 0.
	CommunityID string
	// DNSQuery and DNSRcode are the first DNS question and the response
	// code (-1 without a response).
	DNSQuery string
	DNSRcode int16
	// TLSSNI is the server name of a TLS ClientHello.
	TLSSNI string
	// HTTPHost is the Host header of an HTTP/1 request.
	HTTPHost string
	// EndReason is one of the Reason constants.
	EndReason string
	// FirstSeq and LastSeq are the stream sequences of the batches holding
	// the record's first packet and its highest-numbered one.
	FirstSeq uint64
	LastSeq  uint64
}

// End reasons of a record.
const (
	ReasonActive   = "active"    // the aligned active-timeout window ended
	ReasonIdle     = "idle"      // no packet for IdleTimeout
	ReasonTCPClose = "tcp_close" // FIN both ways or RST, then a new SYN
	ReasonStop     = "stop"      // the interface went quiet: capture stopped
	ReasonShutdown = "shutdown"  // the sink stopped
	ReasonEvict    = "evict"     // the table was full
)

// TableConfig is the part of Config the pure table uses.
type TableConfig struct {
	// Window is the active timeout: records are cut at multiples of it in
	// packet time, so the cut does not depend on when batches arrive.
	Window time.Duration
	// Idle ends a record after a gap this long between its packets.
	Idle time.Duration
	// MaxFlows bounds the open flows over all interfaces.
	MaxFlows int
}

// Stats counts what the table has seen.
type Stats struct {
	Packets, Malformed, NotIP, Skipped uint64
}

// flow is an open record plus the state needed to finish it.
type flow struct {
	rec       Record
	lastTs    int64
	origLow   bool // the originator is the canonical key's low side
	hist      [2]uint8
	histBuf   [12]byte
	histLen   uint8
	flags     uint16
	dnsDone   bool
	tlsDone   bool
	httpDone  bool
	hintTries uint8
}

// Direction-specific TCP facts for conn_state.
const (
	fOrigSyn = 1 << iota
	fRespSynAck
	fRespSyn
	fOrigFin
	fRespFin
	fOrigRst
	fRespRst
)

type stream struct {
	key          StreamKey
	ns, capture  string
	pod          string
	flows        map[FlowKey]*flow
	late         map[FlowKey]*flow
	done         []Record // cut inside the open window, inserted with it
	window       int64    // start of the open window, ns
	floor        int64    // packets before this time are emitted
	maxTs        int64
	lastActivity time.Time
}

// Table aggregates packets into bidirectional flow records. It is pure: no
// I/O, no goroutines, no clock other than packet time (and the wall time
// the caller passes to note activity). It is not safe for concurrent use.
//
// Records of a window are released (Ready) only when the interface's packet
// time passes the window's end, or when the caller forces a flush; Floor
// then tells which packets of the interface are covered, which is what the
// sink records in its replay ledger.
type Table struct {
	cfg     TableConfig
	window  int64
	idle    int64
	dec     *Decoder
	streams map[StreamKey]*stream
	nflows  int
	ndone   int // records finished inside open windows (the streams' done)
	ready   []Record
	stats   Stats
	pkt     Packet
	rr      schemas.RecordReader
}

// NewTable returns an empty table.
func NewTable(cfg TableConfig) *Table {
	return &Table{
		cfg:     cfg,
		window:  int64(cfg.Window),
		idle:    int64(cfg.Idle),
		dec:     NewDecoder(),
		streams: map[StreamKey]*stream{},
	}
}

// Stats returns the counters so far.
func (t *Table) Stats() Stats { return t.stats }

// Flows returns the number of open flows.
func (t *Table) Flows() int { return t.nflows }

// Held returns what the table holds in memory: open flows, records
// finished inside open windows (TCP close, idle) and records released but
// not taken yet.
func (t *Table) Held() int { return t.nflows + t.ndone + len(t.ready) }

// Full reports that the table holds MaxFlows flows and records (Held);
// the caller then forces a flush before adding more. Finished records
// count: a SYN/RST storm on one 5-tuple finishes a record per packet pair
// while only one flow is ever open.
func (t *Table) Full() bool { return t.cfg.MaxFlows > 0 && t.Held() >= t.cfg.MaxFlows }

// Add aggregates one batch. skipBefore, when non-zero, drops the batch's
// packets captured before that time (ns): the ledger says they are already
// in inserted records. It returns the earliest and latest packet times in
// the batch, skipped packets included.
func (t *Table) Add(h *schemas.BatchHeader, body []byte, streamSeq uint64, skipBefore int64, now time.Time) (minTs, maxTs int64) {
	minTs = math.MaxInt64
	s := t.stream(h)
	s.lastActivity = now
	t.rr.Reset(body, h.SnapLength)
	for idx := uint32(0); ; idx++ {
		rec, err := t.rr.Next()
		if err != nil {
			break // the sink validated the body; io.EOF ends it
		}
		ts := int64(rec.Sec)*1e9 + int64(rec.Nsec)
		maxTs = max(maxTs, ts)
		minTs = min(minTs, ts)
		if ts < skipBefore {
			t.stats.Skipped++
			continue
		}
		t.stats.Packets++
		switch t.dec.Decode(h.LinkType, rec.Data, rec.OrigLen, &t.pkt) {
		case Malformed:
			t.stats.Malformed++
			continue
		case NotIP:
			t.stats.NotIP++
			continue
		}
		t.addPacket(s, ts, streamSeq, idx)
	}
	return minTs, maxTs
}

func (t *Table) stream(h *schemas.BatchHeader) *stream {
	k := StreamKey{CaptureUID: h.CaptureUID, Node: h.Node, Interface: h.Interface}
	s := t.streams[k]
	if s == nil {
		s = &stream{key: k, ns: h.Namespace, capture: h.Capture, pod: h.Pod, flows: map[FlowKey]*flow{}, window: -1}
		t.streams[k] = s
	}
	return s
}

func (t *Table) addPacket(s *stream, ts int64, seq uint64, idx uint32) {
	p := &t.pkt
	w := ts - ts%t.window
	m := s.flows
	switch {
	case w < s.window || ts < s.floor:
		// A packet of a window already released: it can only come from a
		// batch delivered out of order. It gets its own records, released
		// with the next flush.
		if s.late == nil {
			s.late = map[FlowKey]*flow{}
		}
		m = s.late
	case w > s.window:
		t.closeWindow(s, ReasonActive)
		s.window = w
		if w > s.floor {
			s.floor = w
		}
	}
	if ts > s.maxTs {
		s.maxTs = ts
	}
	ck, low := canonical(p.Key)
	f := m[ck]
	if f != nil {
		reason := ""
		switch {
		case ts-f.lastTs > t.idle:
			reason = ReasonIdle
		case p.Key.Proto == 6 && f.closed() && p.TCPFlags&(flagSYN|flagACK) == flagSYN:
			reason = ReasonTCPClose
		}
		if reason != "" {
			s.done = append(s.done, t.finish(f, reason))
			t.ndone++
			delete(m, ck)
			t.nflows--
			f = nil
		}
	}
	if f == nil {
		f = &flow{origLow: low}
		r := &f.rec
		r.Namespace, r.Capture, r.CaptureUID, r.Node, r.Pod, r.Interface = s.ns, s.capture, s.key.CaptureUID, s.key.Node, s.pod, s.key.Interface
		r.Start, r.FirstSeq = ts, seq
		r.IPVersion, r.Proto = p.Key.IPVersion, p.Key.Proto
		r.OrigAddr, r.RespAddr, r.OrigPort, r.RespPort = p.Key.Src, p.Key.Dst, p.Key.SrcPort, p.Key.DstPort
		r.RecordID = recordID(s.key, ck, ts, seq, idx)
		r.DNSRcode = -1
		m[ck] = f
		t.nflows++
	}
	t.update(f, low == f.origLow, ts, seq)
}

// canonical orders a key's endpoints so both directions share it; low
// reports whether the packet's source is the low side.
func canonical(k FlowKey) (FlowKey, bool) {
	c := bytes.Compare(k.Src[:], k.Dst[:])
	if c < 0 || (c == 0 && k.SrcPort <= k.DstPort) {
		return k, true
	}
	k.Src, k.Dst, k.SrcPort, k.DstPort = k.Dst, k.Src, k.DstPort, k.SrcPort
	return k, false
}

// recordID is deterministic in what defines a record: its interface, its
// flow and its first packet (time and position in the stream), so the same
// packets replayed after a crash give the same ID, which ReplacingMergeTree
// collapses, while two records can never share a first packet.
func recordID(s StreamKey, k FlowKey, ts int64, seq uint64, idx uint32) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s.CaptureUID))
	h.Write([]byte{0})
	h.Write([]byte(s.Node))
	h.Write([]byte{0})
	h.Write([]byte(s.Interface))
	var b [16 + 16 + 2 + 2 + 2 + 8 + 8 + 4]byte
	o := copy(b[:], k.Src[:])
	o += copy(b[o:], k.Dst[:])
	binary.BigEndian.PutUint16(b[o:], k.SrcPort)
	binary.BigEndian.PutUint16(b[o+2:], k.DstPort)
	b[o+4], b[o+5] = k.Proto, k.IPVersion
	binary.BigEndian.PutUint64(b[o+6:], uint64(ts))
	binary.BigEndian.PutUint64(b[o+14:], seq)
	binary.BigEndian.PutUint32(b[o+22:], idx)
	h.Write(b[:])
	return h.Sum64()
}

// closeWindow releases every record of the open window.
func (t *Table) closeWindow(s *stream, reason string) {
	t.ndone -= len(s.done)
	for k, f := range s.flows {
		s.done = append(s.done, t.finish(f, reason))
		delete(s.flows, k)
		t.nflows--
	}
	t.ready = append(t.ready, s.done...)
	s.done = s.done[:0]
}

// Flush releases the records of late packets and, when force is set, every
// open record with reason (stop, shutdown, evict): then every packet seen
// so far is covered, and the floor moves past the latest one. With force
// unset only interfaces idle (no batch) since idleBefore are forced, with
// ReasonStop: a stopped capture sends no more batches, so this is how its
// last window is released.
func (t *Table) Flush(force bool, reason string, idleBefore time.Time) []Record {
	for _, s := range t.streams {
		for k, f := range s.late {
			t.ready = append(t.ready, t.finish(f, ReasonActive))
			delete(s.late, k)
			t.nflows--
		}
		r := reason
		if !force {
			if idleBefore.IsZero() || !s.lastActivity.Before(idleBefore) || (len(s.flows) == 0 && len(s.done) == 0) {
				continue
			}
			r = ReasonStop
		}
		t.closeWindow(s, r)
		if s.maxTs+1 > s.floor {
			s.floor = s.maxTs + 1
		}
	}
	out := t.ready
	t.ready = nil
	return out
}

// Stop releases every record of the interface k, as Flush does for an
// idle one, when its last batch says the capture run ended there. It
// reports whether the interface was known.
func (t *Table) Stop(k StreamKey) bool {
	s := t.streams[k]
	if s == nil {
		return false
	}
	for fk, f := range s.late {
		t.ready = append(t.ready, t.finish(f, ReasonActive))
		delete(s.late, fk)
		t.nflows--
	}
	t.closeWindow(s, ReasonStop)
	if s.maxTs+1 > s.floor {
		s.floor = s.maxTs + 1
	}
	return true
}

// Ready returns the records released since the last call.
func (t *Table) Ready() []Record {
	out := t.ready
	t.ready = nil
	return out
}

// Floor returns the time before which every packet of the interface that
// the table has seen is in a released record.
func (t *Table) Floor(k StreamKey) int64 {
	if s := t.streams[k]; s != nil {
		return s.floor
	}
	return 0
}

// Forget drops an interface's state once it holds nothing, so the table
// does not grow with every interface ever seen.
func (t *Table) Forget(k StreamKey) {
	if s := t.streams[k]; s != nil && len(s.flows) == 0 && len(s.late) == 0 && len(s.done) == 0 {
		delete(t.streams, k)
	}
}
