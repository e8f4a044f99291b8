package sinktest

import (
	"fmt"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
)

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
