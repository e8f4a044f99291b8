package router

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// TestSampleCapture follows the seed's sample through every change the
// router must react to. The manifest is the seed's, moved to a private
// namespace because other packages' tests use sample-namespace at the same
// time.
func TestSampleCapture(t *testing.T) {
	const name = "sample-capture"
	h := newHarness(t, nil)
	sample, err := os.ReadFile("../schemas/v3/testdata/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.Replace(string(sample), "namespace: sample-namespace", "namespace: "+h.ns, 1)
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatal(err)
	}

	app := map[string]string{"k8s-app": "sample-app"}
	h.pod("pod-a", "node-1", app)
	h.pod("pod-b", "node.2", app) // a dot in a node name
	h.pod("pod-c", "node-1", map[string]string{"k8s-app": "other"})
	h.pod("pod-d", "node-3", nil) // matches nothing until the last step
	rh := h.start(nil)
	testenv.Eventually(t, waitFor, rh.r.Ready)
	if _, err := h.captures().Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the sample: %v", err)
	}

	// One command per matching node, naming the right interfaces.
	h.expect(name, map[string][]string{"node-1": {"pod-a"}, "node.2": {"pod-b"}})
	if n := h.rec.count(); n != 2 {
		t.Errorf("%d commands published, want 2", n)
	}

	// Relabeling a pod adds its interface.
	h.relabelPod("pod-c", app)
	h.expect(name, map[string][]string{"node-1": {"pod-a", "pod-c"}, "node.2": {"pod-b"}})

	// Deleting a pod: its node loses all endpoints and gets a stop.
	h.deletePod("pod-b")
	h.expect(name, map[string][]string{"node-1": {"pod-a", "pod-c"}}, "node.2")

	// Changing the selector to a namespace label nobody has stops all...
	h.updateCapture(name, func(pc *v3.PacketCapture) {
		pc.Spec.Selector = `k8s-app == "sample-app" && pcns.team == "blue"`
	})
	h.expect(name, nil, "node-1", "node.2")
	// ...and labeling the namespace brings it back.
	h.labelNamespace(map[string]string{"team": "blue"})
	h.expect(name, map[string][]string{"node-1": {"pod-a", "pod-c"}}, "node.2")

	// An endTime in the past stops the capture and marks it Finished.
	h.updateCapture(name, func(pc *v3.PacketCapture) {
		past := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
		pc.Spec.EndTime = &past
	})
	h.expect(name, nil, "node-1", "node.2")
	waitCondition(t, h, name, v3.ConditionReady, metav1.ConditionFalse, ReasonFinished)

	// Without the end time it captures again, this time selecting all.
	h.updateCapture(name, func(pc *v3.PacketCapture) {
		pc.Spec.EndTime = nil
		pc.Spec.Selector = ""
	})
	h.expect(name, map[string][]string{"node-1": {"pod-a", "pod-c"}, "node-3": {"pod-d"}}, "node.2")
	waitCondition(t, h, name, v3.ConditionReady, metav1.ConditionTrue, ReasonCapturing)

	// Deleting the capture stops it everywhere.
	if err := h.captures().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.expect(name, nil, "node-1", "node.2", "node-3")
	h.rec.check(t)
}

// TestScheduledStart checks that a capture with a future start is
// published ahead with its start time, reported Scheduled, and becomes
// Capturing when the start passes, with no further command.
func TestScheduledStart(t *testing.T) {
	h := onePodHarness(t)
	h.createCapture("later", "all()")
	start := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	h.updateCapture("later", func(pc *v3.PacketCapture) {
		s := metav1.NewTime(start)
		pc.Spec.StartTime = &s
	})
	waitCondition(t, h, "later", v3.ConditionReady, metav1.ConditionTrue, ReasonScheduled)
	testenv.Eventually(t, waitFor, func() error {
		cmds, err := h.commands("later")
		if err != nil {
			return err
		}
		if c := cmds["node-1"]; c == nil || c.StartTime == nil || !c.StartTime.Equal(start) {
			return fmt.Errorf("command %+v, want start %s", c, start)
		}
		return nil
	})
	pc, err := h.getCapture("later")
	if err != nil {
		t.Fatal(err)
	}
	if len(pc.Status.Files) != 1 || pc.Status.Files[0].State == nil || *pc.Status.Files[0].State != v3.StateScheduled {
		t.Errorf("files %+v, want node-1 Scheduled", pc.Status.Files)
	}
	waitCondition(t, h, "later", v3.ConditionReady, metav1.ConditionTrue, ReasonCapturing)
	h.rec.check(t)
}

