// Package file replays pcap and pcapng files as capture sources, at the
// recorded pace or as fast as they can be read, for tests, the demo and
// benchmarks. The capture filter runs in user space in golang.org/x/net/bpf's
// VM, so a replay selects exactly what a live capture with the same rules
// would.
package file

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/producer/source"
)

// Config configures replay.
type Config struct {
	// Files maps an interface name to the file replayed for it. An
	// interface not listed uses Default; with no Default it does not
	// exist (the capture waits for it).
	Files map[string]string `yaml:"files"`
	// Default is the file replayed for interfaces not in Files. Default
	// empty.
	Default string `yaml:"default"`
	// Paced replays at the recorded pace (gaps between timestamps are
	// slept); otherwise as fast as possible. Default false.
	Paced bool `yaml:"paced"`
	// Loop restarts the file at its end instead of ending the capture,
	// shifting timestamps so they keep increasing. Default false.
	Loop bool `yaml:"loop"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{}
}

// Validate checks the config.
func (c Config) Validate() error {
	for iface, path := range c.Files {
		if path == "" {
			return fmt.Errorf("file source: interface %s: empty path", iface)
		}
	}
	return nil
}

// Opener opens replays according to a Config.
type Opener struct {
	files       map[string]string // its own copy of Config.Files
	def         string
	paced, loop bool
}

// NewOpener checks cfg and keeps a copy: changing cfg.Files afterwards
// does not change what is replayed.
func NewOpener(cfg Config) (*Opener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Opener{files: maps.Clone(cfg.Files), def: cfg.Default, paced: cfg.Paced, loop: cfg.Loop}, nil
}

// Open implements source.Opener.
func (o *Opener) Open(opts source.Options) (source.Source, error) {
	path, ok := o.files[opts.Interface]
	if !ok {
		path = o.def
	}
	if path == "" {
		return nil, fmt.Errorf("open %s: %w (no file configured)", opts.Interface, source.ErrNoInterface)
	}
	var vm *bpf.VM
	if len(opts.Filter) > 0 {
		prog, ok := bpf.Disassemble(opts.Filter)
		if !ok {
			return nil, fmt.Errorf("open %s: %w: program does not disassemble", opts.Interface, source.ErrFilter)
		}
		var err error
		if vm, err = bpf.NewVM(prog); err != nil {
			return nil, fmt.Errorf("open %s: %w: %w", opts.Interface, source.ErrFilter, err)
		}
	}
	s := &Source{paced: o.paced, loop: o.loop, path: path, vm: vm, snap: opts.SnapLength}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// reader is what pcapgo's Reader and NgReader have in common.
type reader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// Source replays one file.
type Source struct {
	paced    bool
	loop     bool
	path     string
	vm       *bpf.VM
	snap     int
	f        *os.File
	r        reader
	linkType uint32

	first, last time.Time     // timestamps of the first and last packet of the file
	shift       time.Duration // added to timestamps, grows on each loop
	start       time.Time     // wall clock of the first packet, when paced

	// A paced packet read before it is due waits here.
	held     bool
	heldData []byte
	heldInfo source.Info
	due      time.Time

	mu      sync.Mutex // guards packets for Stats
	packets uint64
}

var ngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

func (s *Source) open() error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open replay %s: %w", s.path, err)
	}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		f.Close()
		return fmt.Errorf("read replay %s: %w", s.path, err)
	}
	if bytes.Equal(magic, ngMagic) {
		r, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			f.Close()
			return fmt.Errorf("read pcapng %s: %w", s.path, err)
		}
		s.r, s.linkType = r, uint32(r.LinkType())
	} else {
		r, err := pcapgo.NewReader(br)
		if err != nil {
			f.Close()
			return fmt.Errorf("read pcap %s: %w", s.path, err)
		}
		s.r, s.linkType = r, uint32(r.LinkType())
	}
	s.f = f
	return nil
}

// maxSleep bounds one wait for a paced packet, so Read returns
// source.ErrTimeout regularly through long gaps in the recording and the
// caller can flush and notice cancellation.
const maxSleep = 100 * time.Millisecond

// Read implements source.Source.
func (s *Source) Read() ([]byte, source.Info, error) {
	for {
		if s.held {
			if d := time.Until(s.due); d > 0 {
				time.Sleep(min(d, maxSleep))
				if time.Until(s.due) > 0 {
					return nil, source.Info{}, source.ErrTimeout
				}
			}
			s.held = false
			return s.deliver(s.heldData, s.heldInfo)
		}
		data, ci, err := s.r.ZeroCopyReadPacketData()
		if errors.Is(err, io.EOF) && s.loop && !s.first.IsZero() {
			s.f.Close()
			if err := s.open(); err != nil {
				return nil, source.Info{}, err
			}
			// One microsecond after the last packet, so time never
			// goes backwards across loops.
			s.shift += s.last.Sub(s.first) + time.Microsecond
			continue
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF // a file cut by a crashed writer ends there
			}
			return nil, source.Info{}, err
		}
		if s.first.IsZero() {
			s.first = ci.Timestamp
		}
		s.last = ci.Timestamp
		if s.vm != nil {
			n, err := s.vm.Run(data)
			if err != nil {
				return nil, source.Info{}, fmt.Errorf("filter: %w", err)
			}
			if n == 0 {
				continue
			}
			if n < len(data) {
				data = data[:n]
			}
		}
		if s.snap > 0 && len(data) > s.snap {
			data = data[:s.snap]
		}
		info := source.Info{Timestamp: ci.Timestamp.Add(s.shift), Length: max(ci.Length, len(data))}
		if s.paced {
			if s.start.IsZero() {
				s.start = time.Now()
			}
			s.due = s.start.Add(info.Timestamp.Sub(s.first))
			if time.Until(s.due) > 0 {
				// Not due yet: keep a copy (the reader reuses its
				// buffer) and wait for it above.
				s.heldData = append(s.heldData[:0], data...)
				s.heldInfo, s.held = info, true
				continue
			}
		}
		return s.deliver(data, info)
	}
}

func (s *Source) deliver(data []byte, info source.Info) ([]byte, source.Info, error) {
	s.mu.Lock()
	s.packets++
	s.mu.Unlock()
	return data, info, nil
}

// Stats implements source.Source; a file never drops.
func (s *Source) Stats() (source.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return source.Stats{Packets: s.packets}, nil
}

// LinkType implements source.Source.
func (s *Source) LinkType() uint32 { return s.linkType }

// Paced implements source.Source.
func (s *Source) Paced() bool { return s.paced }

// Close implements source.Source.
func (s *Source) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
