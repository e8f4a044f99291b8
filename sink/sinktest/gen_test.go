package sinktest

import (
	"os"
	"testing"
	"time"
)

func TestWriteSample(t *testing.T) {
	out := os.Getenv("SINKTEST_PCAP")
	if out == "" {
		t.Skip("SINKTEST_PCAP not set")
	}
	g := Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), 3, 5000)
	if err := WritePcap(out, g.Pkts); err != nil {
		t.Fatal(err)
	}
}
