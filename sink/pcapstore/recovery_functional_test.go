package pcapstore

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

func TestFunctionalPcapCrashRestart(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 60)
	cfg := e.config()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	s := start(t, e, cfg)
	next := 0
	for kill := 0; kill < 4; kill++ {
		n := min(len(batches)-next, 1+rnd.Intn(len(batches)/4))
		if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[next:next+n]); err != nil {
			t.Fatal(err)
		}
		next += n
		time.Sleep(time.Duration(rnd.Intn(600)) * time.Millisecond)
		s.Kill(rnd.Intn(2) == 0)
		s = start(t, e, cfg)
	}
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[next:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	s.Stop()
	if got := s.Metric("capstream_sink_pcap_lost_batches_total", nil); got != 0 {
		t.Errorf("the last sink counted %v lost batches among redeliveries, want 0", got)
	}
	keys, paths := e.download(t)
	npackets := sinktest.SamePackets(t, in, paths, "after crashes")
	idx := index(t, e)
	if len(idx) != len(keys) {
		t.Errorf("pcap_objects has %d rows for %d objects", len(idx), len(keys))
	}
	var total uint64
	for _, r := range idx {
		total += r.Packets
	}
	if total != uint64(npackets) {
		t.Errorf("pcap_objects counts %d packets, input has %d", total, npackets)
	}
}

func TestFunctionalPcapS3Outage(t *testing.T) {
	outage, iterating := sinktest.Outage()
	e := setup(t)
	proxy, err := sinktest.NewProxy(e.s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	in, batches := traffic(t, 60)
	cfg := e.config()
	cfg.S3.Endpoint = proxy.Addr
	cfg.MaxBufferedBytes = 256 << 10
	s := start(t, e, cfg)
	third := len(batches) / 3
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[:third]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 30*time.Second)
	proxy.Down()
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[third:]); err != nil {
		t.Fatal(err)
	}
	// While S3 is away the sink holds at most its budget plus one batch
	// and one pcap header, and stops pulling.
	var peak float64
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, s.Metric("capstream_sink_pcap_buffered_bytes", nil))
		if iterating {
			t.Logf("buffered %.0f open %.0f pending %.0f", s.Metric("capstream_sink_pcap_buffered_bytes", nil), s.Metric("capstream_sink_pcap_open_objects", nil), s.Metric("capstream_sink_pcap_pending_batches", nil))
		}
	}
	if limit := float64(cfg.MaxBufferedBytes + 16<<10 + 24); peak > limit {
		t.Errorf("buffered %0.f bytes during the outage, budget %0.f", peak, limit)
	}
	proxy.EndOutage(t, "S3", s.Sink.Ready)
	waitDrained(t, e, 90*time.Second)
	s.Stop()
	_, paths := e.download(t)
	sinktest.SamePackets(t, in, paths, "after the outage")
	t.Logf("peak buffered during the outage: %.0f bytes", peak)
}

func TestFunctionalPcapReplicas(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 60)
	cfg := e.config()
	a, b := start(t, e, cfg), start(t, e, cfg)
	both := []*instance{a, b}
	half := len(batches) / 2
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[:half]); err != nil {
		t.Fatal(err)
	}
	// Kill a replica while it holds batches, so they come back to the
	// other one.
	b = sinktest.KillHolder(t, a, b, func(x *instance) bool { return x.Metric("capstream_sink_pcap_pending_batches", nil) > 0 })
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[half:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	b.Stop()
	_, paths := e.download(t)
	sinktest.SamePackets(t, in, paths, "with two replicas")
	// The killed replica's partition moved to the other, whose first
	// deliveries of it came before the redeliveries: no gap is provable,
	// none is counted.
	for _, x := range both {
		if got := x.Metric("capstream_sink_pcap_lost_batches_total", nil); got != 0 {
			t.Errorf("a replica counted %v lost batches, want 0", got)
		}
	}
}

func TestFunctionalPcapAbortsStaleUploads(t *testing.T) {
	e := setup(t)
	core := minio.Core{Client: e.s3.Client}
	stale, err := core.NewMultipartUpload(t.Context(), e.s3.Bucket, "pcaps/ns/cap/0b1c2d3e-uid/node/pod_cali0/20261127T100000.000000000Z-1.pcap", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := core.NewMultipartUpload(t.Context(), e.s3.Bucket, "elsewhere/x.pcap", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer core.AbortMultipartUpload(context.Background(), e.s3.Bucket, "elsewhere/x.pcap", other)
	cfg := e.config()
	cfg.GracePeriod = time.Second
	cfg.StaleUploadAge = 2 * time.Second
	start(t, e, cfg)
	testenv.Eventually(t, 15*time.Second, func() error {
		var left []string
		for u := range e.s3.Client.ListIncompleteUploads(t.Context(), e.s3.Bucket, "", true) {
			if u.Err != nil {
				return u.Err
			}
			left = append(left, u.UploadID)
		}
		if len(left) != 1 || left[0] != other {
			return fmt.Errorf("incomplete uploads %v, want only %s (not %s)", left, other, stale)
		}
		return nil
	})
}

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
	in, batches := traffic(t, 10)
	// Every partition has traffic, so the replica that joins gets some.
	captures := sinktest.CapturesCovering(batches)
	sinktest.JoinThenCrash(t, e.Env, "pcap", schemas.ConsumerPcapSink, sinktest.Captures(batches, captures),
		func() *instance { return start(t, e, e.config()) },
		func(x *instance) bool { return x.Metric("capstream_sink_pcap_pending_batches", nil) > 0 })
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
}
