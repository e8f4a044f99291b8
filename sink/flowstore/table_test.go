package flowstore

import (
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/sink/sinktest"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func testTable() *Table {
	return NewTable(TableConfig{Window: time.Minute, Idle: 30 * time.Second, MaxFlows: 1000})
}

func addAll(tb *Table, pkts []sinktest.Packet, seq0 uint64) {
	h := sinktest.Header("ns", "cap", "uid-1", "node-1", "pod-1", "cali0")
	for i, b := range sinktest.Batches(h, pkts, 4096) {
		tb.Add(&b.Header, b.Body, seq0+uint64(i), 0, time.Now())
	}
}

type summary struct {
	Proto                    uint8
	OrigPort, RespPort       uint16
	OrigPackets, RespPackets uint64
	History, ConnState       string
	DNS                      string
	Rcode                    int16
	SNI, Host                string
}

func summarize(recs []Record) map[uint16]summary {
	out := map[uint16]summary{}
	for _, r := range recs {
		out[r.OrigPort] = summary{r.Proto, r.OrigPort, r.RespPort, r.OrigPackets, r.RespPackets, r.History, r.ConnState, r.DNSQuery, r.DNSRcode, r.TLSSNI, r.HTTPHost}
	}
	return out
}

func TestTableMixed(t *testing.T) {
	tb := testTable()
	addAll(tb, sinktest.Mixed(t0, 1, 2000).Pkts, 1)
	if got := tb.Ready(); len(got) != 0 {
		t.Fatalf("records released before the window ended: %d", len(got))
	}
	recs := tb.Flush(true, ReasonShutdown, time.Time{})
	want := map[uint16]summary{
		20000: {6, 20000, 80, 6, 5, "ShADadFf", "SF", "", -1, "", "web.example.com"},
		20001: {6, 20001, 443, 6, 5, "ShADadFf", "SF", "", -1, "secure.example.com", ""},
		20002: {17, 20002, 53, 1, 1, "", "SF", "host0.example.com", 0, "", ""},
		20003: {17, 20003, 9999, 1, 1, "", "SF", "", -1, "", ""},
	}
	if diff := cmp.Diff(want, summarize(recs)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if tb.Flows() != 0 {
		t.Errorf("flows left: %d", tb.Flows())
	}
}

func TestTableWindowsAndIdle(t *testing.T) {
	tb := testTable()
	g := sinktest.NewGen(t0.Add(50*time.Second), 5*time.Second)
	a, b := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	for range 4 { // 50s, 55s, 60s, 65s: crosses the minute
		g.UDP(a, b, 1000, 2000, []byte("x"))
	}
	g.T = g.T.Add(40 * time.Second) // 110s: idle gap of 45s in the window
	g.UDP(a, b, 1000, 2000, []byte("y"))
	g.T = t0.Add(125 * time.Second)
	g.UDP(b, a, 2000, 1000, []byte("z")) // next window, reversed direction
	addAll(tb, g.Pkts, 1)
	ready := tb.Ready()
	var got []string
	for _, r := range ready {
		got = append(got, r.EndReason)
	}
	// Window [0,60): one record; window [60,120): the record 60-65 cut by
	// idle, then the one at 110 by the window's end.
	if diff := cmp.Diff([]string{ReasonActive, ReasonIdle, ReasonActive}, got); diff != "" {
		t.Errorf("end reasons (-want +got):\n%s", diff)
	}
	if f := tb.Floor(StreamKey{"uid-1", "node-1", "cali0"}); f != t0.Add(120*time.Second).UnixNano() {
		t.Errorf("floor %d", f)
	}
	rest := tb.Flush(true, ReasonShutdown, time.Time{})
	if len(rest) != 1 || rest[0].OrigPort != 2000 || rest[0].RespPackets != 0 {
		t.Errorf("last record: %+v", rest)
	}
}

func TestCommunityID(t *testing.T) {
	// Vectors from the Community ID specification's baseline.
	k := FlowKey{SrcPort: 34855, DstPort: 80, Proto: 6, IPVersion: 4}
	copy(k.Src[:], net.ParseIP("128.232.110.120").To16())
	copy(k.Dst[:], net.ParseIP("66.35.250.204").To16())
	if got, want := CommunityID(k), "1:LQU9qZlK+B5F3KDmev6m5PMibrg="; got != want {
		t.Errorf("CommunityID = %s, want %s", got, want)
	}
	k.Src, k.Dst, k.SrcPort, k.DstPort = k.Dst, k.Src, k.DstPort, k.SrcPort
	if got, want := CommunityID(k), "1:LQU9qZlK+B5F3KDmev6m5PMibrg="; got != want {
		t.Errorf("reversed CommunityID = %s, want %s", got, want)
	}
}

func TestHints(t *testing.T) {
	if sni, ok := tlsSNI(sinktest.ClientHello("a.example")); !ok || sni != "a.example" {
		t.Errorf("tlsSNI = %q, %v", sni, ok)
	}
	for _, bad := range [][]byte{nil, {22, 3, 1, 0, 5, 1, 0, 0, 1}, []byte("GET / HTTP/1.1\r\n\r\n")} {
		if _, ok := tlsSNI(bad); ok {
			t.Errorf("tlsSNI(%q) found a name", bad)
		}
		if bad != nil {
			if _, ok := httpHost(bad); ok {
				t.Errorf("httpHost(%q) found a host", bad)
			}
		}
	}
	if h, ok := httpHost([]byte("POST /a HTTP/1.1\r\nX: y\r\nhost: h.example:8080\r\n\r\n")); !ok || h != "h.example:8080" {
		t.Errorf("httpHost = %q, %v", h, ok)
	}
}

func FuzzDecode(f *testing.F) {
	for _, p := range sinktest.Mixed(t0, 1, 100).Pkts {
		f.Add(p.Data)
	}
	for _, p := range hostilePayloads { // L7 payloads that once crashed a parser
		f.Add(p)
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Packet
		d.Decode(1, data, uint32(len(data)), &p)
		_, _ = tlsSNI(data)
		_, _ = httpHost(data)
		_, _, _, _ = dnsHint(data)
	})
}

func TestTableTCPCloseThenReuse(t *testing.T) {
	tb := testTable()
	g := sinktest.NewGen(t0, time.Millisecond)
	cli, srv := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	g.Conn(cli, srv, 40000, 80, []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), []byte("ok"), 1400)
	g.TCP(cli, srv, 40000, 80, "S", 9000, 0, nil) // port reuse: a new connection
	g.TCP(srv, cli, 80, 40000, "R", 0, 9001, nil)
	addAll(tb, g.Pkts, 1)
	recs := tb.Flush(true, ReasonShutdown, time.Time{})
	var got [][2]string
	for _, r := range recs {
		got = append(got, [2]string{r.ConnState, r.EndReason})
	}
	if diff := cmp.Diff([][2]string{{"SF", ReasonTCPClose}, {"REJ", ReasonShutdown}}, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if recs[0].RecordID == recs[1].RecordID {
		t.Error("two records share an ID")
	}
}

func TestTableMalformed(t *testing.T) {
	tb := testTable()
	g := sinktest.Mixed(t0, 1, 100)
	pkts := g.Pkts[:2]
	pkts[0].Data = pkts[0].Data[:20] // Ethernet + 6 bytes of IPv4
	pkts = append(pkts, sinktest.Packet{TS: t0, Data: []byte{1, 2, 3}})
	addAll(tb, pkts, 1)
	if s := tb.Stats(); s.Malformed != 2 || s.Packets != 3 {
		t.Errorf("stats %+v, want 2 malformed of 3", s)
	}
}
