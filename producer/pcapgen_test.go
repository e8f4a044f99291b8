package producer

import (
	"bufio"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/capstream/capstream/producer/source/file"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// genPcap writes n Ethernet frames of many IPv4/IPv6 TCP and UDP flows with
// mixed sizes (64 B to 9 KB, mostly small and MTU-sized) to path as a
// nanosecond pcap, spacing apart, and returns the frames' total bytes.
func genPcap(tb testing.TB, path string, n int, spacing time.Duration) int64 {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 10, 100, 200, 500, 1400, 1400, 1400, 8900}
	payload := make([]byte, 9000)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true}
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var total int64
	for i := range n {
		flow := rng.IntN(5000)
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, byte(flow >> 8), byte(flow)}, DstMAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}}
		var nl gopacket.SerializableLayer
		var proto layers.IPProtocol = layers.IPProtocolUDP
		if flow%3 == 0 {
			proto = layers.IPProtocolTCP
		}
		if flow%5 == 0 {
			eth.EthernetType = layers.EthernetTypeIPv6
			nl = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
		} else {
			eth.EthernetType = layers.EthernetTypeIPv4
			nl = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.IPv4(10, 1, byte(flow>>8), byte(flow)), DstIP: net.IPv4(10, 2, 0, 1)}
		}
		var l4 gopacket.SerializableLayer
		if proto == layers.IPProtocolTCP {
			l4 = &layers.TCP{SrcPort: layers.TCPPort(10000 + flow), DstPort: 443, ACK: true, Seq: uint32(i)}
		} else {
			l4 = &layers.UDP{SrcPort: layers.UDPPort(10000 + flow), DstPort: 53}
		}
		size := sizes[rng.IntN(len(sizes))]
		if err := gopacket.SerializeLayers(buf, opts, eth, nl, l4, gopacket.Payload(payload[:size])); err != nil {
			tb.Fatal(err)
		}
		data := buf.Bytes()
		ci := gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * spacing), CaptureLength: len(data), Length: len(data)}
		if err := w.WritePacket(ci, data); err != nil {
			tb.Fatal(err)
		}
		total += int64(len(data))
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	return total
}

func fileConfig(files map[string]string, paced, loop bool) file.Config {
	c := file.DefaultConfig()
	c.Files, c.Paced, c.Loop = files, paced, loop
	return c
}
