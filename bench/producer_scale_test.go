package main

import (
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
)

// TestProducerScale runs the producer scale phase small (20 interfaces,
// 3 captures, a budget of 16 of them), so `go test` notices when it breaks:
// one ring per open interface within the budget, the rest waiting, every
// capture getting every packet of every open interface.
func TestProducerScale(t *testing.T) {
	testenv.RequireRoot(t) // network namespaces and AF_PACKET
	o := phaseOptions(t, time.Minute)
	o.ScaleInterfaces, o.ScaleCaptures = 20, 3
	o.ScaleRingBytes, o.ScaleMaxRingBytes = 1<<20, 16<<20
	o.ScaleIdle = 500 * time.Millisecond
	r := runPhase(t, o, runProducerScale)
	if len(r.Problems) > 0 {
		t.Errorf("problems: %v", r.Problems)
	}
	if r.Sockets != 16 || r.Waiting != 4 || r.RingInUse != 16<<20 || r.Subscribers != 60 {
		t.Errorf("%v sockets, %d waiting, %v ring bytes, %v subscriptions; want 16, 4, %d, 60", r.Sockets, r.Waiting, r.RingInUse, r.Subscribers, 16<<20)
	}
	if r.PeakRSS <= 0 || r.CPU <= 0 {
		t.Errorf("peak RSS %d, CPU %s: not measured", r.PeakRSS, r.CPU)
	}
}
