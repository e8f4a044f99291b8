// Package filter compiles PacketCapture filter rules (schemas.Filter) into a
// classic BPF socket filter for Ethernet frames, the program the producer
// attaches to its AF_PACKET sockets with SetBPF and runs in user space
// (golang.org/x/net/bpf's VM) over replayed files.
//
// Semantics, for a frame that is untagged or carries one 802.1Q tag
// (EtherType 0x8100; the kernel usually strips the tag before the filter
// sees the frame, and a tag left in the frame is skipped):
//
//   - Rules are OR'ed. Within a rule the protocol AND any of the ports must
//     match. No rules, or a rule with neither protocol nor ports, accepts
//     every frame, IP or not.
//   - Otherwise only IPv4 and IPv6 packets can match. The protocol is
//     compared with the IPv4 protocol field and with the IPv6 fixed header's
//     Next Header. IPv6 extension headers are not walked: a packet whose
//     first Next Header is an extension header matches only a rule naming
//     that header's number (or one without protocol and ports). A classic
//     BPF program can only unroll a bounded walk, and a partial walk would
//     make the rule mean different things for different packets.
//   - A port matches the source or the destination port. Ports exist only
//     for TCP, UDP, SCTP and UDPLite; a port rule without protocol means any
//     of those four. IPv4 non-first fragments carry no L4 header, so they
//     never match a rule with ports (as with tcpdump's "port 80"); they do
//     match a protocol-only rule. IPv4 options are honoured (the L4 offset
//     comes from the IHL).
//   - Accepted frames are cut to the snap length by the program's return
//     value, so the kernel copies no more than that into the ring.
//
// A rule set that does not fit the kernel's limit of 4096 instructions is
// refused with ErrTooComplex rather than replaced by a wider filter.
package filter

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/schemas"
)

// MaxInstructions is the kernel's BPF_MAXINSNS for classic socket filters.
const MaxInstructions = 4096

// ErrTooComplex marks a rule set whose program exceeds MaxInstructions.
var ErrTooComplex = errors.New("filter too complex for a classic BPF program")

// EtherTypes and offsets in an Ethernet frame.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	ethHeaderLen  = 14
	vlanTagLen    = 4
	ipv6HeaderLen = 40
)

// HeaderBytes is the most bytes of a frame a compiled program reads: a
// VLAN tag, IPv4 with 40 bytes of options and the two ports (IPv6 ports sit
// earlier). A frame cut to HeaderBytes or more gets the verdict of the
// whole frame, which is what lets the producer re-run a capture's program
// in user space on packets a shared socket already cut to the union's snap
// length.
const HeaderBytes = ethHeaderLen + vlanTagLen + 60 + 4

// portProtocols are the protocols whose header starts with 16-bit ports.
var portProtocols = []uint8{schemas.ProtocolTCP, schemas.ProtocolUDP, schemas.ProtocolSCTP, schemas.ProtocolUDPLite}

// rule is a parsed schemas.Filter.
type rule struct {
	proto    int // -1 for any
	lo, hi   []uint16
	anyPorts bool // no port restriction
}

// Compile returns the BPF program for rules on Ethernet frames, keeping at
// most snapLen bytes of each accepted frame. Rules are validated with the
// same parsers as schemas; errors wrap schemas.ErrMalformed or
// ErrTooComplex.
func Compile(rules []schemas.Filter, snapLen uint32) ([]bpf.Instruction, error) {
	if snapLen == 0 || snapLen > schemas.MaxSnapLength {
		return nil, fmt.Errorf("compile filter: snap length %d: want 1 to %d", snapLen, schemas.MaxSnapLength)
	}
	parsed := make([]rule, 0, len(rules))
	for i, f := range rules {
		r, err := parseRule(f)
		if err != nil {
			return nil, fmt.Errorf("compile filter %d: %w", i, err)
		}
		if r.proto < 0 && r.anyPorts {
			// An empty rule matches everything, and OR with everything
			// is everything.
			return []bpf.Instruction{bpf.RetConstant{Val: snapLen}}, nil
		}
		parsed = append(parsed, r)
	}
	if len(parsed) == 0 {
		return []bpf.Instruction{bpf.RetConstant{Val: snapLen}}, nil
	}
	c := &compiler{snap: snapLen}
	// Untagged frames first; a tagged frame jumps to the same code with the
	// L3 offset moved by the tag.
	c.emit(bpf.LoadAbsolute{Off: 12, Size: 2})
	c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeVLAN, SkipTrue: 1})
	toUntagged := c.jump()
	// Tagged.
	c.emit(bpf.LoadAbsolute{Off: 16, Size: 2})
	c.body(parsed, ethHeaderLen+vlanTagLen)
	c.label(toUntagged)
	c.emit(bpf.LoadAbsolute{Off: 12, Size: 2})
	c.body(parsed, ethHeaderLen)
	if len(c.prog) > MaxInstructions {
		return nil, fmt.Errorf("compile filter: %w: %d instructions, limit %d", ErrTooComplex, len(c.prog), MaxInstructions)
	}
	return c.prog, nil
}

// Assemble compiles rules like Compile and assembles the program for SetBPF.
func Assemble(rules []schemas.Filter, snapLen uint32) ([]bpf.RawInstruction, error) {
	prog, err := Compile(rules, snapLen)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	return raw, nil
}

