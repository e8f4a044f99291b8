package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/schemas"
)

// del is one delivery: producer, Seq, packets, PacketsBefore (-1: no
// counts), dropped batches and packets, times delivered, consumer seq.
type del struct {
	producer                string
	seq                     uint64
	packets                 uint32
	before                  int64
	dropB, dropP, delivered uint64
	cons                    uint64
}

func (x del) delivery() Delivery {
	h := schemas.BatchHeader{CaptureUID: "uid", Node: "n", Interface: "eth0", Producer: x.producer, Seq: x.seq, Packets: x.packets}
	if x.before >= 0 {
		h.Counts = schemas.RunCounts{Known: true, PacketsBefore: uint64(x.before), DroppedBatches: x.dropB, DroppedPackets: x.dropP}
	}
	return Delivery{Header: h, Delivered: x.delivered, ConsumerSeq: x.cons}
}

func TestGaps(t *testing.T) {
	tests := map[string]struct {
		in          []del
		wantBatches uint64
		wantPackets uint64
	}{
		"none": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 2, 10, 10, 0, 0, 1, 2}}},
		"two removed": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 4, 10, 25, 0, 0, 1, 2}},
			wantBatches: 2, wantPackets: 15},
		"old header: batches only": {in: []del{{"p", 1, 10, -1, 0, 0, 1, 1}, {"p", 4, 10, -1, 0, 0, 1, 2}},
			wantBatches: 2},
		"producer drop is not a loss": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 3, 10, 17, 1, 7, 1, 2}}},
		"drop and loss": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 4, 10, 27, 1, 7, 1, 2}},
			wantBatches: 1, wantPackets: 10},
		"redelivery and duplicate": {in: []del{
			{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 2, 10, 10, 0, 0, 1, 2}, {"p", 1, 10, 0, 0, 0, 2, 3}, {"p", 2, 10, 10, 0, 0, 1, 4}, {"p", 3, 10, 20, 0, 0, 1, 5},
		}},
		"after a redelivery, no chain": {in: []del{{"p", 1, 10, 0, 0, 0, 2, 1}, {"p", 4, 10, 30, 0, 0, 1, 2}}},
		"a gap ending in a redelivery": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 4, 10, 30, 0, 0, 2, 2}}},
		// Consumer sequences 3 and 4 went to another replica.
		"another replica's deliveries": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 2, 10, 10, 0, 0, 1, 2}, {"p", 5, 10, 40, 0, 0, 1, 5}}},
		"producer restart":             {in: []del{{"p", 5, 10, 40, 0, 0, 1, 1}, {"q", 1, 10, 0, 0, 0, 1, 2}, {"q", 2, 10, 10, 0, 0, 1, 3}}},
		"counts went back":             {in: []del{{"p", 1, 10, 0, 3, 3, 1, 1}, {"p", 4, 10, 5, 0, 0, 1, 2}}, wantBatches: 2},
		"last ends the chain":          {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 2, 0, 10, 0, 0, 1, 2}, {"p", 5, 10, 10, 0, 0, 1, 3}}},
		// A producer's retry (stream-leader election) lands after the
		// batches published meanwhile: the gap fills.
		"retried batch lands late": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 3, 10, 20, 0, 0, 1, 2}, {"p", 2, 10, 10, 0, 0, 1, 3}}},
		"retries land late, out of order": {in: []del{
			{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 5, 10, 40, 0, 0, 1, 2}, {"p", 3, 10, 20, 0, 0, 1, 3}, {"p", 2, 10, 10, 0, 0, 1, 4}, {"p", 4, 10, 30, 0, 0, 1, 5},
		}},
		"one of two retried, one removed": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 4, 10, 25, 0, 0, 1, 2}, {"p", 3, 5, 15, 0, 0, 1, 3}},
			wantBatches: 1, wantPackets: 10},
		"a redelivery does not fill": {in: []del{{"p", 1, 10, 0, 0, 0, 1, 1}, {"p", 3, 10, 20, 0, 0, 1, 2}, {"p", 2, 10, 10, 0, 0, 2, 3}},
			wantBatches: 1, wantPackets: 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var g gaps
			var b, p uint64
			now := time.Now()
			for i, x := range tc.in {
				d := x.delivery()
				d.Header.Last = name == "last ends the chain" && i == 1
				if l, ok := g.see(&d, "subj", now); ok {
					t.Errorf("delivery %d: gap counted at once", i)
					b, p = b+l.batches, p+l.packets
				}
			}
			// Nothing is counted before the window, everything after.
			if got := g.expire(now.Add(schemas.PublishRetryWindow - time.Second)); len(got) != 0 {
				t.Errorf("gaps counted before the retry window: %+v", got)
			}
			for _, l := range g.expire(now.Add(schemas.PublishRetryWindow)) {
				b, p = b+l.batches, p+l.packets
			}
			if diff := cmp.Diff([2]uint64{tc.wantBatches, tc.wantPackets}, [2]uint64{b, p}); diff != "" {
				t.Errorf("lost batches, packets (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGapsSuspectsBounded: past maxSuspects waiting gaps, a new gap is
// counted at once rather than held.
func TestGapsSuspectsBounded(t *testing.T) {
	var g gaps
	now := time.Now()
	var counted uint64
	for i := range maxSuspects + 5 {
		iface := fmt.Sprintf("if%d", i)
		for j, x := range []del{{"p", 1, 10, 0, 0, 0, 1, 0}, {"p", 3, 10, 20, 0, 0, 1, 0}} {
			d := x.delivery()
			d.Header.Interface, d.ConsumerSeq = iface, uint64(2*i+j+1)
			if l, ok := g.see(&d, "subj", now); ok {
				counted += l.batches
			}
		}
	}
	if len(g.suspects) != maxSuspects || counted != 5 {
		t.Errorf("%d suspects held and %d batches counted at once, want %d and 5", len(g.suspects), counted, maxSuspects)
	}
	if got := len(g.expire(now.Add(schemas.PublishRetryWindow))); got != maxSuspects || len(g.suspects) != 0 {
		t.Errorf("%d suspects expired, %d left, want %d and 0", got, len(g.suspects), maxSuspects)
	}
}

func TestGapsBounded(t *testing.T) {
	var g gaps
	now := time.Now()
	for i := range maxRuns + 10 {
		d := del{producer: "p", seq: 1, packets: 1, delivered: 1, cons: uint64(i + 1)}.delivery()
		d.Header.Interface = "if" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)) + string(rune('a'+i/17576))
		g.see(&d, "subj", now)
	}
	if len(g.runs) > maxRuns {
		t.Errorf("%d runs kept, want at most %d", len(g.runs), maxRuns)
	}
	// Overflowing made room in bulk: the next runs are added without
	// another scan of the whole map each.
	if len(g.runs) > maxRuns-runsFreed+10 {
		t.Errorf("%d runs kept after overflowing, want at most %d", len(g.runs), maxRuns-runsFreed+10)
	}
	g.prune(now.Add(runIdle), false)
	if len(g.runs) != 0 {
		t.Errorf("%d runs kept after %s idle, want 0", len(g.runs), runIdle)
	}
}
