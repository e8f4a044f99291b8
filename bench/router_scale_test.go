package main

import (
	"testing"
	"time"
)

// TestRouterScale runs the router scale phase small (50 nodes, 500 pods,
// 20 captures, 20 label changes): the router process must publish exactly
// the commands the pods and captures call for, every label change must
// reach the bus, and the command set must match again afterwards. The
// figures are only reported; `go run ./bench -router-scale` measures them
// at 1000 nodes, 20,000 pods and 500 captures.
func TestRouterScale(t *testing.T) {
	o := kubePhaseOptions(t)
	o.RouterScaleNodes, o.RouterScalePods, o.RouterScaleCaptures, o.RouterScaleChanges = 50, 500, 20, 20
	routerScaleChangeWait = 5 * time.Second
	r := runPhase(t, o, runRouterScale)
	if r.Expected < r.Captures || r.Endpoints < r.Expected {
		t.Errorf("the workload calls for %d commands with %d endpoints: too few to test anything", r.Expected, r.Endpoints)
	}
	if r.FirstFull == 0 || r.Msgs < r.Expected {
		t.Errorf("first full set after %s with %d messages, want %d commands", r.FirstFull, r.Msgs, r.Expected)
	}
	if r.Missed > 0 || r.Latency.P50 <= 0 {
		t.Errorf("label changes: %d of %d missed, latency %s", r.Missed, r.Changes, r.Latency)
	}
	if !r.Settled {
		t.Error("commands differ from the model after the label changes")
	}
	if r.RSS <= 0 || r.HWM <= 0 || r.Live <= 0 {
		t.Errorf("memory not measured: rss %d, hwm %d, live %d", r.RSS, r.HWM, r.Live)
	}
	if len(r.Problems) > 0 {
		t.Errorf("problems: %v", r.Problems)
	}
}
