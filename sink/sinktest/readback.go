package sinktest

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/testenv"
)

// What the sinks stored, read back for comparison with the reference
// tools: the pcap objects against tcpdump's reading of the input, the flow
// rows against tshark's conversations.

// Download fetches every object under prefix into a temporary directory
// and returns the keys and local paths in key order, which is time order.
func Download(t *testing.T, b *testenv.S3Bucket, prefix string) (keys []string, paths []string) {
	t.Helper()
	for info := range b.Client.ListObjects(t.Context(), b.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		keys = append(keys, info.Key)
	}
	sort.Strings(keys)
	dir := t.TempDir()
	for i, k := range keys {
		p := filepath.Join(dir, fmt.Sprintf("%03d.pcap", i))
		if err := downloadObject(t, b, k, p); err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		paths = append(paths, p)
	}
	return keys, paths
}

func downloadObject(t *testing.T, b *testenv.S3Bucket, key, path string) error {
	obj, err := b.Client.GetObject(t.Context(), b.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return err
	}
	defer obj.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, obj); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Packets lists the packets of pcap files as tcpdump prints them (time,
// summary and every byte, see TcpdumpPackets), one string each, in file
// order.
func Packets(t *testing.T, paths ...string) []string {
	t.Helper()
	var all []string
	for _, p := range paths {
		pk, err := TcpdumpPackets(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pk...)
	}
	return all
}

// SamePackets checks that the objects at paths hold the packets of the
// pcap file in, each exactly once, in any order: a batch redelivered after
// a crash or a failover may land in a later object than its neighbours.
// what, if not empty, says when in the error. It returns the number of
// packets in in.
func SamePackets(t *testing.T, in string, paths []string, what string) int {
	t.Helper()
	want, got := Packets(t, in), Packets(t, paths...)
	sort.Strings(want)
	sort.Strings(got)
	if what != "" {
		what = " " + what
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets%s (-input +objects):\n%s", what, diff)
	}
	return len(want)
}

// FlowSum is the packets and bytes of one conversation, each way.
type FlowSum struct{ OrigPackets, OrigBytes, RespPackets, RespBytes uint64 }

// FlowSums sums the flow rows per direction-agnostic 5-tuple, keyed as
// tshark prints conversations ("tcp 10.65.0.2:20000 10.96.0.10:80"), the
// client (the high port, in the test traffic) first.
func FlowSums(t *testing.T, conn driver.Conn) map[string]FlowSum {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT protocol, orig_addr, orig_port, resp_addr, resp_port,
		sum(orig_packets), sum(orig_bytes), sum(resp_packets), sum(resp_bytes)
		FROM flows FINAL GROUP BY protocol, orig_addr, orig_port, resp_addr, resp_port`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]FlowSum{}
	for rows.Next() {
		var proto uint8
		var oa, ra string
		var op, rp uint16
		var s FlowSum
		if err := rows.Scan(&proto, &oa, &op, &ra, &rp, &s.OrigPackets, &s.OrigBytes, &s.RespPackets, &s.RespBytes); err != nil {
			t.Fatal(err)
		}
		o, r := hostPort(oa, op), hostPort(ra, rp)
		if op < rp {
			// A record cut by a stop or shutdown can be continued by one
			// whose first packet came from the server: orient every record
			// client first, as tshark does.
			o, r = r, o
			s.OrigPackets, s.OrigBytes, s.RespPackets, s.RespBytes = s.RespPackets, s.RespBytes, s.OrigPackets, s.OrigBytes
		}
		k := fmt.Sprintf("%s %s %s", map[uint8]string{6: "tcp", 17: "udp"}[proto], o, r)
		prev := out[k]
		out[k] = FlowSum{prev.OrigPackets + s.OrigPackets, prev.OrigBytes + s.OrigBytes, prev.RespPackets + s.RespPackets, prev.RespBytes + s.RespBytes}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// hostPort writes a FixedString(16) address and a port as tshark prints
// them: IPv4 dotted, no brackets.
func hostPort(addr string, port uint16) string {
	ip := net.IP([]byte(addr))
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return ip.String() + ":" + strconv.Itoa(int(port))
}

// TsharkSums is what FlowSums should find for the pcap at path: tshark's
// conversations, the left endpoint (the client in the test traffic: it
// sent first) as the originator.
func TsharkSums(t *testing.T, path string) map[string]FlowSum {
	t.Helper()
	convs, err := TsharkConversations(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]FlowSum{}
	for _, c := range convs {
		out[fmt.Sprintf("%s %s %s", c.Proto, c.A, c.B)] = FlowSum{c.AtoBFrames, c.AtoBBytes, c.BtoAFrames, c.BtoABytes}
	}
	return out
}
