package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// onePodCapture is onePodHarness with capture "cap" of its pod,
// commanded, and the capture's UID.
func onePodCapture(t *testing.T) (*harness, string) {
	t.Helper()
	h := onePodHarness(t)
	h.createCapture("cap", "all()")
	h.expect("cap", map[string][]string{"node-1": {"p"}})
	pc, err := h.getCapture("cap")
	if err != nil {
		t.Fatal(err)
	}
	return h, string(pc.UID)
}

// TestSinkReportsShow checks, against the API server, that the sinks'
// reports reach the capture: a pcap sink's failures become the Error
// condition (reason SinkError) and a Warning Event, a sink's losses to the
// stream's limits count as drops, and the object count is the sink's total
// rather than the names listed.
func TestSinkReportsShow(t *testing.T) {
	h, uid := onePodCapture(t)
	publish := func(s *schemas.Status) {
		t.Helper()
		s.Namespace, s.Name, s.UID, s.Node, s.State, s.Time = h.ns, "cap", uid, "node-1", schemas.StateCapturing, time.Now()
		if err := h.publishStatus(s); err != nil {
			t.Fatal(err)
		}
	}
	publish(&schemas.Status{Source: schemas.SourceProducer, Packets: 100, KernelDrops: 1})
	publish(&schemas.Status{Source: schemas.SourcePcapSink, Packets: 90, Directory: "s3://b/capstream/" + h.ns + "/cap/node-1/",
		Objects: []string{"p_cali0/a.pcap"}, ObjectCount: 12, LostBatches: 1, LostPackets: 4,
		Failures: []schemas.Failure{{Reason: schemas.FailureStorageRefused, Batches: 2, Message: "put: NoSuchBucket"}}})
	publish(&schemas.Status{Source: schemas.SourceFlowSink, LostBatches: 2, LostPackets: 9})

	waitCondition(t, h, "cap", v3.ConditionError, metav1.ConditionTrue, ReasonSinkError)
	testenv.Eventually(t, waitFor, func() error {
		got, err := h.getCapture("cap")
		if err != nil {
			return err
		}
		if got.Status.Drops != 1+9 || got.Status.Objects != 12 {
			return fmt.Errorf("drops %d objects %d; want 10 (a kernel drop and the flow sink's 9 lost) and 12", got.Status.Drops, got.Status.Objects)
		}
		return nil
	})
	testenv.Eventually(t, waitFor, func() error {
		evs, err := h.kube.Client.CoreV1().Events(h.ns).List(t.Context(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=cap,reason=" + ReasonSinkError,
		})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Type == "Warning" && strings.Contains(ev.Message, "pcap sink: StorageRefused, 2 batches terminated: put: NoSuchBucket") {
				return nil
			}
		}
		return errors.New("no SinkError event naming the refused batches")
	})
}

// TestForgedSourceRefused: a report whose body claims a sink as its source
// but that came on the producer's subject (which a node's producer
// identity may publish) is dropped, so a producer cannot put a sink
// failure on a capture; the producer's own report that follows it
// applies.
func TestForgedSourceRefused(t *testing.T) {
	h, uid := onePodCapture(t)
	forged := &schemas.Status{Source: schemas.SourceFlowSink, Namespace: h.ns, Name: "cap", UID: uid, Node: "node-1",
		State: schemas.StateCapturing, Time: time.Now(), LostBatches: 5, LostPackets: 500,
		Failures: []schemas.Failure{{Reason: schemas.FailureStorageRefused, Batches: 5, Message: "forged"}}}
	data, err := schemas.EncodeStatus(forged)
	if err != nil {
		t.Fatal(err)
	}
	producerSubject, err := schemas.StatusSubject(h.ns, "cap", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.nats.JS.Publish(t.Context(), producerSubject, data); err != nil {
		t.Fatal(err)
	}
	if err := h.publishStatus(&schemas.Status{Source: schemas.SourceProducer, Namespace: h.ns, Name: "cap", UID: uid, Node: "node-1",
		State: schemas.StateCapturing, Time: time.Now(), Packets: 77}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitFor, func() error {
		got, err := h.getCapture("cap")
		if err != nil {
			return err
		}
		if got.Status.Packets != 77 {
			return fmt.Errorf("packets %d, want the producer's 77", got.Status.Packets)
		}
		return nil
	})
	got, err := h.getCapture("cap")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Drops != 0 {
		t.Errorf("drops %d: the forged sink report counted", got.Status.Drops)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, v3.ConditionError); c != nil && c.Reason == ReasonSinkError {
		t.Errorf("condition %+v: the forged sink failure shows", c)
	}
}
