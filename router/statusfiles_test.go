package router

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// TestBuildStatusSinkReports checks what the sinks' reports add: the
// losses to stream limits in the drops, the total object count, and their
// failures in the Error condition, with reason SinkError when no node has
// an error of its own.
func TestBuildStatusSinkReports(t *testing.T) {
	pc := newCapture("all()")
	reports := map[string]nodeReports{
		"n1": {
			producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateCapturing, Packets: 10, KernelDrops: 1, PublishDrops: 2},
			sink: &schemas.Status{Source: schemas.SourcePcapSink, Directory: "s3://b/p/n1/", Objects: []string{"a.pcap"}, ObjectCount: 40, LostPackets: 5,
				Failures: []schemas.Failure{{Reason: schemas.FailureStorageRefused, Batches: 3, Message: "put: KeyTooLongError"}}},
			flows: &schemas.Status{Source: schemas.SourceFlowSink, LostPackets: 7,
				Failures: []schemas.Failure{{Reason: schemas.FailurePanic, Batches: 1}}},
		},
		"n2": {producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateCapturing, Packets: 4}},
	}
	v := &view{uid: "u-1", generation: 1, phase: PhaseActive, nodes: []string{"n1", "n2"}, endpoints: 2}
	st := buildStatus(pc, v, reports, "u-1", t0)
	if st.Files[0].Drops != 1+2+7 || st.Drops != 10 {
		t.Errorf("drops n1 %d, total %d; want 10 (kernel 1, publish 2, the larger of the sinks' losses 7)", st.Files[0].Drops, st.Drops)
	}
	if st.Files[0].Objects != 40 || st.Objects != 40 {
		t.Errorf("objects n1 %d, total %d; want the sink's count 40, not the one name listed", st.Files[0].Objects, st.Objects)
	}
	c := meta.FindStatusCondition(st.Conditions, v3.ConditionError)
	want := "n1: flow sink: HandlerPanic, 1 batches terminated; n1: pcap sink: StorageRefused, 3 batches terminated: put: KeyTooLongError"
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonSinkError || c.Message != want {
		t.Errorf("error condition %+v, want True SinkError %q", c, want)
	}

	// A node error comes first and names the reason; the sinks' failures
	// still show.
	reports["n2"].producer.State, reports["n2"].producer.LastError = schemas.StateError, "no such interface"
	st = buildStatus(pc, v, reports, "u-1", t0)
	c = meta.FindStatusCondition(st.Conditions, v3.ConditionError)
	if c == nil || c.Reason != ReasonNodeError || !strings.HasPrefix(c.Message, "n2: no such interface; n1: flow sink") {
		t.Errorf("error condition %+v", c)
	}
}

// TestBuildStatusSinkRetrying: a pcap sink retrying a capture's writes
// (its report's lastError) puts that capture in Error with reason
// SinkError while it lasts; the next report without it clears it.
func TestBuildStatusSinkRetrying(t *testing.T) {
	pc := newCapture("all()")
	reports := map[string]nodeReports{"n1": {
		producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateCapturing, Packets: 10},
		sink:     &schemas.Status{Source: schemas.SourcePcapSink, LastError: "storing pcap objects fails, retrying: SlowDown"},
	}}
	v := &view{uid: "u-1", generation: 1, phase: PhaseActive, nodes: []string{"n1"}, endpoints: 1}
	st := buildStatus(pc, v, reports, "u-1", t0)
	c := meta.FindStatusCondition(st.Conditions, v3.ConditionError)
	if want := "n1: pcap sink: storing pcap objects fails, retrying: SlowDown"; c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonSinkError || c.Message != want {
		t.Errorf("while retrying: condition %+v, want True SinkError %q", c, want)
	}
	reports["n1"].sink.LastError = ""
	st = buildStatus(pc, v, reports, "u-1", t0)
	if c := meta.FindStatusCondition(st.Conditions, v3.ConditionError); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("after the retry succeeded: condition %+v, want False", c)
	}
}

