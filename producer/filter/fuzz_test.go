package filter

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/schemas"
)

// reference is the filter semantics written plainly in Go, which the
// compiled program must agree with on every frame. It reads fields in the
// program's order because a classic BPF load past the end of the frame
// ends the program with "drop", whatever later rules would have said;
// the kernel only ever shows the filter whole frames, so this matters for
// malformed input only.
func reference(rules []schemas.Filter, frame []byte) (match bool) {
	if len(rules) == 0 {
		return true
	}
	for _, f := range rules {
		if f.Protocol == "" && len(f.Ports) == 0 {
			return true
		}
	}
	type short struct{}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(short); !ok {
				panic(r)
			}
			match = false
		}
	}()
	u8 := func(off int) uint8 {
		if off+1 > len(frame) {
			panic(short{})
		}
		return frame[off]
	}
	u16 := func(off int) uint16 {
		if off+2 > len(frame) {
			panic(short{})
		}
		return binary.BigEndian.Uint16(frame[off:])
	}
	l3 := 14
	etype := u16(12)
	if etype == 0x8100 {
		l3, etype = 18, u16(16)
	}
	v6 := false
	switch etype {
	case 0x0800:
	case 0x86dd:
		v6 = true
	default:
		return false
	}
	for _, f := range rules {
		var proto uint8
		if v6 {
			proto = u8(l3 + 6)
		} else {
			proto = u8(l3 + 9)
		}
		if f.Protocol != "" {
			p, _ := schemas.ParseProtocol(f.Protocol)
			if p != proto {
				continue
			}
		} else if !schemas.ProtocolHasPorts(proto) {
			continue
		}
		if len(f.Ports) == 0 {
			return true
		}
		l4 := l3 + 40
		if !v6 {
			if u16(l3+6)&0x1fff != 0 {
				continue // non-first fragment: no ports
			}
			l4 = l3 + int(u8(l3)&0xf)*4
		}
		for _, port := range f.Ports {
			lo, hi, _ := schemas.ParsePortRange(port)
			if lo == 0 && hi == 0xffff {
				return true
			}
			if sp := u16(l4); sp >= lo && sp <= hi {
				return true
			}
			if dp := u16(l4 + 2); dp >= lo && dp <= hi {
				return true
			}
		}
	}
	return false
}

var fuzzProtocols = []string{"", "TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite", "47", "0"}

// FuzzCompile checks the compiled program against reference on arbitrary
// frames and rules built from the fuzzer's bytes. A packet the BPF VM
// cannot fully read (truncated) is dropped by the kernel; reference
// agrees because it bounds-checks the same fields.
func FuzzCompile(f *testing.F) {
	f.Add(uint8(1), uint16(80), uint16(80), uint8(2), uint16(53), uint16(60), []byte{})
	f.Add(uint8(0), uint16(0), uint16(65535), uint8(3), uint16(0), uint16(0), make([]byte, 80))
	for i, p := range []pkt{tcp80, v6(udp53), vlan(tcp443), frag(udp80), opts(tcp80), icmp4, icmp6, sctp80, ext(udp53), vlan(v6(tcp80))} {
		f.Add(uint8(i)|0x80, uint16(50), uint16(90), uint8(i+1)|0x80, uint16(53), uint16(53), build(f, p))
	}
	f.Fuzz(func(t *testing.T, p1 uint8, lo1, hi1 uint16, p2 uint8, lo2, hi2 uint16, frame []byte) {
		mk := func(p uint8, lo, hi uint16) schemas.Filter {
			r := schemas.Filter{Protocol: fuzzProtocols[int(p)%len(fuzzProtocols)]}
			if lo > hi {
				lo, hi = hi, lo
			}
			proto, _ := schemas.ParseProtocol(r.Protocol)
			if p&0x80 != 0 && (r.Protocol == "" || schemas.ProtocolHasPorts(proto)) {
				r.Ports = []string{portString(lo, hi)}
			}
			return r
		}
		rules := []schemas.Filter{mk(p1, lo1, hi1), mk(p2, lo2, hi2)}
		prog, err := Compile(rules, 1000)
		if err != nil {
			t.Fatalf("Compile(%v): %v", rules, err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(frame)
		// The VM returns an error or 0 for a read past the end; the
		// kernel drops such a frame.
		got := err == nil && n > 0
		if want := reference(rules, frame); got != want {
			t.Fatalf("rules %v frame %x: program %v, reference %v", rules, frame, got, want)
		}
		// A frame cut to HeaderBytes gets the whole frame's verdict (the
		// producer re-filters packets a shared socket cut that short).
		if len(frame) > HeaderBytes {
			n, err := vm.Run(frame[:HeaderBytes])
			if cut := err == nil && n > 0; cut != got {
				t.Fatalf("rules %v frame %x: %v whole, %v cut to %d bytes", rules, frame, got, cut, HeaderBytes)
			}
		}
	})
}

func portString(lo, hi uint16) string {
	if lo == hi {
		return itoa(lo)
	}
	return itoa(lo) + ":" + itoa(hi)
}

func itoa(v uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
