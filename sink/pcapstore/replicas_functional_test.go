package pcapstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/sink/sinktest"
)

// Three pcap-sink replicas share the captures, and the objects of each
// capture's interface hold its packets exactly once and in stream order:
// the batches of one (capture, node) go to one replica at a time.
func TestFunctionalPcapThreeReplicasKeepOrder(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 20)
	const captures = 6
	cfg := e.config()
	var rs []*sinktest.Instance
	var sinks []*instance
	for range 3 {
		s := start(t, e, cfg)
		sinks, rs = append(sinks, s), append(rs, s.Instance)
	}
	sinktest.WaitMembers(t, "pcap", rs...)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, sinktest.Captures(batches, captures)); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	var held []float64
	for _, s := range sinks {
		held = append(held, s.Metric("capstream_sink_pcap_partitions_held", nil))
		s.Stop()
	}
	keys, paths := e.download(t)
	byCapture := map[string][]string{}
	for i, k := range keys {
		for c := range captures {
			if strings.Contains(k, fmt.Sprintf("/cap-%d/", c)) {
				byCapture[fmt.Sprint(c)] = append(byCapture[fmt.Sprint(c)], paths[i])
			}
		}
	}
	want := sinktest.Packets(t, in)
	for c := range captures {
		got := sinktest.Packets(t, byCapture[fmt.Sprint(c)]...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("capture %d: objects in key order (-input +objects):\n%s", c, diff)
		}
	}
	busy := 0
	for _, h := range held {
		if h > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("partitions held %v: the captures were not shared", held)
	}
	t.Logf("%d objects; partitions held %v", len(keys), held)
}

// A replica that joins mid-run takes partitions over and one killed
// mid-run hands its batches back: every packet of every capture is stored
// exactly once, and nothing is counted as lost.
func TestFunctionalPcapReplicaJoinsAndCrashes(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 30)
	const captures = 4
	all := sinktest.Captures(batches, captures)
	cfg := e.config()
	a, b := start(t, e, cfg), start(t, e, cfg)
	sinktest.WaitMembers(t, "pcap", a.Instance, b.Instance)
	third := len(all) / 3
	if err := sinktest.Publish(t.Context(), e.NATS.JS, all[:third]); err != nil {
		t.Fatal(err)
	}
	c := start(t, e, cfg)
	sinktest.WaitMembers(t, "pcap", a.Instance, b.Instance, c.Instance)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, all[third:2*third]); err != nil {
		t.Fatal(err)
	}
	survivor := sinktest.KillHolder(t, a, b, func(x *instance) bool { return x.Metric("capstream_sink_pcap_pending_batches", nil) > 0 })
	if err := sinktest.Publish(t.Context(), e.NATS.JS, all[2*third:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	released := a.Metric("capstream_sink_pcap_partitions_released_total", nil) + b.Metric("capstream_sink_pcap_partitions_released_total", nil)
	survivor.Stop()
	c.Stop()
	if released == 0 {
		t.Error("no partition released to the replica that joined")
	}
	keys, paths := e.download(t)
	for k := range captures {
		var mine []string
		for i, key := range keys {
			if strings.Contains(key, fmt.Sprintf("/cap-%d/", k)) {
				mine = append(mine, paths[i])
			}
		}
		sinktest.SamePackets(t, in, mine, fmt.Sprintf("of capture %d after a join and a crash", k))
	}
	for name, x := range map[string]*instance{"survivor": survivor, "joined": c} {
		if got := x.Metric("capstream_sink_pcap_lost_batches_total", nil); got != 0 {
			t.Errorf("%s counted %v lost batches, want 0", name, got)
		}
	}
}
