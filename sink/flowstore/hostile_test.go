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
