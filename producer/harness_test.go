package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// The functional tests' harness: a producer run with testenv.Start
// against an embedded JetStream, on a network-namespace node, with every
// status report it publishes and a reader of the batches it stores.

const testNode = "node-1"

// harness is a producer under test with its JetStream and node.
type harness struct {
	t    *testing.T
	srv  *testenv.NATSServer
	node *testenv.Node
	cons jetstream.Consumer

	mu     sync.Mutex
	status map[string]*schemas.Status // by subject

	// batches lists, by capture, the batches drain has read, in stream
	// order, so tests can check where the last-batch marks fall.
	batches map[string][]schemas.BatchHeader
}

func newHarness(t *testing.T, pods ...testenv.Pod) *harness {
	t.Helper()
	h := &harness{t: t, status: map[string]*schemas.Status{}, batches: map[string][]schemas.BatchHeader{}}
	if len(pods) > 0 {
		h.node = testenv.NetNode(t, pods...)
	}
	h.srv = testenv.NATS(t)
	h.cons = ensureStreams(t, h.srv)
	sub, err := h.srv.Conn.Subscribe(schemas.StatusSubjectsAll, func(m *nats.Msg) {
		s, err := schemas.DecodeStatus(m.Data)
		if err != nil {
			t.Errorf("bad status on %s: %v", m.Subject, err)
			return
		}
		h.mu.Lock()
		h.status[m.Subject] = s
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

// ensureStreams creates capstream's streams on srv and the pcap sink's
// consumer, which it returns: the packets stream keeps batches only for
// existing consumers.
func ensureStreams(tb testing.TB, srv *testenv.NATSServer) jetstream.Consumer {
	tb.Helper()
	ctx := context.Background()
	if err := schemas.EnsureStreams(ctx, srv.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		tb.Fatal(err)
	}
	cons, err := srv.JS.CreateOrUpdateConsumer(ctx, schemas.StreamPackets, schemas.PcapSinkConsumer())
	if err != nil {
		tb.Fatal(err)
	}
	return cons
}

// connect dials url as a producer does; the connection closes when the
// test ends, after the producer has stopped.
func connect(tb testing.TB, url string, logger *slog.Logger) *nats.Conn {
	tb.Helper()
	nc, err := clients.NATSConfig{URL: url, Name: "capstream-producer"}.Connect(ConnOptions(logger)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func (h *harness) config() Config {
	cfg := DefaultConfig()
	cfg.Node = testNode
	cfg.AFPacket.RingBytes = 8 << 20
	if h.node != nil {
		cfg.AFPacket.NetNS = "/var/run/netns/" + h.node.NetNS
	}
	cfg.StatusInterval = 300 * time.Millisecond
	cfg.BatchDelay = 20 * time.Millisecond
	cfg.GracePeriod = 3 * time.Second
	return cfg
}

// start runs a producer until the returned stop is called (or the test
// ends) and waits until it follows commands.
func (h *harness) start(cfg Config, deps Deps) (*Producer, *prometheus.Registry, func()) {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	if deps.Logger == nil {
		deps.Logger = testenv.Logger(h.t)
	}
	deps.Registerer = reg
	if deps.NATS == nil {
		deps.NATS = connect(h.t, h.srv.URL, deps.Logger)
	}
	p, err := New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	run := testenv.Start(h.t, "producer", p.Run)
	stop := func() {
		h.t.Helper()
		if err := run.Stop(); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}
	testenv.Eventually(h.t, 10*time.Second, p.Ready)
	return p, reg, stop
}

func (h *harness) command(name, uid string, action schemas.Action, filters []schemas.Filter, pods ...*testenv.PodNet) {
	h.t.Helper()
	cmd := &schemas.Command{Action: action, Namespace: "default", Name: name, UID: uid, Generation: 1, Node: testNode,
		Filters: filters, IssuedAt: time.Now()}
	for _, p := range pods {
		cmd.Endpoints = append(cmd.Endpoints, schemas.Endpoint{Pod: p.Name, Namespace: p.Namespace, Interface: p.HostIface})
	}
	h.publishCommand(cmd)
}

func (h *harness) publishCommand(cmd *schemas.Command) {
	h.t.Helper()
	data, err := schemas.EncodeCommand(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	subj, _ := schemas.CommandSubject(cmd.Node, cmd.Namespace, cmd.Name)
	if _, err := h.srv.JS.Publish(h.t.Context(), subj, data); err != nil {
		h.t.Fatal(err)
	}
}

// waitState waits for a producer status of capture name in state.
func (h *harness) waitState(name string, state schemas.State) *schemas.Status {
	h.t.Helper()
	subj, _ := schemas.StatusSubject("default", name, testNode)
	var got *schemas.Status
	testenv.Eventually(h.t, 15*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		s := h.status[subj]
		if s == nil || s.State != state {
			return fmt.Errorf("status of %s: %+v, want %s", name, s, state)
		}
		got = s
		return nil
	})
	return got
}

// warmUp sends traffic with poke until every capture of names reports
// Capturing, so their sockets are open before a compared window starts.
func (h *harness) warmUp(poke func(), names ...string) {
	h.t.Helper()
	testenv.Eventually(h.t, 10*time.Second, func() error {
		poke()
		for _, name := range names {
			if s := h.lastStatus(name); s == nil || s.State != schemas.StateCapturing {
				return fmt.Errorf("%s not capturing yet: %+v", name, s)
			}
		}
		return nil
	})
}

func (h *harness) lastStatus(name string) *schemas.Status {
	subj, _ := schemas.StatusSubject("default", name, testNode)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status[subj]
}

// record is a packet as stored, for comparisons.
type record struct {
	ts   time.Time
	data string
	orig uint32
}

// drain fetches every batch now in the stream (acking them) and returns
// the records by capture name.
func (h *harness) drain() map[string][]record {
	h.t.Helper()
	out := map[string][]record{}
	for {
		batch, err := h.cons.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			hdr, err := schemas.DecodeBatchHeader(msg.Headers())
			if err != nil {
				h.t.Fatalf("batch header: %v", err)
			}
			h.batches[hdr.Capture] = append(h.batches[hdr.Capture], hdr)
			rr := schemas.NewRecordReader(msg.Data(), hdr.SnapLength)
			var got uint32
			for {
				r, err := rr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					h.t.Fatalf("batch body: %v", err)
				}
				got++
				out[hdr.Capture] = append(out[hdr.Capture], record{ts: r.Timestamp(), data: string(r.Data), orig: r.OrigLen})
			}
			if got != hdr.Packets {
				h.t.Errorf("batch has %d records, header says %d", got, hdr.Packets)
			}
			_ = msg.Ack()
		}
		if batch.Error() != nil {
			h.t.Fatal(batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// lastMarks checks the batches drain read for capture: per interface, a
// last mark on the final batch only, and one per producer run (wantRuns).
func (h *harness) lastMarks(capture string, wantRuns int) {
	h.t.Helper()
	type run struct{ iface, producer string }
	final := map[run]schemas.BatchHeader{}
	marks := 0
	for _, b := range h.batches[capture] {
		r := run{b.Interface, b.Producer}
		if prev, ok := final[r]; ok && prev.Last {
			h.t.Errorf("%s: batch %d of %s follows the last batch %d", capture, b.Seq, r.iface, prev.Seq)
		}
		final[r] = b
		if b.Last {
			marks++
		}
	}
	for r, b := range final {
		if !b.Last {
			h.t.Errorf("%s: the final batch %d of %s (producer %s) is not marked last", capture, b.Seq, r.iface, r.producer)
		}
	}
	if marks != wantRuns {
		h.t.Errorf("%s: %d batches marked last, want %d", capture, marks, wantRuns)
	}
}