// TestStatusAndInvalidSpec checks status write-back from node reports, and
// that an invalid capture gets an Error condition and an Event while a
// valid one in the same namespace keeps its commands.
func TestStatusAndInvalidSpec(t *testing.T) {
	h := newHarness(t, map[string]string{"env": "test"})
	app := map[string]string{"app": "web"}
	h.pod("web-1", "node-1", app)
	h.pod("web-2", "node-2", app)
	rh := h.start(nil)
	h.createCapture("good", `app == "web"`)
	h.createCapture("bad", `app == `)
	h.expect("good", map[string][]string{"node-1": {"web-1"}, "node-2": {"web-2"}})

	waitCondition(t, h, "bad", v3.ConditionError, metav1.ConditionTrue, ReasonInvalidSpec)
	waitCondition(t, h, "bad", v3.ConditionReady, metav1.ConditionFalse, ReasonInvalidSpec)
	testenv.Eventually(t, waitFor, func() error {
		evs, err := h.kube.Client.CoreV1().Events(h.ns).List(t.Context(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=bad,reason=" + ReasonInvalidSpec,
		})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 {
			return errors.New("no InvalidSpec event")
		}
		return nil
	})
	if cmds, err := h.commands("bad"); err != nil || len(cmds) != 0 {
		t.Errorf("invalid capture has commands %v (%v)", cmds, err)
	}
	waitCondition(t, h, "good", v3.ConditionReady, metav1.ConditionTrue, ReasonCapturing)
	waitCondition(t, h, "good", v3.ConditionError, metav1.ConditionFalse, ReasonNoError)

	// Fixing the bad capture makes it capture too.
	h.updateCapture("bad", func(pc *v3.PacketCapture) { pc.Spec.Selector = `app == "web" && pcns.env == "test"` })
	h.expect("bad", map[string][]string{"node-1": {"web-1"}, "node-2": {"web-2"}})
	waitCondition(t, h, "bad", v3.ConditionError, metav1.ConditionFalse, ReasonNoError)

	// Node reports show up in status.files.
	good, err := h.getCapture("good")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(s *schemas.Status) {
		t.Helper()
		s.Namespace, s.Name, s.UID, s.Node, s.Time = h.ns, "good", string(good.UID), "node-1", time.Now()
		if err := h.publishStatus(s); err != nil {
			t.Fatal(err)
		}
	}
	publish(&schemas.Status{Source: schemas.SourceProducer, State: schemas.StateCapturing, Packets: 42, Bytes: 4200, KernelDrops: 1, PublishDrops: 2})
	publish(&schemas.Status{Source: schemas.SourcePcapSink, State: schemas.StateCapturing, Packets: 40, Bytes: 4000,
		Directory: "s3://bucket/capstream/" + h.ns + "/good/node-1/", Objects: []string{"web-1_cali0/a.pcap"}})
	testenv.Eventually(t, waitFor, func() error {
		pc, err := h.getCapture("good")
		if err != nil {
			return err
		}
		for _, f := range pc.Status.Files {
			if f.Node == "node-1" && f.State != nil && *f.State == v3.StateCapturing && f.Packets == 42 && f.Drops == 3 &&
				strings.HasSuffix(f.Directory, "/good/node-1/") && slices.Equal(f.FileNames, []string{"web-1_cali0/a.pcap"}) {
				if pc.Status.Packets != 42 || pc.Status.Bytes != 4200 || pc.Status.Drops != 3 {
					return fmt.Errorf("totals %d/%d/%d", pc.Status.Packets, pc.Status.Bytes, pc.Status.Drops)
				}
				return nil
			}
		}
		return fmt.Errorf("files %+v", pc.Status.Files)
	})
	// A node error becomes the Error condition.
	publish(&schemas.Status{Source: schemas.SourceProducer, State: schemas.StateError, Packets: 42, LastError: "interface gone"})
	waitCondition(t, h, "good", v3.ConditionError, metav1.ConditionTrue, ReasonNodeError)

	// The router's own status writes do not make it loop: over a few
	// resyncs, nothing is written or published again.
	writes := testenv.Metric(t, rh.reg, "capstream_router_status_writes_total", map[string]string{"result": "written"})
	published := h.rec.count()
	testenv.Consistently(t, 3*time.Second, func() error {
		if w := testenv.Metric(t, rh.reg, "capstream_router_status_writes_total", map[string]string{"result": "written"}); w != writes {
			return fmt.Errorf("%v status writes, want %v", w, writes)
		}
		if n := h.rec.count(); n != published {
			return fmt.Errorf("%d commands published, want %d", n, published)
		}
		return nil
	})
	h.rec.check(t)
}

