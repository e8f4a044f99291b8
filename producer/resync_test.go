package producer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// proxy is a TCP relay between a producer and the NATS server, so a test
// can cut one client off while the server and the test's own connection
// stay up.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newProxy(t *testing.T, natsURL string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &proxy{ln: ln, target: strings.TrimPrefix(natsURL, "nats://")}
	px.wg.Go(px.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		px.cut()
		px.wg.Wait()
	})
	return px
}

func (px *proxy) url() string { return "nats://" + px.ln.Addr().String() }

func (px *proxy) accept() {
	for {
		c, err := px.ln.Accept()
		if err != nil {
			return
		}
		px.mu.Lock()
		if px.down {
			px.mu.Unlock()
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", px.target)
		if err != nil {
			px.mu.Unlock()
			_ = c.Close()
			continue
		}
		px.conns = append(px.conns, c, s)
		px.mu.Unlock()
		relay := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		px.wg.Go(func() { relay(s, c) })
		px.wg.Go(func() { relay(c, s) })
	}
}

// cut closes every relayed connection and refuses new ones until restore.
func (px *proxy) cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.down = true
	for _, c := range px.conns {
		_ = c.Close()
	}
	px.conns = nil
}

func (px *proxy) restore() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.down = false
}

// replayConfig replays a paced pcap in a loop on replay0 and replay1: the
// captures run until they are stopped.
func (h *harness) replayConfig() Config {
	path := h.t.TempDir() + "/loop.pcap"
	genPcap(h.t, path, 20, 20*time.Millisecond)
	cfg := h.config()
	cfg.Source, cfg.InterfacePrefix = SourceFile, "replay"
	cfg.File = fileConfig(map[string]string{"replay0": path, "replay1": path}, true, true)
	return cfg
}

func (h *harness) replayCapture(name, iface string) {
	h.t.Helper()
	h.publishCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: name, UID: "uid-" + name,
		Node: testNode, IssuedAt: time.Now(), Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "default", Interface: iface}}})
}

// stopWithTTL publishes a stop as the router does: with a TTL.
func (h *harness) stopWithTTL(name string, ttl time.Duration) {
	h.t.Helper()
	cmd := &schemas.Command{Action: schemas.ActionStop, Namespace: "default", Name: name, UID: "uid-" + name,
		Node: testNode, IssuedAt: time.Now()}
	data, err := schemas.EncodeCommand(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	subj, _ := schemas.CommandSubject(testNode, "default", name)
	if _, err := h.srv.JS.Publish(h.t.Context(), subj, data, jetstream.WithMsgTTL(ttl)); err != nil {
		h.t.Fatalf("publish stop of %s: %v", name, err)
	}
}

// waitGone waits until a capture's command subject is empty.
func (h *harness) waitGone(name string) {
	h.t.Helper()
	subj, _ := schemas.CommandSubject(testNode, "default", name)
	testenv.Eventually(h.t, 15*time.Second, func() error {
		s, err := h.srv.JS.Stream(h.t.Context(), schemas.StreamCommands)
		if err != nil {
			return err
		}
		if _, err := s.GetLastMsgForSubject(h.t.Context(), subj); !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("%s still holds a command: %v", subj, err)
		}
		return nil
	})
}

// fetchPackets reads (and acks) the batches that arrive within half a
// second and returns their packets by capture.
func (h *harness) fetchPackets() map[string]int {
	h.t.Helper()
	out := map[string]int{}
	batch, err := h.cons.Fetch(1000, jetstream.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		h.t.Fatal(err)
	}
	for msg := range batch.Messages() {
		hdr, err := schemas.DecodeBatchHeader(msg.Headers())
		if err != nil {
			h.t.Fatalf("batch header: %v", err)
		}
		out[hdr.Capture] += int(hdr.Packets)
		_ = msg.Ack()
	}
	return out
}

// wantHeld waits until the producer's manager holds n captures.
func wantHeld(t *testing.T, p *Producer, n int64) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() error {
		if got := p.mgr.Load().held.Load(); got != n {
			return fmt.Errorf("producer holds %d captures, want %d", got, n)
		}
		return nil
	})
}

func commandsCounted(t *testing.T, reg *prometheus.Registry, result string) float64 {
	return testenv.Metric(t, reg, "capstream_producer_commands_total", map[string]string{"result": result})
}

