package pcapstore

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// step is one batch (or tick) given to the core in a test.
type step struct {
	at time.Duration // since t0
	// tick, when set, ticks instead of adding a batch.
	tick bool
	// iface, seq, bytes (of record data; 0: an empty batch), last and the
	// header fields that rotate an object.
	iface    string
	seq      uint64
	bytes    int
	last     bool
	producer string
	pod      string
	snap     uint32
}

// delivery builds the batch of s with stream sequence streamSeq.
func (s step) delivery(streamSeq uint64) sink.Delivery {
	h := sinktest.Header("team-a", "web.capture", "uid-1", "node-1", "web-0", s.iface)
	h.Seq, h.Last = s.seq, s.last
	if s.producer != "" {
		h.Producer = s.producer
	}
	if s.pod != "" {
		h.Pod = s.pod
	}
	if s.snap != 0 {
		h.SnapLength = s.snap
	}
	var body []byte
	if s.bytes > 0 {
		body = schemas.AppendRecord(nil, t0.Add(s.at), make([]byte, s.bytes), s.bytes)
		h.Packets = 1
	}
	return sink.Delivery{Header: h, Body: body, StreamSeq: streamSeq, Delivered: 1, Reply: fmt.Sprintf("reply.%d", streamSeq)}
}

// sealEvent is what the tests compare: which object was sealed and why.
type sealEvent struct {
	Step   int
	Iface  string
	First  uint64 // first stream sequence of the object
	Seqs   string // producer sequences it holds
	Reason string
}

func runSteps(c *core, steps []step) (events []sealEvent, unheld []int) {
	for i, s := range steps {
		var sealed []*object
		now := t0.Add(s.at)
		if s.tick {
			sealed = c.tick(now)
		} else {
			d := s.delivery(uint64(i + 1))
			var ok bool
			sealed, ok = c.add(&d, now)
			if !ok {
				unheld = append(unheld, i)
			}
		}
		var evs []sealEvent
		for _, o := range sealed {
			evs = append(evs, sealEvent{Step: i, Iface: o.key.iface, First: o.firstSeq, Seqs: o.seqs.String(), Reason: o.reason})
		}
		if s.tick { // map order; a batch seals in decision order
			sort.Slice(evs, func(a, b int) bool { return evs[a].Iface < evs[b].Iface })
		}
		events = append(events, evs...)
	}
	return events, unheld
}

func testCoreConfig() coreConfig {
	return coreConfig{
		prefix: "p", maxObjectBytes: 64 << 10, maxBufferedBytes: 1 << 20,
		maxObjectAge: time.Minute, stopAfter: 10 * time.Second,
	}
}

func TestCoreSeals(t *testing.T) {
	cases := map[string]struct {
		cfg    func(*coreConfig)
		steps  []step
		want   []sealEvent
		unheld []int
	}{
		"same run fills one object": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 2, bytes: 100}},
		},
		"producer change rotates": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 1, bytes: 100, producer: "other"}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1", Reason: "rotate"}},
		},
		"pod change rotates": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 2, bytes: 100, pod: "web-1"}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1", Reason: "rotate"}},
		},
		"format change rotates": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 2, bytes: 100, snap: 128}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1", Reason: "rotate"}},
		},
		"a batch that would overflow seals first": {
			steps: []step{{iface: "a", seq: 1, bytes: 40 << 10}, {iface: "a", seq: 2, bytes: 40 << 10}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1", Reason: "size"}},
		},
		"reaching the size seals after": {
			steps: []step{{iface: "a", seq: 1, bytes: 64 << 10}},
			want:  []sealEvent{{Step: 0, Iface: "a", First: 1, Seqs: "1", Reason: "size"}},
		},
		"last batch stops": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 2, bytes: 100, last: true}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1-2", Reason: "stop"}},
		},
		"empty last batch completes the open object": {
			steps: []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 2, last: true}},
			want:  []sealEvent{{Step: 1, Iface: "a", First: 1, Seqs: "1-2", Reason: "stop"}},
		},
		"empty last batch with nothing open is not held": {
			steps:  []step{{iface: "a", seq: 7, last: true}},
			unheld: []int{0},
		},
		"empty last batch of another producer is not held": {
			steps:  []step{{iface: "a", seq: 1, bytes: 100}, {iface: "a", seq: 1, last: true, producer: "other"}},
			unheld: []int{1},
		},
		"range limit rotates": {
			steps: func() []step {
				var s []step
				for i := range maxRanges + 1 {
					s = append(s, step{iface: "a", seq: uint64(2*i + 1), bytes: 10})
				}
				return s
			}(),
			want: []sealEvent{{Step: maxRanges, Iface: "a", First: 1, Seqs: "1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33,35,37,39,41,43,45,47,49,51,53,55,57,59,61,63", Reason: "rotate"}},
		},
		// Sealing frees nothing until the upload is done, so over the
		// budget every open object is sealed, largest first.
		"memory budget seals the largest open object first": {
			cfg: func(c *coreConfig) { c.maxBufferedBytes = 60 << 10 },
			steps: []step{
				{iface: "a", seq: 1, bytes: 100},
				{iface: "b", seq: 1, bytes: 30 << 10},
				{iface: "c", seq: 1, bytes: 5 << 10},
			},
			want: []sealEvent{
				{Step: 2, Iface: "b", First: 2, Seqs: "1", Reason: "memory"},
				{Step: 2, Iface: "c", First: 3, Seqs: "1", Reason: "memory"},
				{Step: 2, Iface: "a", First: 1, Seqs: "1", Reason: "memory"},
			},
		},
		"under the budget nothing is sealed": {
			cfg: func(c *coreConfig) { c.maxBufferedBytes = 64 << 10 },
			steps: []step{
				{iface: "a", seq: 1, bytes: 100},
				{iface: "b", seq: 1, bytes: 30 << 10},
				{iface: "c", seq: 1, bytes: 5 << 10},
			},
		},
		"age and quiet on ticks": {
			steps: []step{
				{iface: "a", seq: 1, bytes: 100},
				{at: 5 * time.Second, iface: "b", seq: 1, bytes: 100},
				{at: 9 * time.Second, tick: true},
				{at: 10 * time.Second, tick: true},
				{at: 12 * time.Second, iface: "c", seq: 1, bytes: 100},
				{at: 16 * time.Second, tick: true},
				{at: 50 * time.Second, iface: "c", seq: 2, bytes: 100},
				{at: 71 * time.Second, iface: "c", seq: 3, bytes: 100},
				{at: 72 * time.Second, tick: true},
			},
			want: []sealEvent{
				{Step: 3, Iface: "a", First: 1, Seqs: "1", Reason: "stop"},
				{Step: 5, Iface: "b", First: 2, Seqs: "1", Reason: "stop"},
				{Step: 8, Iface: "c", First: 5, Seqs: "1-3", Reason: "age"},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := testCoreConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			c := newCore(cfg)
			got, unheld := runSteps(c, tc.steps)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("sealed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.unheld, unheld); diff != "" {
				t.Errorf("batches not held (-want +got):\n%s", diff)
			}
		})
	}
}

