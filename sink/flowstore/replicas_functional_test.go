package flowstore

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// replicaCaptures is the number of captures of the replica tests: each one
// the whole test traffic, on one node, so they spread over the partitions.
const replicaCaptures = 12

// rows returns every flow row as text, every column but the insertion
// time, sorted.
func rows(t *testing.T, db *testenv.ClickHouseDB) []string {
	t.Helper()
	return distinct(t, db, `concat(namespace, '|', capture, '|', capture_uid, '|', node, '|', pod, '|', interface,
		'|', toString(record_id), '|', toString(start_time), '.', toString(start_ns), '|', toString(end_time), '.', toString(end_ns),
		'|', toString(ip_version), '|', toString(protocol), '|', hex(orig_addr), ':', toString(orig_port), '|', hex(resp_addr), ':', toString(resp_port),
		'|', toString(orig_packets), '|', toString(orig_bytes), '|', toString(orig_payload_bytes),
		'|', toString(resp_packets), '|', toString(resp_bytes), '|', toString(resp_payload_bytes),
		'|', toString(orig_tcp_flags), '|', toString(resp_tcp_flags), '|', history, '|', conn_state, '|', community_id,
		'|', dns_query, '|', toString(dns_rcode), '|', tls_sni, '|', http_host, '|', end_reason,
		'|', toString(first_seq), '|', toString(last_seq))`)
}

// waitMembers waits until every replica knows all the others.
func waitMembers(t *testing.T, rs ...*instance) {
	t.Helper()
	var ins []*sinktest.Instance
	for _, r := range rs {
		ins = append(ins, r.Instance)
	}
	sinktest.WaitMembers(t, "flows", ins...)
}

// Three replicas write the same rows as one, to the last column: each
// capture's batches all go to one replica, in stream order, so no TCP
// history or connection state is split between replicas.
func TestFunctionalFlowsThreeReplicasSameRows(t *testing.T) {
	_, batches := replayPcap(t, 10)
	all := sinktest.Captures(batches, replicaCaptures)
	run := func(replicas int) ([]string, []float64) {
		srv, db := setup(t)
		var rs []*instance
		for range replicas {
			rs = append(rs, start(t, srv, db, testConfig()))
		}
		waitMembers(t, rs...)
		if err := sinktest.Publish(t.Context(), srv.JS, all); err != nil {
			t.Fatal(err)
		}
		waitDrained(t, srv, 60*time.Second)
		var held []float64
		for _, r := range rs {
			held = append(held, r.Metric("capstream_sink_flows_partitions_held", nil))
			if n := r.Metric("capstream_sink_flows_partitions_released_total", nil); n != 0 {
				t.Errorf("a replica released %v partitions during a steady run", n)
			}
			r.Stop()
		}
		return rows(t, db), held
	}
	one, _ := run(1)
	three, held := run(3)
	if len(one) == 0 {
		t.Fatal("no flow rows")
	}
	if diff := cmp.Diff(one, three); diff != "" {
		t.Errorf("rows of three replicas (-one +three):\n%s", diff)
	}
	// 7 partitions over 3 replicas: 3, 2 and 2 in use at most, and every
	// replica had some of the 12 captures.
	for i, h := range held {
		if h < 1 || h > 3 {
			t.Errorf("replica %d held %v partitions, want 1 to 3", i, h)
		}
	}
	t.Logf("%d rows alike; partitions held %v", len(one), held)
}

// A replica that joins mid-run takes partitions over, and one killed
// mid-run hands its batches back: every packet is counted once, as tshark
// counts it, and nothing is lost.
func TestFunctionalFlowsReplicaJoinsAndCrashes(t *testing.T) {
	srv, db := setup(t)
	path, batches := replayPcap(t, 10)
	// Every partition has traffic, so the replica that joins gets some.
	n := sinktest.CapturesCovering(batches)
	sinktest.JoinThenCrash(t, &sinktest.Env{NATS: srv}, "flows", schemas.ConsumerFlowSink, sinktest.Captures(batches, n),
		func() *instance { return start(t, srv, db, testConfig()) },
		func(x *instance) bool { return x.Sink.pendingBatches() > 0 })
	want := map[string]sinktest.FlowSum{}
	for k, s := range sinktest.TsharkSums(t, path) {
		c := uint64(n)
		want[k] = sinktest.FlowSum{OrigPackets: c * s.OrigPackets, OrigBytes: c * s.OrigBytes, RespPackets: c * s.RespPackets, RespBytes: c * s.RespBytes}
	}
	if diff := cmp.Diff(want, sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows of %d captures after a join and a crash (-tshark x%d +sink):\n%s", n, n, diff)
	}
}