// TestResyncStopsExpiredCapture: a producer cut off from NATS for longer
// than a stop's TTL never receives that stop; once reconnected it finds
// the subject empty, finishes the capture (Finished, no more packets) and
// forgets it, while its other capture goes on.
func TestResyncStopsExpiredCapture(t *testing.T) {
	h := newHarness(t)
	cfg := h.replayConfig()
	cfg.ResyncPeriod = time.Hour // only the reconnect may trigger the resync
	px := newProxy(t, h.srv.URL)
	p, reg, _ := h.start(cfg, Deps{NATS: connect(t, px.url(), testenv.Logger(t))})
	h.replayCapture("gone", "replay0")
	h.replayCapture("kept", "replay1")
	h.waitState("gone", schemas.StateCapturing)
	h.waitState("kept", schemas.StateCapturing)
	wantHeld(t, p, 2)

	px.cut()
	testenv.Eventually(t, 10*time.Second, func() error {
		if p.Ready() == nil {
			return errors.New("still connected")
		}
		return nil
	})
	h.stopWithTTL("gone", time.Second)
	h.waitGone("gone")
	px.restore()
	testenv.Eventually(t, 15*time.Second, p.Ready)

	h.waitState("gone", schemas.StateFinished)
	wantHeld(t, p, 1)
	if n := commandsCounted(t, reg, "expired"); n != 1 {
		t.Errorf("expired captures counted %v, want 1", n)
	}
	if n := commandsCounted(t, reg, "stop"); n != 0 {
		t.Errorf("%v stops received; the test needs the stop to be missed", n)
	}
	// kept publishes for ever, so read what is there rather than drain.
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := h.fetchPackets(); got["gone"] != 0 || got["kept"] == 0 {
			return fmt.Errorf("after the resync: %d packets of gone, %d of kept", got["gone"], got["kept"])
		}
		return nil
	})
	testenv.Consistently(t, time.Second, func() error {
		if got := h.fetchPackets(); got["gone"] != 0 {
			return fmt.Errorf("%d packets of gone after it finished", got["gone"])
		}
		return nil
	})
	if st := h.lastStatus("kept"); st.State != schemas.StateCapturing {
		t.Errorf("kept: %+v, want Capturing", st)
	}
}

// TestRestartAfterStopsExpired: a producer started after stops expired
// loads only the live commands; a stop it does see finishes its capture,
// whose state it drops once the stop has expired, and the next start loads
// nothing.
func TestRestartAfterStopsExpired(t *testing.T) {
	h := newHarness(t)
	cfg := h.replayConfig()
	cfg.ResyncPeriod = 500 * time.Millisecond
	h.replayCapture("live", "replay0")
	h.replayCapture("gone", "replay1")
	h.stopWithTTL("gone", time.Second)
	h.stopWithTTL("never", time.Second) // a node that never captured it
	h.waitGone("gone")
	h.waitGone("never")

	p, reg, stop := h.start(cfg, Deps{})
	h.waitState("live", schemas.StateCapturing)
	wantHeld(t, p, 1)
	if c, s := commandsCounted(t, reg, "capture"), commandsCounted(t, reg, "stop"); c != 1 || s != 0 {
		t.Errorf("loaded %v capture and %v stop commands, want 1 and 0", c, s)
	}
	if st := h.lastStatus("gone"); st != nil {
		t.Errorf("a status for the expired capture: %+v", st)
	}

	h.stopWithTTL("live", 2*time.Second)
	h.waitState("live", schemas.StateFinished)
	h.waitGone("live")
	wantHeld(t, p, 0)
	if n := commandsCounted(t, reg, "expired"); n != 0 {
		t.Errorf("expired captures counted %v, want 0: the stop was seen", n)
	}
	stop()

	p, reg, _ = h.start(cfg, Deps{})
	testenv.Consistently(t, time.Second, func() error {
		if c, s := commandsCounted(t, reg, "capture"), commandsCounted(t, reg, "stop"); c != 0 || s != 0 {
			return fmt.Errorf("restart loaded %v capture and %v stop commands, want none", c, s)
		}
		if n := p.mgr.Load().held.Load(); n != 0 {
			return fmt.Errorf("restart holds %d captures", n)
		}
		return nil
	})
}

func TestResyncPeriodValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Node = testNode
	if cfg.ResyncPeriod != 5*time.Minute {
		t.Errorf("default resyncPeriod %s, want 5m", cfg.ResyncPeriod)
	}
	cfg.ResyncPeriod = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "resyncPeriod") {
		t.Errorf("resyncPeriod 0: Validate = %v, want an error about resyncPeriod", err)
	}
}