// TestRestartAndFailover checks that a standby taking over and a restarted
// router publish nothing when nothing changed, and carry on afterwards.
func TestRestartAndFailover(t *testing.T) {
	h := newHarness(t, nil)
	app := map[string]string{"app": "db"}
	h.pod("db-1", "node-1", app)
	h.pod("db-2", "node-2", app)
	h.pod("db-3", "node-3", nil)
	a := h.start(nil)
	h.createCapture("cap", `app == "db"`)
	h.createCapture("gone", `app == "db"`)
	h.expect("cap", map[string][]string{"node-1": {"db-1"}, "node-2": {"db-2"}})
	h.expect("gone", map[string][]string{"node-1": {"db-1"}, "node-2": {"db-2"}})
	// Let node-3 have been stopped once, so the stream holds a stop too.
	h.relabelPod("db-3", app)
	h.expect("cap", map[string][]string{"node-1": {"db-1"}, "node-2": {"db-2"}, "node-3": {"db-3"}})
	h.relabelPod("db-3", nil)
	h.expect("cap", map[string][]string{"node-1": {"db-1"}, "node-2": {"db-2"}}, "node-3")
	testenv.Eventually(t, waitFor, func() error {
		if !a.r.IsLeader() {
			return errors.New("a is not leading")
		}
		return nil
	})

	// Failover: a standby with warm caches takes over when a stops.
	b := h.start(nil)
	testenv.Eventually(t, waitFor, b.r.Ready)
	if b.r.IsLeader() {
		t.Fatal("two leaders")
	}
	before := h.rec.count()
	a.stop(t)
	waitTerm(t, b)
	if n := h.rec.count(); n != before {
		t.Errorf("failover published %d commands, want none", n-before)
	}

	// The new leader works: a change is published once.
	h.relabelPod("db-3", app)
	h.expect("cap", map[string][]string{"node-1": {"db-1"}, "node-2": {"db-2"}, "node-3": {"db-3"}})

	// Restart: b stops, then a fresh router starts alone. A capture deleted
	// while no router ran is stopped, and nothing else is published.
	b.stop(t)
	before = h.rec.count()
	if err := h.captures().Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := h.start(nil)
	waitTerm(t, c)
	h.expect("gone", nil, "node-1", "node-2", "node-3")
	if n := h.rec.count(); n != before+3 {
		t.Errorf("restart published %d commands, want the 3 stops of the deleted capture", n-before)
	}
	h.rec.check(t)
}

