package main

// The replayed workload as the producer reads it: the throughput capture as
// fast as the file source goes, the latency capture at its recorded pace
// with the wall time of each marker packet noted as it is read.

import (
	"sync"
	"time"

	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/producer/source/file"
)

// markerClock records when the producer read each latency marker.
type markerClock struct {
	markers map[int]uint16
	mu      sync.Mutex
	read    map[uint16]time.Time
}

func newMarkerClock(markers map[int]uint16) *markerClock {
	return &markerClock{markers: markers, read: map[uint16]time.Time{}}
}

func (m *markerClock) readAt(port uint16) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.read[port]
	return t, ok
}

// benchOpener replays the workload as fast as possible on throughputIf
// and the latency capture at its recorded pace on latencyIf, timing the
// markers of the latter as the producer reads them.
type benchOpener struct {
	fast, paced *file.Opener
	marks       *markerClock
}

// Open implements source.Opener.
func (o *benchOpener) Open(opts source.Options) (source.Source, error) {
	if opts.Interface != latencyIf {
		return o.fast.Open(opts)
	}
	s, err := o.paced.Open(opts)
	if err != nil {
		return nil, err
	}
	return &markedSource{Source: s, marks: o.marks}, nil
}

// markedSource notes the wall time at which each marker packet is handed
// to the producer: the start of its end-to-end latency.
type markedSource struct {
	source.Source
	marks *markerClock
	n     int
}

// Read implements source.Source.
func (s *markedSource) Read() ([]byte, source.Info, error) {
	data, info, err := s.Source.Read()
	if err == nil {
		if port, ok := s.marks.markers[s.n]; ok {
			s.marks.mu.Lock()
			s.marks.read[port] = time.Now()
			s.marks.mu.Unlock()
		}
		s.n++
	}
	return data, info, err
}
