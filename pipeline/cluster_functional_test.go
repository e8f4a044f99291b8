package pipeline

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
	"github.com/capstream/capstream/sink/sinktest"
)

// The pieces meet on a JetStream cluster: a producer replaying a pcap at
// its recorded pace into R3 streams of a 3-node cluster, two replicas of
// each sink, while the stream leader of CAPSTREAM_PACKETS is killed and
// restarted and the replica of each sink that holds the interface's
// partition is killed mid-replay (the other takes the partition over).

const (
	// clusterRetryFor is the producer's publishRetryFor in the cluster
	// test, and clusterLostAfter the sinks' consumer.lostAfter: above the
	// producer's retries (clusterRetryFor plus a 1 s ack timeout).
	clusterRetryFor  = 4 * time.Second
	clusterLostAfter = 6 * time.Second
	clusterNode      = "node-1"
	clusterNS        = "team-a"
	clusterName      = "web.capture"
	clusterPod       = "web-0"
	clusterIface     = "cali1234567890a"
)

func TestFunctionalClusterLeaderChange(t *testing.T) {
	db, bucket := testenv.ClickHouse(t), testenv.S3(t)
	cl := testenv.NATSCluster(t, 3)
	ctx := t.Context()

	// R3 streams and both durables (R3 like their stream), before the
	// producer publishes: the packets stream has interest retention.
	limits := schemas.DefaultPacketsStreamLimits()
	limits.Replicas, limits.Partitions = 3, 2
	if err := schemas.EnsureStreams(ctx, cl.JS, limits); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Bind(ctx, cl.JS, schemas.PcapSinkConsumer(), sinktest.AckWait); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Bind(ctx, cl.JS, schemas.FlowSinkConsumer(), sinktest.AckWait); err != nil {
		t.Fatal(err)
	}
	if _, err := chschema.Migrate(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{schemas.StreamCommands, schemas.StreamPackets, schemas.StreamStatus} {
		s, err := cl.JS.Stream(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Replicas; got != 3 {
			t.Fatalf("stream %s: %d replicas, want 3", st, got)
		}
	}

	// About 8 s of traffic at its recorded pace (1 ms between packets).
	g := sinktest.Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), 260, 5000)
	in := filepath.Join(t.TempDir(), "in.pcap")
	if err := sinktest.WritePcap(in, g.Pkts); err != nil {
		t.Fatal(err)
	}
	leader, err := cl.StreamLeader(ctx, schemas.StreamPackets, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s leads %s and both sink consumers", cl.Name(leader), schemas.StreamPackets)
	// The kill takes the leaders of both sink consumers with it too.
	for _, durable := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
		for p := range limits.Partitions {
			if err := cl.MoveConsumerLeader(ctx, schemas.StreamPackets, schemas.SinkPartitionName(durable, p), leader); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The sinks connect to every member, as a deployment does.
	env := &sinktest.Env{NATS: &testenv.NATSServer{URL: cl.URL()}, DB: db}
	pcapCfg := pcapstore.DefaultConfig()
	pcapCfg.S3, pcapCfg.Prefix = bucket.Config(), "pcaps"
	pcapCfg.MaxObjectBytes = 256 << 10
	pcapCfg.StopAfter = 500 * time.Millisecond
	// A gap may fill for longer than the producer's retries take.
	consumer := sinktest.Consumer()
	consumer.LostAfter = clusterLostAfter
	pcapCfg.Consumer, pcapCfg.GracePeriod = consumer, sinktest.GracePeriod
	startPcap := func() *sinktest.Running[*pcapstore.Sink] {
		in := sinktest.Connect(t, env, db.Addr, slog.LevelWarn)
		s3, err := pcapCfg.S3.Client()
		if err != nil {
			t.Fatal(err)
		}
		deps := in.Deps
		deps.S3 = s3
		s, err := pcapstore.New(pcapCfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		in.Run("pcap sink", s.Run)
		return &sinktest.Running[*pcapstore.Sink]{Instance: in, Sink: s}
	}
	flowCfg := flowstore.DefaultConfig()
	flowCfg.StopAfter, flowCfg.FlushInterval = 300*time.Millisecond, 100*time.Millisecond
	flowCfg.Consumer, flowCfg.GracePeriod = consumer, sinktest.GracePeriod
	startFlows := func() *sinktest.Running[*flowstore.Sink] {
		in := sinktest.Connect(t, env, db.Addr, slog.LevelWarn)
		s, err := flowstore.New(flowCfg, in.Deps)
		if err != nil {
			t.Fatal(err)
		}
		in.Run("flow sink", s.Run)
		return &sinktest.Running[*flowstore.Sink]{Instance: in, Sink: s}
	}
	pcaps := []*sinktest.Running[*pcapstore.Sink]{startPcap(), startPcap()}
	flows := []*sinktest.Running[*flowstore.Sink]{startFlows(), startFlows()}
	sinktest.WaitMembers(t, "pcap", pcaps[0].Instance, pcaps[1].Instance)
	sinktest.WaitMembers(t, "flows", flows[0].Instance, flows[1].Instance)

	// The producer is on a member that is not the stream leader, so what
	// it rides out is the stream-leader change, not a reconnect (which,
	// with no reconnect buffer, drops at the source by design).
	other := (leader + 1) % 3
	logger := testenv.Logger(t)
	nc, err := clients.NATSConfig{URL: cl.URLs()[other], Name: "capstream-producer"}.Connect(producer.ConnOptions(logger)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reports := watchProducer(t, cl.Conn)
	pcfg := producer.DefaultConfig()
	pcfg.Node, pcfg.Source = clusterNode, producer.SourceFile
	pcfg.File.Files = map[string]string{clusterIface: in}
	pcfg.File.Paced = true
	pcfg.StatusInterval, pcfg.BatchDelay, pcfg.GracePeriod = 300*time.Millisecond, 20*time.Millisecond, 5*time.Second
	// A batch the dead leader took without committing is published again
	// after 1 s, and one no stream answered at once, for 4 s, which
	// covers the election.
	pcfg.AckTimeout, pcfg.PublishRetryFor = time.Second, clusterRetryFor
	preg := prometheus.NewRegistry()
	prod, err := producer.New(pcfg, producer.Deps{Logger: logger, Registerer: preg, NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	prun := testenv.Start(t, "producer", prod.Run)
	testenv.Eventually(t, 10*time.Second, prod.Ready)
	publishCapture(t, cl)
	start := time.Now()

	// Faults, mid-replay: the stream leader (a new one is elected), the
	// sink replicas holding the interface's partition (the other replica
	// of each takes it over once the pin expires, and the batches the dead
	// one held come back to it after AckWait), then the old leader back.
	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	t.Logf("%s: killing %s, the stream leader", time.Since(start).Round(time.Millisecond), cl.Name(leader))
	cl.Stop(leader)
	next, err := cl.StreamLeader(ctx, schemas.StreamPackets, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s leads %s, elected in %s", time.Since(start).Round(time.Millisecond), cl.Name(next), schemas.StreamPackets,
		time.Since(killedAt).Round(time.Millisecond))
	time.Sleep(time.Until(killedAt.Add(1500 * time.Millisecond)))
	t.Logf("%s: killing the sink replicas that hold the partition", time.Since(start).Round(time.Millisecond))
	pending := func(name string) func(*sinktest.Instance) bool {
		return func(in *sinktest.Instance) bool { return in.Metric(name, nil) > 0 }
	}
	pcap := sinktest.KillHolder(t, pcaps[0], pcaps[1], func(r *sinktest.Running[*pcapstore.Sink]) bool {
		return pending("capstream_sink_pcap_pending_batches")(r.Instance)
	})
	flow := sinktest.KillHolder(t, flows[0], flows[1], func(r *sinktest.Running[*flowstore.Sink]) bool {
		return pending("capstream_sink_flows_pending_batches")(r.Instance)
	})
	time.Sleep(time.Until(killedAt.Add(3 * time.Second)))
	if err := cl.Start(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s restarted", time.Since(start).Round(time.Millisecond), cl.Name(leader))

	final := reports.wait(t, 60*time.Second)
	t.Logf("%s: replay finished: %d packets, %d publish drops", time.Since(start).Round(time.Millisecond), final.Packets, final.PublishDrops)
	drained := &sinktest.Env{NATS: &testenv.NATSServer{JS: cl.JS}}
	drained.WaitDrained(t, schemas.ConsumerPcapSink, 60*time.Second, false)
	drained.WaitDrained(t, schemas.ConsumerFlowSink, 60*time.Second, false)
	// A gap the election opened (a retried batch lands after its
	// successors) fills: no batch counts as lost, also once the gaps
	// have had their time.
	lostNone := func() error {
		for _, in := range []*sinktest.Instance{pcap.Instance, flow.Instance} {
			for _, name := range []string{"capstream_sink_pcap_lost_batches_total", "capstream_sink_flows_lost_batches_total"} {
				if n := in.Metric(name, nil); n != 0 {
					return fmt.Errorf("%s = %v", name, n)
				}
			}
		}
		return nil
	}
	// The last gap can open as the last retry lands (5 s after the kill)
	// and is counted at the first progress tick after lostAfter.
	testenv.Consistently(t, max(time.Until(killedAt.Add(clusterRetryFor+time.Second+clusterLostAfter+time.Second)), 0), lostNone)
	if err := prun.Stop(); err != nil {
		t.Errorf("producer Run: %v", err)
	}
	pcap.Stop()
	flow.Stop()
	t.Logf("producer retries: %v", testenv.Metric(t, preg, "capstream_producer_publish_retries_total", nil))

	// Drops: zero, or counted alike in the metrics and the status.
	metric := testenv.Metric(t, preg, "capstream_producer_publish_drops_total", nil)
	for _, reason := range []string{"budget", "disconnected", "no_stream", "timeout", "refused", "other"} {
		if n := testenv.Metric(t, preg, "capstream_producer_publish_drops_total", map[string]string{"reason": reason}); n > 0 {
			t.Logf("publish drops (%s): %v packets", reason, n)
		}
	}
	if uint64(metric) != final.PublishDrops {
		t.Errorf("publish drops: metric %v, status %d", metric, final.PublishDrops)
	}
	if final.Packets != uint64(len(g.Pkts)) {
		t.Errorf("producer read %d packets, the file has %d", final.Packets, len(g.Pkts))
	}

	// Every packet the producer did not count as dropped is in S3 exactly
	// once.
	_, paths := sinktest.Download(t, bucket, "pcaps/")
	n := sinktest.SamePackets(t, in, paths, "")
	t.Logf("%d packets in, stored in %d objects", n, len(paths))
	if final.PublishDrops != 0 {
		// Counted, as the acceptance allows, but the retries are there to
		// make it zero: an election longer than they last?
		t.Errorf("%d packets dropped by the producer during the election", final.PublishDrops)
	}

	// The flow rows add up to those of a run without faults on one
	// replica, which equal tshark's conversations
	// (TestFunctionalFlowsMatchTshark): a killed replica's open records
	// are rebuilt by the other from the redelivered batches, so records
	// may be cut differently, but no packet is lost or counted twice.
	if diff := cmp.Diff(sinktest.TsharkSums(t, in), sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows (-tshark +sink):\n%s", diff)
	}
}

// publishCapture publishes the command a router would for the replayed
// interface.
func publishCapture(t *testing.T, cl *testenv.JetStreamCluster) {
	t.Helper()
	data, err := schemas.EncodeCommand(&schemas.Command{
		Action: schemas.ActionCapture, Namespace: clusterNS, Name: clusterName, UID: "0b1c2d3e-uid", Node: clusterNode,
		Generation: 1, IssuedAt: time.Now(),
		Endpoints: []schemas.Endpoint{{Pod: clusterPod, Namespace: clusterNS, Interface: clusterIface}},
	})
	if err != nil {
		t.Fatal(err)
	}
	subj, err := schemas.CommandSubject(clusterNode, clusterNS, clusterName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.JS.Publish(t.Context(), subj, data); err != nil {
		t.Fatal(err)
	}
}

// producerReports keeps the producer's latest status report.
type producerReports struct {
	mu   sync.Mutex
	last *schemas.Status
}

func watchProducer(t *testing.T, nc *nats.Conn) *producerReports {
	t.Helper()
	subj, err := schemas.StatusSubject(clusterNS, clusterName, clusterNode)
	if err != nil {
		t.Fatal(err)
	}
	r := &producerReports{}
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
		st, err := schemas.DecodeStatus(m.Data)
		if err != nil || st.Source != schemas.SourceProducer {
			return
		}
		r.mu.Lock()
		r.last = st
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// wait returns the report that says the replay is over.
func (r *producerReports) wait(t *testing.T, timeout time.Duration) *schemas.Status {
	t.Helper()
	var got *schemas.Status
	testenv.Eventually(t, timeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.last == nil || r.last.State != schemas.StateFinished {
			return fmt.Errorf("producer report %+v, want %s", r.last, schemas.StateFinished)
		}
		got = r.last
		return nil
	})
	return got
}
