package sinktest

import (
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// Partition is the partition the packets stream stores a batch of the
// capture name on node in (namespace ns), with n partitions: the server's
// {{partition(n,1,2,3)}}, FNV-1a of the three subject tokens one after
// the other, modulo n. TestPartitionMatchesServer checks it against the
// server.
func Partition(ns, name, node string, n int) int {
	h := fnv.New32a()
	for _, s := range []string{ns, name, node} {
		tok, err := schemas.Token(s)
		if err != nil {
			panic(err)
		}
		_, _ = h.Write([]byte(tok))
	}
	return int(h.Sum32() % uint32(n))
}

// CapturesCovering returns how many captures Captures must make of
// batches (all of one namespace and node) so that every one of the
// stream's default partitions holds some: a replica that joins then
// always gets a partition with traffic.
func CapturesCovering(batches []Batch) int {
	h := batches[0].Header
	seen := map[int]bool{}
	k := 0
	for len(seen) < schemas.DefaultPacketPartitions {
		seen[Partition(h.Namespace, fmt.Sprintf("cap-%d", k), h.Node, schemas.DefaultPacketPartitions)] = true
		k++
	}
	return k
}

// Captures returns batches as n captures (cap-<k>, uid-<k>) on the same
// node would publish them, interleaved as they arrive live: n (capture,
// node) pairs, which the packets stream spreads over its partitions.
func Captures(batches []Batch, n int) []Batch {
	var out []Batch
	for i := range batches {
		for k := range n {
			b := batches[i]
			b.Header.Capture, b.Header.CaptureUID = fmt.Sprintf("cap-%d", k), fmt.Sprintf("uid-%d", k)
			out = append(out, b)
		}
	}
	return out
}

// WaitMembers waits until every replica of a sink (component "pcap" or
// "flows") knows all the others, then one round more, so that each has
// taken the partitions assigned to it.
func WaitMembers(t *testing.T, component string, rs ...*Instance) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		for i, r := range rs {
			if n := r.Metric("capstream_sink_"+component+"_group_members", nil); n != float64(len(rs)) {
				return fmt.Errorf("replica %d knows %v replicas, want %d", i, n, len(rs))
			}
		}
		return nil
	})
	time.Sleep(2 * RebalanceInterval)
}

// JoinThenCrash runs two replicas of a sink (component "pcap" or
// "flows"; start starts one), publishes a third of all, starts a third
// replica, publishes the next third, kills whichever of the first two
// holds a batch (holds), publishes the rest and waits until the sink's
// consumers of durable are drained. It stops the two left, checking that
// a partition was released to the one that joined and that neither
// counted a lost batch; the caller checks what was stored.
func JoinThenCrash[S any](t *testing.T, e *Env, component, durable string, all []Batch, start func() *Running[S], holds func(*Running[S]) bool) {
	t.Helper()
	a, b := start(), start()
	WaitMembers(t, component, a.Instance, b.Instance)
	third := len(all) / 3
	if err := Publish(t.Context(), e.NATS.JS, all[:third]); err != nil {
		t.Fatal(err)
	}
	c := start()
	WaitMembers(t, component, a.Instance, b.Instance, c.Instance)
	if err := Publish(t.Context(), e.NATS.JS, all[third:2*third]); err != nil {
		t.Fatal(err)
	}
	survivor := KillHolder(t, a, b, holds)
	if err := Publish(t.Context(), e.NATS.JS, all[2*third:]); err != nil {
		t.Fatal(err)
	}
	e.WaitDrained(t, durable, 60*time.Second, false)
	prefix := "capstream_sink_" + component + "_"
	released := a.Metric(prefix+"partitions_released_total", nil) + b.Metric(prefix+"partitions_released_total", nil)
	survivor.Stop()
	c.Stop()
	if released == 0 {
		t.Error("no partition released to the replica that joined")
	}
	for name, x := range map[string]*Instance{"survivor": survivor.Instance, "joined": c.Instance} {
		if got := x.Metric(prefix+"lost_batches_total", nil); got != 0 {
			t.Errorf("%s counted %v lost batches, want 0", name, got)
		}
	}
}
