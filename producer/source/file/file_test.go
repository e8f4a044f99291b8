package file

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/capstream/capstream/producer/filter"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// frames returns n Ethernet frames alternating UDP/53 and TCP/80, each
// with a payload of i bytes.
func frames(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
		var l4 gopacket.SerializableLayer
		if i%2 == 0 {
			ip.Protocol = layers.IPProtocolUDP
			u := &layers.UDP{SrcPort: 40000, DstPort: 53}
			_ = u.SetNetworkLayerForChecksum(ip)
			l4 = u
		} else {
			ip.Protocol = layers.IPProtocolTCP
			tc := &layers.TCP{SrcPort: 40000, DstPort: 80, ACK: true}
			_ = tc.SetNetworkLayerForChecksum(ip)
			l4 = tc
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, l4, gopacket.Payload(make([]byte, i))); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func write(t *testing.T, ng bool, fs [][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type pw interface {
		WritePacket(gopacket.CaptureInfo, []byte) error
	}
	var w pw
	if ng {
		nw, err := pcapgo.NewNgWriter(f, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		defer nw.Flush()
		w = nw
	} else {
		pw := pcapgo.NewWriterNanos(f)
		if err := pw.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
			t.Fatal(err)
		}
		w = pw
	}
	for i, d := range fs {
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(d), Length: len(d)}
		if err := w.WritePacket(ci, d); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

type got struct {
	Data string
	TS   time.Time
	Len  int
}

func readAll(t *testing.T, s source.Source) []got {
	t.Helper()
	var out []got
	for {
		d, info, err := s.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got{string(d), info.Timestamp.UTC(), info.Length})
	}
}

func TestReplay(t *testing.T) {
	fs := frames(t, 10)
	udpOnly, err := filter.Assemble([]schemas.Filter{{Protocol: "UDP"}}, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, ng := range []bool{false, true} {
		path := write(t, ng, fs)
		o, err := NewOpener(Config{Files: map[string]string{"eth0": path}})
		if err != nil {
			t.Fatal(err)
		}
		t.Run("all", func(t *testing.T) {
			s, err := o.Open(source.Options{Interface: "eth0", SnapLength: 1000})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var want []got
			for i, d := range fs {
				want = append(want, got{string(d), base.Add(time.Duration(i) * time.Millisecond), len(d)})
			}
			if diff := cmp.Diff(want, readAll(t, s)); diff != "" {
				t.Errorf("ng=%v (-want +got):\n%s", ng, diff)
			}
			if s.LinkType() != schemas.LinkTypeEthernet {
				t.Errorf("link type %d", s.LinkType())
			}
		})
		t.Run("filter and snap", func(t *testing.T) {
			s, err := o.Open(source.Options{Interface: "eth0", Filter: udpOnly, SnapLength: 50})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var want []got
			for i := 0; i < len(fs); i += 2 {
				want = append(want, got{string(fs[i][:min(50, len(fs[i]))]), base.Add(time.Duration(i) * time.Millisecond), len(fs[i])})
			}
			if diff := cmp.Diff(want, readAll(t, s)); diff != "" {
				t.Errorf("ng=%v (-want +got):\n%s", ng, diff)
			}
		})
		t.Run("missing interface", func(t *testing.T) {
			if _, err := o.Open(source.Options{Interface: "eth1"}); !errors.Is(err, source.ErrNoInterface) {
				t.Errorf("open eth1: %v, want ErrNoInterface", err)
			}
		})
	}
}

func TestReplayLongGap(t *testing.T) {
	fs := frames(t, 2)
	path := filepath.Join(t.TempDir(), "gap.pcap")
	f, _ := os.Create(path)
	w := pcapgo.NewWriterNanos(f)
	_ = w.WriteFileHeader(65536, layers.LinkTypeEthernet)
	_ = w.WritePacket(gopacket.CaptureInfo{Timestamp: base, CaptureLength: len(fs[0]), Length: len(fs[0])}, fs[0])
	_ = w.WritePacket(gopacket.CaptureInfo{Timestamp: base.Add(time.Hour), CaptureLength: len(fs[1]), Length: len(fs[1])}, fs[1])
	f.Close()
	o, _ := NewOpener(Config{Default: path, Paced: true})
	s, err := o.Open(source.Options{Interface: "any"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Read(); err != nil {
		t.Fatal(err)
	}
	// The next packet is an hour away: Read must come back meanwhile.
	start := time.Now()
	if _, _, err := s.Read(); !errors.Is(err, source.ErrTimeout) {
		t.Fatalf("Read: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Read blocked %v", d)
	}
}

func TestReplayLoopAndPace(t *testing.T) {
	fs := frames(t, 5)
	path := write(t, false, fs)
	o, _ := NewOpener(Config{Default: path, Loop: true, Paced: true})
	s, err := o.Open(source.Options{Interface: "any"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	var last time.Time
	for i := range 12 {
		_, info, err := s.Read()
		for errors.Is(err, source.ErrTimeout) {
			_, info, err = s.Read()
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !info.Timestamp.After(last) {
			t.Fatalf("packet %d: timestamp %v not after %v", i, info.Timestamp, last)
		}
		last = info.Timestamp
	}
	// 12 packets 1ms apart, the loop restarting 1µs after packet 4:
	// about 9ms of pacing.
	if d := time.Since(start); d < 8*time.Millisecond {
		t.Errorf("paced replay took %v", d)
	}
	st, _ := s.Stats()
	if st.Packets != 12 || !s.Paced() {
		t.Errorf("stats %+v paced %v", st, s.Paced())
	}
}
