package pcapmerge

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func pcapOf(t *testing.T, link layers.LinkType, nanos bool, stamps ...int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w *pcapgo.Writer
	if nanos {
		w = pcapgo.NewWriterNanos(&buf)
	} else {
		w = pcapgo.NewWriter(&buf)
	}
	if err := w.WriteFileHeader(65535, link); err != nil {
		t.Fatal(err)
	}
	for _, ns := range stamps {
		data := []byte{byte(ns), byte(ns >> 8), 0xaa}
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, ns), CaptureLength: len(data), Length: len(data) + 10}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func readAll(t *testing.T, b []byte) ([]int64, []int) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var stamps []int64
	var lens []int
	for {
		_, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return stamps, lens
		}
		if err != nil {
			t.Fatal(err)
		}
		stamps = append(stamps, ci.Timestamp.UnixNano())
		lens = append(lens, ci.Length)
	}
}

func TestMergeOrdersByTime(t *testing.T) {
	a := pcapOf(t, layers.LinkTypeEthernet, true, 1_000_000_001, 1_000_000_005, 1_000_000_009)
	b := pcapOf(t, layers.LinkTypeEthernet, true, 1_000_000_002, 1_000_000_003)
	c := pcapOf(t, layers.LinkTypeEthernet, false, 1_000_004_000) // microsecond pcap
	empty := pcapOf(t, layers.LinkTypeEthernet, true)
	var out bytes.Buffer
	st, err := Merge(&out, []Input{{"a", bytes.NewReader(a)}, {"b", bytes.NewReader(b)}, {"c", bytes.NewReader(c)}, {"empty", bytes.NewReader(empty)}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 6 {
		t.Errorf("merged %d packets, want 6", st.Packets)
	}
	stamps, lens := readAll(t, out.Bytes())
	want := []int64{1_000_000_001, 1_000_000_002, 1_000_000_003, 1_000_000_005, 1_000_000_009, 1_000_004_000}
	if diff := cmp.Diff(want, stamps); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	for _, l := range lens {
		if l != 13 {
			t.Errorf("original length %d, want 13 kept", l)
		}
	}
}

func TestMergeErrors(t *testing.T) {
	eth := pcapOf(t, layers.LinkTypeEthernet, true, 1)
	raw := pcapOf(t, layers.LinkTypeRaw, true, 2)
	cases := map[string][]Input{
		"link mismatch": {{"eth", bytes.NewReader(eth)}, {"raw", bytes.NewReader(raw)}},
		"not a pcap":    {{"garbage", bytes.NewReader([]byte("this is not a pcap file at all"))}},
		"truncated":     {{"cut", bytes.NewReader(eth[:len(eth)-2])}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Merge(io.Discard, in)
			if err == nil {
				t.Fatal("merge succeeded")
			}
			if name == "link mismatch" && !errors.Is(err, ErrLinkTypeMismatch) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func FuzzMerge(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		_, _ = Merge(io.Discard, []Input{{"a", bytes.NewReader(a)}, {"b", bytes.NewReader(b)}})
	})
}
