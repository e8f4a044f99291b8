// Package source defines how the producer reads packets: one Source per
// captured interface, opened by an Opener. Implementations live in the
// subpackages afpacket (live capture) and file (pcap/pcapng replay), so a
// replayed file can stand in for a live interface in tests, the demo and
// benchmarks.
//
// A Source is used by one goroutine at a time: the producer's capture loop
// for that interface reads, polls Stats and finally calls Close. The one
// exception is a source from a Sharer: the producer shares it between every
// capture that selects its interface, and SetFilter and Stats may then be
// called from other goroutines while one reads.
package source

import (
	"errors"
	"time"

	"golang.org/x/net/bpf"
)

// Errors a Source or Opener returns; callers test them with errors.Is.
var (
	// ErrNoInterface: the interface does not exist (yet). The producer
	// waits and opens again, reporting WaitingForTraffic.
	ErrNoInterface = errors.New("interface not found")
	// ErrTimeout: no packet arrived within the source's poll timeout. It
	// gives the caller a chance to flush a batch and check its context.
	ErrTimeout = errors.New("no packet before poll timeout")
	// ErrGone: the interface went away while capturing. The producer
	// closes the source and waits for the interface to come back.
	ErrGone = errors.New("interface gone")
	// ErrFilter: the kernel refused the filter program. This is not
	// retried: the capture reports Error.
	ErrFilter = errors.New("attach filter")
)

// Info describes a read packet.
type Info struct {
	// Timestamp is when the packet was captured.
	Timestamp time.Time
	// Length is the packet's length on the wire (with GRO, the merged
	// frame's length, which may exceed the MTU).
	Length int
}

// Stats are cumulative counters of a source since it was opened.
type Stats struct {
	// Packets is what the kernel (or the file) handed to the filter and
	// accepted.
	Packets uint64
	// Drops is what the kernel dropped because the ring was full.
	Drops uint64
}

// Source reads packets from one interface.
type Source interface {
	// Read returns the next packet. data is only valid until the next
	// call of Read or Close (sources read in place where they can), and
	// is already cut to the snap length. Errors: ErrTimeout when idle,
	// ErrGone when the interface vanished, io.EOF at the end of a file.
	Read() (data []byte, info Info, err error)
	// Stats returns the counters so far.
	Stats() (Stats, error)
	// LinkType is the pcap link type of the packets.
	LinkType() uint32
	// Paced reports whether Read waits for packets to arrive (a live
	// interface, a file replayed at recorded pace) rather than returning
	// them as fast as they are read: an unpaced source can be made to wait
	// for publishing without losing anything, a paced one must not be.
	Paced() bool
	// Close releases the source.
	Close() error
}

// Options are what the producer asks of a source it opens.
type Options struct {
	// Interface is the interface to capture on.
	Interface string
	// Filter is the assembled BPF program (see producer/filter); empty
	// means all packets. A source must apply it, in the kernel or in user
	// space, and must fail rather than ignore it.
	Filter []bpf.RawInstruction
	// SnapLength is the most bytes kept per packet.
	SnapLength int
}

// Opener opens sources. It is shared by every capture of a producer and
// must be safe for concurrent use.
type Opener interface {
	Open(opts Options) (Source, error)
}

// Sharer is an Opener whose sources can serve several captures at once: a
// live interface, whose packets are the same whoever reads them (a replayed
// file is not: each capture replays it from the start). The producer then
// opens one source per key and fans its packets out to the captures, each
// filtering in user space with its own program; the sources it opens
// implement Refilterer.
type Sharer interface {
	Opener
	// ShareKey names the socket Open would open for iface (network
	// namespace and interface): two captures with the same key share one
	// source.
	ShareKey(iface string) string
}

// Refilterer is a source whose kernel filter can be replaced while it is
// read: a shared source's filter is the union of its captures' and changes
// as they come and go.
type Refilterer interface {
	// SetFilter replaces the filter program (empty: none, every packet
	// whole). Packets already in the ring were filtered by the previous
	// program. It is safe to call while another goroutine reads.
	SetFilter(prog []bpf.RawInstruction) error
}
