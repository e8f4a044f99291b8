package sinktest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

var (
	largeMu   sync.Mutex
	largePkts []Packet
	largePath string
)

// Large returns a bigger capture for benchmarks, about rounds*50 packets of
// mostly full-size TCP segments plus DNS, TLS and UDP, and the path of the
// same packets as a pcap file for the reference tools. The packets are
// built once per process; the file, in os.TempDir, is written again if
// CleanupLarge removed it (a benchmark run with -count above 1).
func Large(rounds int) ([]Packet, string, error) {
	largeMu.Lock()
	defer largeMu.Unlock()
	if largePkts == nil {
		g := Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), rounds, 20000)
		g.Step = 10 * time.Microsecond
		largePkts = g.Pkts
		// Named by size and process: benchmarks of several packages run
		// in parallel and must not write each other's file.
		largePath = filepath.Join(os.TempDir(), fmt.Sprintf("capstream-sink-bench-%d-%d.pcap", rounds, os.Getpid()))
	}
	if _, err := os.Stat(largePath); err == nil {
		return largePkts, largePath, nil
	}
	if err := WritePcap(largePath, largePkts); err != nil {
		return nil, "", err
	}
	return largePkts, largePath, nil
}

// CleanupLarge removes the file Large wrote; call it at the end of the
// benchmark.
func CleanupLarge() {
	largeMu.Lock()
	defer largeMu.Unlock()
	if largePath != "" {
		_ = os.Remove(largePath)
	}
}
