// Package afpacket captures live packets with AF_PACKET TPACKET_V3 through
// github.com/gopacket/gopacket/afpacket (pure Go, no cgo). Reads are zero
// copy: Read returns a slice of the ring, which the producer copies once
// into its batch before the next Read releases the frame to the kernel.
package afpacket

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/internal/netns"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

// Config configures the capture rings.
type Config struct {
	// RingBytes is the ring size per captured interface, in bytes, rounded
	// down to whole blocks. Default 32 MiB.
	RingBytes int `yaml:"ringBytes"`
	// BlockBytes is the TPACKET_V3 block size in bytes, a multiple of the
	// page size. It must hold the largest frame: veth GRO delivers frames
	// of up to 64 KiB. Default 1 MiB.
	BlockBytes int `yaml:"blockBytes"`
	// BlockTimeout is how long the kernel keeps a partly filled block
	// before handing it over, which bounds the latency a quiet interface
	// adds. Default 50ms.
	BlockTimeout time.Duration `yaml:"blockTimeout"`
	// PollTimeout is how long Read waits for a block before returning
	// source.ErrTimeout, so the caller can flush and notice cancellation.
	// Default 100ms.
	PollTimeout time.Duration `yaml:"pollTimeout"`
	// NetNS, when set, is the path of a network namespace (e.g.
	// /var/run/netns/node) in which interfaces are looked up and sockets
	// opened; empty means the producer's own namespace, which for the
	// DaemonSet (hostNetwork) is the node's.
	NetNS string `yaml:"netns"`
}

// frameBytes is TPACKET_V3's nominal frame size; V3 packs frames of any
// size into blocks, so it only matters for the ring geometry.
const frameBytes = 1 << 16

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		RingBytes:    32 << 20,
		BlockBytes:   1 << 20,
		BlockTimeout: 50 * time.Millisecond,
		PollTimeout:  100 * time.Millisecond,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	var errs []error
	page := os.Getpagesize()
	if c.BlockBytes < frameBytes || c.BlockBytes%page != 0 || c.BlockBytes%frameBytes != 0 {
		errs = append(errs, fmt.Errorf("afpacket block bytes %d: want a multiple of %d (64 KiB frames)", c.BlockBytes, frameBytes))
	}
	if c.RingBytes < c.BlockBytes {
		errs = append(errs, fmt.Errorf("afpacket ring bytes %d: want at least one block (%d)", c.RingBytes, c.BlockBytes))
	}
	if c.BlockTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("afpacket block timeout %s: want at least 1ms", c.BlockTimeout))
	}
	if c.PollTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("afpacket poll timeout %s: want at least 1ms", c.PollTimeout))
	}
	return errors.Join(errs...)
}

// Opener opens AF_PACKET sockets.
type Opener struct {
	cfg Config
}

// NewOpener checks cfg; it opens nothing.
func NewOpener(cfg Config) (*Opener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Opener{cfg: cfg}, nil
}

// ShareKey implements source.Sharer: a socket is one interface of the
// opener's network namespace, whoever reads it.
func (o *Opener) ShareKey(iface string) string { return o.cfg.NetNS + "/" + iface }

