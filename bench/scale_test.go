package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
)

// TestMain lets the test binary be a floor consumer too: the sinks' scale
// runs start this executable in that mode (floor_child.go).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == floorChildArg {
		os.Exit(runFloorChild(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestScale runs -scale small: the router on 10 nodes, 60 pods and 6
// captures, the producer on 6 interfaces under 2 captures, the sinks and
// the floor at 1 and 10 interfaces on 3000 packets. Every packet must be
// stored at both sizes, every label change reach the bus, every selected
// packet be captured, and every figure of the report be there; the
// figures themselves are not judged.
func TestScale(t *testing.T) {
	testenv.RequireRoot(t) // the producer part: network namespaces, AF_PACKET
	db, bucket := testenv.ClickHouse(t), testenv.S3(t)
	o := kubePhaseOptions(t)
	o.Database, o.Bucket = db.Database, bucket.Bucket
	o.RouterScaleNodes, o.RouterScalePods, o.RouterScaleCaptures, o.RouterScaleChanges = 10, 60, 6, 5
	routerScaleChangeWait = 5 * time.Second
	o.ScaleInterfaces, o.ScaleCaptures, o.ScalePacketsPerIface = 6, 2, 50
	o.ScaleRingBytes, o.ScaleMaxRingBytes = 1<<20, 8<<20
	o.ScaleIdle = 300 * time.Millisecond
	o.ScaleSizes, o.ScalePackets = []int{1, 10}, 3000
	r := runPhase(t, o, runScale)
	if len(r.Problems) > 0 {
		t.Errorf("problems: %v", r.Problems)
	}
	if len(r.Sinks) != 2 {
		t.Fatalf("%d sink sizes, want 2", len(r.Sinks))
	}
	for _, s := range r.Sinks {
		if s.Packets != o.ScalePackets || s.ObjectPackets != uint64(s.Packets) || s.FlowPackets != uint64(s.Packets) {
			t.Errorf("%d interfaces: published %d packets, stored %d in objects and %d in flows, want %d", s.Size, s.Packets, s.ObjectPackets, s.FlowPackets, o.ScalePackets)
		}
		if s.Objects < s.Interfaces || s.S3Objects != s.Objects || s.PUTs < s.S3Objects {
			t.Errorf("%d interfaces (%d with packets): %d objects indexed, %d listed, %d PUTs", s.Size, s.Interfaces, s.Objects, s.S3Objects, s.PUTs)
		}
		// /proc counts CPU in 10 ms ticks: the floor consumers may use
		// none on this little.
		if s.Sinks.CPU[0] <= 0 || s.Sinks.CPU[1] <= 0 || s.Floor.CPU[0] < 0 || s.Floor.CPU[1] < 0 {
			t.Errorf("%d interfaces: sinks' CPU %v, floor consumers' %v: not measured", s.Size, s.Sinks.CPU, s.Floor.CPU)
		}
		for _, side := range []scaleSide{s.Sinks, s.Floor} {
			if side.Wall <= 0 || side.Publish <= 0 || side.Exits != [2]string{} {
				t.Errorf("%d interfaces: wall %s, publish %s, exits %q: not measured or not clean", s.Size, side.Wall, side.Publish, side.Exits)
			}
		}
	}
	if ten := r.Sinks[1]; ten.Interfaces < 2 || ten.Pairs != 10 || ten.Partitions != ten.PartitionsOf {
		t.Errorf("10 interfaces: %d with packets, %d pairs, %d of %d partitions used: the batches did not spread", ten.Interfaces, ten.Pairs, ten.Partitions, ten.PartitionsOf)
	}
	if p := r.Producer; p.Packets != p.Expected || p.Packets == 0 || p.PeakRSS <= 0 || r.Formula != 64<<20+6<<20 {
		t.Errorf("producer: %d of %d packets, peak RSS %d, formula %d", p.Packets, p.Expected, p.PeakRSS, r.Formula)
	}
	if rt := r.Router; !rt.Settled || rt.Missed > 0 || rt.HWM <= 0 {
		t.Errorf("router: settled %v, %d changes missed, VmHWM %d", rt.Settled, rt.Missed, rt.HWM)
	}
	out := r.report()
	for _, want := range []string{"| baseline ", "sinks packets/s, 10 interfaces", "capstream CPU above the floor, 1 interfaces",
		"sinks packets/s, 10 vs 1 interfaces", "producer: peak RSS with rings", "router: label change -> command p99",
		"reconcile p99 < 1 s", "router RSS < 512 MiB", "producer RSS within", "sink packets/s at 10 interfaces", "capstream CPU above the JetStream floor"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
