package flowstore

import (
	"net"
	"testing"
	"time"

	"github.com/capstream/capstream/sink/sinktest"
)

// hostilePayloads once crashed a parser, or are the edge a parser must
// refuse without reading past its input. Each seeds the fuzz targets.
var hostilePayloads = [][]byte{
	// A TLS record whose length (1) is shorter than the handshake header
	// that follows it: tlsSNI sliced p[9:6] and the flow sink panicked.
	{0x16, 0x03, 0x01, 0x00, 0x01, 0x01, 0x78, 0x79, 0x7a},
	{0x16, 0x03, 0x01, 0x00, 0x00, 0x01, 0x78, 0x79, 0x7a},
	{0x16, 0x03, 0x01, 0x00, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00},
	{0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xff},
	[]byte("GET / HTTP/1.1\r\nHost:"),
	[]byte("GET / HTTP/1.1\r\nHost: \r\n"),
	{0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0},
	{0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x61},
}

// TestHostilePayloads: every L7 parser refuses the hostile payloads
// without panicking, and so does the table the sink feeds them to.
func TestHostilePayloads(t *testing.T) {
	for _, p := range hostilePayloads {
		if sni, ok := tlsSNI(p); ok {
			t.Errorf("tlsSNI(% x) = %q, want no name", p, sni)
		}
		_, _ = httpHost(p)
		_, _, _, _ = dnsHint(p)
		addPayload(testTable(), p)
	}
}

// addPayload puts p on the wire the way a tenant's client would send it
// (a TCP segment to 443 and to 80, a UDP datagram and a TCP segment to
// 53) and runs the frames through Table.Add, the function the sink calls.
func addPayload(tb *Table, p []byte) {
	g := sinktest.NewGen(t0, time.Millisecond)
	cli, srv := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	for _, port := range []uint16{443, 80, 53} {
		g.TCP(cli, srv, 40000, port, "S", 1, 0, nil)
		g.TCP(cli, srv, 40000, port, "PA", 2, 1, p)
	}
	g.UDP(cli, srv, 40001, 53, p)
	addAll(tb, g.Pkts, 1)
	tb.Flush(true, ReasonShutdown, time.Time{})
}

// FuzzTableAdd feeds arbitrary payloads, and arbitrary frames, through
// Table.Add: whatever anyone on the pod network sends must not panic the
// flow sink.
func FuzzTableAdd(f *testing.F) {
	for _, p := range hostilePayloads {
		f.Add(p, false)
	}
	f.Add(sinktest.ClientHello("example.com"), false)
	for _, p := range sinktest.Mixed(t0, 1, 100).Pkts[:8] {
		f.Add(p.Data, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, frame bool) {
		tb := testTable()
		if !frame {
			addPayload(tb, data)
			return
		}
		addAll(tb, []sinktest.Packet{{TS: t0, Data: data}}, 1)
		tb.Flush(true, ReasonShutdown, time.Time{})
	})
}

// TestTableBoundedUnderStorm: a SYN/RST storm on one 5-tuple finishes a
// record per SYN while one flow is open at a time; the finished records
// count against MaxFlows, so the table reports Full and the sink's early
// flush keeps what it holds within MaxFlows plus one batch, however long
// the storm.
func TestTableBoundedUnderStorm(t *testing.T) {
	const maxFlows, pairs = 100, 5000
	tb := NewTable(TableConfig{Window: time.Minute, Idle: 30 * time.Second, MaxFlows: maxFlows})
	g := sinktest.NewGen(t0, time.Microsecond)
	cli, srv := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	for i := range pairs {
		g.TCP(cli, srv, 40000, 80, "S", uint32(i), 0, nil)
		g.TCP(srv, cli, 80, 40000, "RA", 0, uint32(i)+1, nil)
	}
	h := sinktest.Header("ns", "cap", "uid-1", "node-1", "pod-1", "cali0")
	batches := sinktest.Batches(h, g.Pkts, 4096)
	perBatch, peak, records := 0, 0, 0
	for i, b := range batches {
		if tb.Full() { // as the sink does before each batch
			records += len(tb.Flush(true, ReasonEvict, time.Time{}))
		}
		tb.Add(&b.Header, b.Body, uint64(i+1), 0, time.Now())
		perBatch = max(perBatch, int(b.Header.Packets))
		peak = max(peak, holding(tb))
	}
	records += len(tb.Flush(true, ReasonShutdown, time.Time{}))
	if peak > maxFlows+perBatch {
		t.Errorf("the table held %d flows and records, more than maxFlows %d plus one batch (%d packets)", peak, maxFlows, perBatch)
	}
	if records != pairs {
		t.Errorf("%d records, want one per SYN (%d)", records, pairs)
	}
}

// holding counts what tb keeps in memory from its own fields: open flows,
// records finished in open windows, records released but not taken.
func holding(tb *Table) int {
	n := tb.nflows + len(tb.ready)
	for _, s := range tb.streams {
		n += len(s.done)
	}
	if n != tb.Held() {
		panic("Held disagrees with the table's state")
	}
	return n
}