// Open implements source.Opener: it binds a TPACKET_V3 socket to the
// interface and attaches the filter before the first packet is read, so
// nothing outside the filter ever reaches the ring.
func (o *Opener) Open(opts source.Options) (source.Source, error) {
	var tp *afpacket.TPacket
	err := inNetNS(o.cfg.NetNS, func() error {
		if _, err := net.InterfaceByName(opts.Interface); err != nil {
			return fmt.Errorf("open %s: %w: %w", opts.Interface, source.ErrNoInterface, err)
		}
		var err error
		tp, err = afpacket.NewTPacket(
			afpacket.OptInterface(opts.Interface),
			afpacket.TPacketVersion3,
			afpacket.OptFrameSize(frameBytes),
			afpacket.OptBlockSize(o.cfg.BlockBytes),
			afpacket.OptNumBlocks(o.cfg.RingBytes/o.cfg.BlockBytes),
			afpacket.OptBlockTimeout(o.cfg.BlockTimeout),
			afpacket.OptPollTimeout(o.cfg.PollTimeout),
		)
		if err != nil {
			return fmt.Errorf("open %s: %w", opts.Interface, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := &Source{tp: tp, iface: opts.Interface, netns: o.cfg.NetNS, snap: opts.SnapLength}
	if len(opts.Filter) > 0 {
		// gopacket binds the socket before a filter can be attached, so
		// packets that arrive until SetBPF returns reach the ring
		// unfiltered. They are filtered again in user space: every
		// packet stamped before the attach (plus a margin for the
		// stamp being taken just after the filter ran) goes through
		// the same program in the VM.
		prog, ok := bpf.Disassemble(opts.Filter)
		if !ok {
			tp.Close()
			return nil, fmt.Errorf("open %s: %w: program does not disassemble", opts.Interface, source.ErrFilter)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			tp.Close()
			return nil, fmt.Errorf("open %s: %w: %w", opts.Interface, source.ErrFilter, err)
		}
		if err := tp.SetBPF(opts.Filter); err != nil {
			tp.Close()
			return nil, fmt.Errorf("open %s: %w: %w", opts.Interface, source.ErrFilter, err)
		}
		s.vm, s.unfilteredUntil = vm, time.Now().Add(attachMargin)
	}
	return s, nil
}

// attachMargin covers the gap between the kernel running a socket's filter
// and stamping the packet.
const attachMargin = 10 * time.Millisecond

// inNetNS runs fn in the network namespace at path, or directly when path
// is empty. Sockets fn opens stay in that namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return netns.Do(path, fn)
}

// Source is a TPACKET_V3 socket bound to one interface.
type Source struct {
	tp    *afpacket.TPacket
	iface string
	netns string
	snap  int

	// vm re-filters packets stamped before unfilteredUntil (see Open).
	vm              *bpf.VM
	unfilteredUntil time.Time

	mu    sync.Mutex // serialises Stats and SetFilter with Close
	stats source.Stats
}

// Read implements source.Source.
func (s *Source) Read() ([]byte, source.Info, error) {
	for {
		data, info, err := s.read()
		if err != nil || s.vm == nil {
			return data, info, err
		}
		if !info.Timestamp.Before(s.unfilteredUntil) {
			s.vm = nil // from here on the kernel filtered everything
			return data, info, nil
		}
		if n, err := s.vm.Run(data); err == nil && n > 0 {
			return data[:min(n, len(data))], info, nil
		}
	}
}

func (s *Source) read() ([]byte, source.Info, error) {
	data, ci, err := s.tp.ZeroCopyReadPacketData()
	switch {
	case err == nil:
	case errors.Is(err, afpacket.ErrTimeout):
		return nil, source.Info{}, source.ErrTimeout
	case errors.Is(err, afpacket.ErrPoll):
		// POLLERR: the kernel unbinds the socket when its interface is
		// unregistered (ENETDOWN).
		return nil, source.Info{}, fmt.Errorf("read %s: %w", s.iface, source.ErrGone)
	default:
		if s.gone() {
			return nil, source.Info{}, fmt.Errorf("read %s: %w: %w", s.iface, source.ErrGone, err)
		}
		return nil, source.Info{}, fmt.Errorf("read %s: %w", s.iface, err)
	}
	if s.snap > 0 && len(data) > s.snap {
		data = data[:s.snap]
	}
	return data, source.Info{Timestamp: ci.Timestamp, Length: max(ci.Length, len(data))}, nil
}

// gone reports whether the interface no longer exists.
func (s *Source) gone() bool {
	return inNetNS(s.netns, func() error {
		_, err := net.InterfaceByName(s.iface)
		return err
	}) != nil
}

// Stats implements source.Source with the socket's counters, which the
// kernel resets on each read and gopacket accumulates.
func (s *Source) Stats() (source.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tp == nil {
		return s.stats, nil
	}
	_, v3, err := s.tp.SocketStats()
	if err != nil {
		return s.stats, fmt.Errorf("socket stats %s: %w", s.iface, err)
	}
	s.stats = source.Stats{Packets: uint64(v3.Packets()), Drops: uint64(v3.Drops())}
	return s.stats, nil
}

// LinkType implements source.Source: veths and NICs are Ethernet.
func (s *Source) LinkType() uint32 { return schemas.LinkTypeEthernet }

// Paced implements source.Source.
func (s *Source) Paced() bool { return true }

// SetFilter implements source.Refilterer: it replaces the socket's filter
// in place (SO_ATTACH_FILTER swaps it atomically in the kernel), or
// detaches it for an empty program.
func (s *Source) SetFilter(prog []bpf.RawInstruction) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tp == nil {
		return fmt.Errorf("set filter %s: source closed", s.iface)
	}
	if err := s.tp.SetBPF(prog); err != nil {
		return fmt.Errorf("set filter %s: %w: %w", s.iface, source.ErrFilter, err)
	}
	return nil
}

// Close implements source.Source.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tp != nil {
		s.tp.Close()
		s.tp = nil
	}
	return nil
}
