package testenv

import (
	"bytes"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/capstream/capstream/schemas"
)

// Record is a whole frame of data captured at ts, for PcapBytes.
func Record(ts time.Time, data []byte) PcapRecord {
	return PcapRecord{Data: data, Info: gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}}
}

// PcapBytes is a nanosecond Ethernet pcap file holding recs, with the
// header the pcap sink writes (snap length schemas.MaxSnapLength).
func PcapBytes(t testing.TB, recs ...PcapRecord) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(schemas.MaxSnapLength, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.WritePacket(r.Info, r.Data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}