// clusterFiles is a capture on nodes nodes with every name at its longest:
// 253-byte node names, 256 object names of 1 KiB each and a 4 KiB error
// per node, what the reports allow.
func clusterFiles(nodes int) (*v3.PacketCapture, map[string]nodeReports) {
	pc := newCapture("all()")
	pc.Namespace, pc.Name = strings.Repeat("n", 63), strings.Repeat("c", 253)
	reports := map[string]nodeReports{}
	for i := range nodes {
		node := fmt.Sprintf("%04d%s", i, strings.Repeat("x", 249))
		objs := make([]string, schemas.MaxStatusObjects)
		for j := range objs {
			objs[j] = fmt.Sprintf("%03d%s", j, strings.Repeat("o", schemas.MaxObjectNameLength-3))
		}
		reports[node] = nodeReports{
			producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateError, Packets: 1000, Bytes: 1 << 20, KernelDrops: 1,
				LastError: strings.Repeat("é", schemas.MaxErrorLength/2)},
			sink: &schemas.Status{Source: schemas.SourcePcapSink, Directory: "s3://" + strings.Repeat("b", 63) + "/capstream/" + pc.Namespace + "/" + pc.Name + "/" + node + "/",
				Objects: objs, ObjectCount: 10000},
		}
	}
	return pc, reports
}

// TestStatusFitsAtClusterSize checks the files list of a capture over
// 1000 nodes, every name at its longest, stays under maxFilesBytes as
// encoded, with one entry per node and the counters whole; and that a
// small capture keeps every name.
func TestStatusFitsAtClusterSize(t *testing.T) {
	for _, nodes := range []int{1, 8, 100, 1000, 1500} {
		t.Run(fmt.Sprint(nodes), func(t *testing.T) {
			// Up to 1000 nodes the list fits its budget; beyond, the
			// entries alone outgrow it, and the bound is etcd's limit
			// with a margin.
			limit := maxFilesBytes
			if nodes > 1000 {
				limit = 1 << 20
			}
			pc, reports := clusterFiles(nodes)
			v := &view{uid: "u-1", generation: 1, phase: PhaseActive, nodes: []string{"n"}, endpoints: 1}
			st := buildStatus(pc, v, reports, "u-1", t0)
			b, err := json.Marshal(st.Files)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > limit {
				t.Errorf("files list %d bytes, want at most %d", len(b), limit)
			}
			whole, _ := json.Marshal(st)
			t.Logf("%d nodes: files %d KiB, status %d KiB", nodes, len(b)>>10, len(whole)>>10)
			if len(st.Files) != nodes {
				t.Errorf("%d entries, want one per node (%d)", len(st.Files), nodes)
			}
			if st.Objects != int64(nodes)*10000 || st.Packets != int64(nodes)*1000 || st.Drops != int64(nodes) {
				t.Errorf("totals objects %d packets %d drops %d", st.Objects, st.Packets, st.Drops)
			}
			if nodes == 1 {
				if f := st.Files[0]; len(f.FileNames) != schemas.MaxStatusObjects || f.Directory == "" {
					t.Errorf("%d names, directory %q; one node keeps them all", len(f.FileNames), f.Directory)
				}
			}
			if nodes <= 100 {
				for _, f := range st.Files {
					if len(f.FileNames) == 0 || f.Directory == "" {
						t.Errorf("node %.8s: %d names, directory %q; want some names and the directory", f.Node, len(f.FileNames), f.Directory)
					}
				}
			}
			// The names kept are the most recent, which the sink lists first.
			if f := st.Files[0]; len(f.FileNames) > 0 && !strings.HasPrefix(f.FileNames[0], "000") {
				t.Errorf("first name kept %.8s, want the sink's first", f.FileNames[0])
			}
			// Idempotent, so the writer can skip unchanged writes.
			pc.Status = st
			if diff := cmp.Diff(st, buildStatus(pc, v, reports, "u-1", t0)); diff != "" {
				t.Errorf("not idempotent (-first +second):\n%.2000s", diff)
			}
		})
	}
}

// TestClusterSizeStatusWrites checks that the API server accepts the status
// of a capture over 1000 nodes with every name at its longest (before the
// list was bounded, such a write was refused for good: etcd's request
// limit is 1.5 MiB).
func TestClusterSizeStatusWrites(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	u := k.CreateCapture(t, ns, strings.Repeat("c", 253), "all()")
	pc, err := fromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	_, reports := clusterFiles(1000)
	st := buildStatus(pc, &view{uid: string(pc.UID), generation: pc.Generation, phase: PhaseActive, nodes: []string{"n"}, endpoints: 1}, reports, string(pc.UID), t0)
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		t.Fatal(err)
	}
	u.Object["status"] = obj
	got, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).UpdateStatus(t.Context(), u, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("status of 1000 nodes refused: %v", err)
	}
	back, err := fromUnstructured(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Status.Files) != 1000 || back.Status.Objects != 1000*10000 {
		t.Errorf("stored %d files, %d objects; want 1000, %d", len(back.Status.Files), back.Status.Objects, 1000*10000)
	}
}