// TestNATSRestart checks that the router rides out a JetStream outage:
// changes made while it is away are published once it is back, and status
// reports flow again.
func TestNATSRestart(t *testing.T) {
	h := newHarness(t, nil)
	app := map[string]string{"app": "web"}
	h.pod("web-1", "node-1", app)
	h.pod("web-2", "node-2", nil)
	h.start(nil)
	h.createCapture("cap", `app == "web"`)
	h.expect("cap", map[string][]string{"node-1": {"web-1"}})

	h.nats.Stop()
	h.relabelPod("web-2", app)
	h.relabelPod("web-1", nil)
	if err := h.nats.Start(); err != nil {
		t.Fatal(err)
	}
	h.expect("cap", map[string][]string{"node-2": {"web-2"}}, "node-1")

	pc, err := h.getCapture("cap")
	if err != nil {
		t.Fatal(err)
	}
	report := &schemas.Status{Source: schemas.SourceProducer, Namespace: h.ns, Name: "cap", UID: string(pc.UID),
		Node: "node-2", State: schemas.StateWaitingForTraffic, Time: time.Now()}
	testenv.Eventually(t, waitFor, func() error { return h.publishStatus(report) })
	testenv.Eventually(t, waitFor, func() error {
		pc, err := h.getCapture("cap")
		if err != nil {
			return err
		}
		for _, f := range pc.Status.Files {
			if f.Node == "node-2" && f.State != nil && *f.State == v3.StateWaitingForTraffic {
				return nil
			}
		}
		return fmt.Errorf("files %+v", pc.Status.Files)
	})
	h.rec.check(t)
}

// TestStreamPurged checks that commands lost behind the router's back (an
// operator purging the stream) are published again within a resync period.
func TestStreamPurged(t *testing.T) {
	h := onePodHarness(t)
	h.createCapture("cap", "")
	h.expect("cap", map[string][]string{"node-1": {"p"}})
	stream, err := h.nats.JS.Stream(t.Context(), schemas.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.expect("cap", map[string][]string{"node-1": {"p"}})
}

// TestRouterManagesPacketsStream checks the leader creates CAPSTREAM_PACKETS
// with its configured limits and both sink consumers, so a batch published
// before any sink runs is kept rather than discarded by interest retention.
func TestRouterManagesPacketsStream(t *testing.T) {
	h := bareHarness(t, nil)
	h.start(func(c *Config) { c.PacketsStream.MaxBytes = 64 << 20 })
	ctx := t.Context()
	var st jetstream.Stream
	testenv.Eventually(t, waitFor, func() error {
		var err error
		st, err = h.nats.JS.Stream(ctx, schemas.StreamPackets)
		if err != nil {
			return err
		}
		_, err = st.Consumer(ctx, schemas.SinkPartitionName(schemas.ConsumerFlowSink, schemas.DefaultPacketPartitions-1))
		return err
	})
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxBytes != 64<<20 || info.Config.Retention != jetstream.InterestPolicy {
		t.Errorf("packets stream config: max bytes %d retention %v", info.Config.MaxBytes, info.Config.Retention)
	}
	if n, err := schemas.PacketPartitions(info.Config); err != nil || n != schemas.DefaultPacketPartitions {
		t.Errorf("packets stream partitions: %d, %v; want %d", n, err, schemas.DefaultPacketPartitions)
	}
	for _, durable := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
		for p := range schemas.DefaultPacketPartitions {
			if _, err := st.Consumer(ctx, schemas.SinkPartitionName(durable, p)); err != nil {
				t.Errorf("consumer %s: %v", schemas.SinkPartitionName(durable, p), err)
			}
		}
	}
	subj, err := schemas.PacketSubject(h.ns, "c", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.nats.JS.Publish(ctx, subj, []byte("batch")); err != nil {
		t.Fatal(err)
	}
	if info, err = st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("batch published before any sink: %d messages kept (%v), want 1", info.State.Msgs, err)
	}
}

func TestRouterLeavesUnmanagedPacketsStream(t *testing.T) {
	h := bareHarness(t, nil)
	h.start(func(c *Config) { c.PacketsStream.Manage = false })
	// The status consumer is bound at the end of the term's setup.
	testenv.Eventually(t, waitFor, func() error {
		_, err := h.nats.JS.Consumer(t.Context(), schemas.StreamStatus, schemas.ConsumerRouterStatus)
		return err
	})
	if _, err := h.nats.JS.Stream(t.Context(), schemas.StreamPackets); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("packets stream with manage off: %v, want not found", err)
	}
}