// The budget counts every object held until it is released, and a
// redelivered batch still held keeps its newest reply subject.
func TestCoreBudgetAndRelease(t *testing.T) {
	c := newCore(testCoreConfig())
	d := step{iface: "a", seq: 1, bytes: 100}.delivery(1)
	if sealed, _ := c.add(&d, t0); len(sealed) != 0 {
		t.Fatalf("sealed %d objects", len(sealed))
	}
	if c.buffered <= 0 || c.overBudget() {
		t.Fatalf("buffered %d", c.buffered)
	}
	again := d
	again.Delivered, again.Reply = 2, "reply.new"
	if !c.holds(&again) {
		t.Fatal("a held batch is not found by its stream sequence")
	}
	sealed := c.sealAll("shutdown", t0)
	if len(sealed) != 1 || sealed[0].batches[0].reply != "reply.new" || sealed[0].reason != "shutdown" {
		t.Fatalf("sealed %+v", sealed)
	}
	if len(c.open) != 0 || len(c.live) != 1 || len(c.bySeq) != 1 {
		t.Fatalf("open %d live %d bySeq %d after sealing", len(c.open), len(c.live), len(c.bySeq))
	}
	c.release(sealed[0])
	if diff := cmp.Diff([3]int64{0, 0, 0}, [3]int64{c.buffered, int64(len(c.live)), int64(len(c.bySeq))}); diff != "" {
		t.Errorf("buffered, live, bySeq after release (-want +got):\n%s", diff)
	}
}

// wake is StopAfter after the quietest open object, but not sooner than
// StopAfter/32 from now, and none while nothing is open.
func TestCoreWake(t *testing.T) {
	cases := map[string]struct {
		touched []time.Duration // since t0, one interface each
		now     time.Duration
		want    time.Duration // since t0; -1 for none
	}{
		"nothing open": {now: time.Second, want: -1},
		"quietest first": {
			touched: []time.Duration{3 * time.Second, time.Second}, now: 4 * time.Second, want: 11 * time.Second,
		},
		"not sooner than a 32nd of StopAfter": {
			touched: []time.Duration{0}, now: 20 * time.Second, want: 20*time.Second + 10*time.Second/32,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := newCore(testCoreConfig())
			for i, at := range tc.touched {
				d := step{iface: fmt.Sprint(i), seq: 1, bytes: 10}.delivery(uint64(i + 1))
				c.add(&d, t0.Add(at))
			}
			got := c.wake(t0.Add(tc.now))
			want := time.Time{}
			if tc.want >= 0 {
				want = t0.Add(tc.want)
			}
			if !got.Equal(want) {
				t.Errorf("wake %v, want %v", got, want)
			}
		})
	}
}
