package router

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

func TestBuildStatus(t *testing.T) {
	pc := newCapture("all()")
	pc.Status.Files = []v3.PacketCaptureFile{{Node: "old-node", Directory: "s3://b/p/old/", FileNames: []string{"x.pcap"}, State: statePtr(v3.StateCapturing), Packets: 5}}
	reports := map[string]nodeReports{
		"n1": {
			producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateCapturing, Packets: 10, Bytes: 1000, KernelDrops: 1, PublishDrops: 2},
			sink:     &schemas.Status{Source: schemas.SourcePcapSink, Directory: "s3://b/p/n1/", Objects: []string{"a.pcap", "b.pcap"}},
		},
		"n2": {producer: &schemas.Status{Source: schemas.SourceProducer, State: schemas.StateError, LastError: "no such interface"}},
	}
	v := &view{uid: "u-1", generation: 3, phase: PhaseActive, nodes: []string{"n1", "n2"}, endpoints: 2}
	st := buildStatus(pc, v, reports, "u-1", t0)
	want := []v3.PacketCaptureFile{
		{Node: "n1", Directory: "s3://b/p/n1/", FileNames: []string{"a.pcap", "b.pcap"}, Objects: 2, State: statePtr(v3.StateCapturing), Packets: 10, Bytes: 1000, Drops: 3},
		{Node: "n2", State: statePtr(v3.StateError), LastError: "no such interface"},
		{Node: "old-node", Directory: "s3://b/p/old/", FileNames: []string{"x.pcap"}, State: statePtr(v3.StateCapturing), Packets: 5},
	}
	if diff := cmp.Diff(want, st.Files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if st.Packets != 15 || st.Bytes != 1000 || st.Drops != 3 || st.Objects != 3 || st.ObservedGeneration != 3 {
		t.Errorf("totals %d %d %d %d gen %d", st.Packets, st.Bytes, st.Drops, st.Objects, st.ObservedGeneration)
	}
	if c := meta.FindStatusCondition(st.Conditions, v3.ConditionError); c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonNodeError {
		t.Errorf("error condition %+v", c)
	}
	if c := meta.FindStatusCondition(st.Conditions, v3.ConditionReady); c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonCapturing {
		t.Errorf("ready condition %+v", c)
	}

	// Applying the same inputs to the result changes nothing, even later:
	// that is what lets the writer skip and not loop.
	pc.Status = st
	again := buildStatus(pc, v, reports, "u-1", t0.Add(time.Hour))
	if diff := cmp.Diff(st, again); diff != "" {
		t.Errorf("not idempotent (-first +second):\n%s", diff)
	}

	// Reports of another UID are ignored; the end passing finishes all.
	fin := &view{uid: "u-1", generation: 4, phase: PhaseFinished}
	st = buildStatus(pc, fin, map[string]nodeReports{"n9": reports["n1"]}, "other", t0)
	for _, f := range st.Files {
		if f.Node == "n9" {
			t.Error("report of another UID applied")
		}
		if want := v3.StateFinished; f.Node != "n2" && *f.State != want {
			t.Errorf("node %s state %s, want %s", f.Node, *f.State, want)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, v3.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonFinished {
		t.Errorf("ready condition %+v", c)
	}

	// Invalid spec.
	st = buildStatus(newCapture("bad"), &view{uid: "u-1", generation: 1, invalid: "spec.selector: bad"}, nil, "", t0)
	if c := meta.FindStatusCondition(st.Conditions, v3.ConditionError); c == nil || c.Reason != ReasonInvalidSpec || c.Message != "spec.selector: bad" {
		t.Errorf("error condition %+v", c)
	}
}