func parseRule(f schemas.Filter) (rule, error) {
	r := rule{proto: -1, anyPorts: len(f.Ports) == 0}
	if f.Protocol != "" {
		p, err := schemas.ParseProtocol(f.Protocol)
		if err != nil {
			return rule{}, err
		}
		r.proto = int(p)
	}
	if len(f.Ports) > 0 && r.proto >= 0 && !schemas.ProtocolHasPorts(uint8(r.proto)) {
		return rule{}, fmt.Errorf("%w: ports with protocol %q, which has no ports", schemas.ErrMalformed, f.Protocol)
	}
	for _, p := range f.Ports {
		lo, hi, err := schemas.ParsePortRange(p)
		if err != nil {
			return rule{}, err
		}
		r.lo, r.hi = append(r.lo, lo), append(r.hi, hi)
	}
	return r, nil
}

// compiler emits instructions. Conditional jumps only ever skip a few
// instructions (their offsets are 8 bits); anything farther goes through an
// unconditional Jump, whose offset is patched when its label is placed.
type compiler struct {
	prog []bpf.Instruction
	snap uint32
}

func (c *compiler) emit(in ...bpf.Instruction) { c.prog = append(c.prog, in...) }

// jump emits an unconditional jump to a label placed later and returns the
// jump's index for label.
func (c *compiler) jump() int {
	c.prog = append(c.prog, bpf.Jump{})
	return len(c.prog) - 1
}

// label points the jumps at indices from to the next instruction.
func (c *compiler) label(from ...int) {
	for _, i := range from {
		c.prog[i] = bpf.Jump{Skip: uint32(len(c.prog) - i - 1)}
	}
}

func (c *compiler) accept() { c.emit(bpf.RetConstant{Val: c.snap}) }

// body emits the rules for a frame whose EtherType is in A and whose L3
// header starts at l3. It ends in a return on every path.
func (c *compiler) body(rules []rule, l3 uint32) {
	c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipFalse: 1})
	toV4 := c.jump()
	c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv6, SkipFalse: 1})
	toV6 := c.jump()
	c.emit(bpf.RetConstant{Val: 0})

	c.label(toV4)
	for _, r := range rules {
		c.ipv4Rule(r, l3)
	}
	c.emit(bpf.RetConstant{Val: 0})

	c.label(toV6)
	for _, r := range rules {
		c.ipv6Rule(r, l3)
	}
	c.emit(bpf.RetConstant{Val: 0})
}

// protoCheck emits a test of the protocol byte at off: on mismatch it jumps
// to the returned jumps (the next rule), on match it falls through.
func (c *compiler) protoCheck(r rule, off uint32) []int {
	c.emit(bpf.LoadAbsolute{Off: off, Size: 1})
	if r.proto >= 0 {
		c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(r.proto), SkipTrue: 1})
		return []int{c.jump()}
	}
	// Ports without protocol: any protocol that has ports. Each match
	// skips the remaining tests and the jump to the next rule.
	n := len(portProtocols)
	for i, p := range portProtocols {
		c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p), SkipTrue: uint8(n - i)})
	}
	return []int{c.jump()}
}

func (c *compiler) ipv4Rule(r rule, l3 uint32) {
	c.rule(r, l3+9, func() []int {
		// Fragment offset non-zero: no L4 header in this packet.
		c.emit(bpf.LoadAbsolute{Off: l3 + 6, Size: 2})
		c.emit(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipFalse: 1})
		fragment := c.jump()
		c.emit(bpf.LoadMemShift{Off: l3})
		c.ports(r, func(off uint32) bpf.Instruction { return bpf.LoadIndirect{Off: l3 + off, Size: 2} })
		return []int{fragment}
	})
}

func (c *compiler) ipv6Rule(r rule, l3 uint32) {
	l4 := l3 + ipv6HeaderLen
	c.rule(r, l3+6, func() []int {
		c.ports(r, func(off uint32) bpf.Instruction { return bpf.LoadAbsolute{Off: l4 + off, Size: 2} })
		return nil
	})
}

// rule emits one rule whose protocol byte is at protoOff: the protocol
// test, then, unless any port will do, the port tests l4 emits (it returns
// its own jumps to the next rule). Every miss lands after the rule.
func (c *compiler) rule(r rule, protoOff uint32, l4 func() []int) {
	next := c.protoCheck(r, protoOff)
	if r.anyPorts {
		c.accept()
		c.label(next...)
		return
	}
	next = append(next, l4()...)
	c.label(append(next, c.jump())...)
}

// ports emits, for each range, a test of the source and the destination
// port that returns accept on a match and falls through otherwise.
func (c *compiler) ports(r rule, load func(off uint32) bpf.Instruction) {
	for i := range r.lo {
		for _, off := range []uint32{0, 2} {
			c.emit(load(off))
			c.portRange(r.lo[i], r.hi[i])
		}
	}
}

// portRange tests A against [lo, hi]: accept on a match, fall through past
// the accept otherwise.
func (c *compiler) portRange(lo, hi uint16) {
	switch {
	case lo == 0 && hi == 0xffff:
		c.accept()
	case lo == hi:
		c.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(lo), SkipFalse: 1})
		c.accept()
	case lo == 0:
		c.emit(bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(hi), SkipTrue: 1})
		c.accept()
	default:
		c.emit(bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(lo), SkipFalse: 2})
		c.emit(bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(hi), SkipTrue: 1})
		c.accept()
	}
}
