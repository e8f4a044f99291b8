package sinktest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

var (
	largeOnce sync.Once
	largePkts []Packet
	largePath string
	largeErr  error
)

// Large returns a bigger capture for benchmarks, about rounds*50 packets of
// mostly full-size TCP segments plus DNS, TLS and UDP, and the path of the
// same packets as a pcap file for the reference tools. It is built once per
// process in os.TempDir; CleanupLarge removes the file.
func Large(rounds int) ([]Packet, string, error) {
	largeOnce.Do(func() {
		g := Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), rounds, 20000)
		g.Step = 10 * time.Microsecond
		largePkts = g.Pkts
		// Named by size and process: benchmarks of several packages run
		// in parallel and must not write each other's file.
		largePath = filepath.Join(os.TempDir(), fmt.Sprintf("capstream-sink-bench-%d-%d.pcap", rounds, os.Getpid()))
		largeErr = WritePcap(largePath, largePkts)
	})
	return largePkts, largePath, largeErr
}

// CleanupLarge removes the file Large wrote; call it from TestMain or at the
// end of the benchmark.
func CleanupLarge() {
	if largePath != "" {
		_ = os.Remove(largePath)
	}
}
