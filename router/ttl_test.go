package router

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// testStopTTL is the stop TTL of these tests: whole seconds, as the server
// counts them.
const testStopTTL = 2 * time.Second

func withStopTTL(c *Config) { c.StopTTL = testStopTTL }

// lastMsg returns the stored last command of a capture on a node.
func (h *harness) lastMsg(name, node string) (*jetstream.RawStreamMsg, error) {
	subj, err := schemas.CommandSubject(node, h.ns, name)
	if err != nil {
		return nil, err
	}
	s, err := h.nats.JS.Stream(h.t.Context(), schemas.StreamCommands)
	if err != nil {
		return nil, err
	}
	return s.GetLastMsgForSubject(h.t.Context(), subj)
}

// nsCommands counts the messages CAPSTREAM_COMMANDS holds for the
// harness's namespace.
func (h *harness) nsCommands() (uint64, error) {
	ctx := h.t.Context()
	s, err := h.nats.JS.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return 0, err
	}
	nsTok, _ := schemas.Token(h.ns)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("capstream.cmd.*."+nsTok+".*"))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

func (h *harness) deleteCapture(name string) {
	h.t.Helper()
	if err := h.captures().Delete(h.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatalf("delete capture %s: %v", name, err)
	}
}

// wantHeld waits until the router's published-commands maps hold exactly
// subjects subjects and captures captures.
func wantHeld(t *testing.T, rh *routerHandle, subjects, captures int) {
	t.Helper()
	testenv.Eventually(t, waitFor, func() error {
		if s, c := rh.r.pub.size(); s != subjects || c != captures {
			return fmt.Errorf("router holds %d subjects of %d captures, want %d of %d", s, c, subjects, captures)
		}
		return nil
	})
}

// TestStopCommandsExpire: a stop carries the configured TTL and leaves the
// stream after it, and the router forgets it without publishing anything
// again; a capture command carries no TTL and stays.
func TestStopCommandsExpire(t *testing.T) {
	h := newHarness(t, nil)
	h.pod("p", "node-1", nil)
	rh := h.start(withStopTTL)
	h.createCapture("keep", "all()")
	h.createCapture("gone", "all()")
	h.expect("keep", map[string][]string{"node-1": {"p"}})
	h.expect("gone", map[string][]string{"node-1": {"p"}})
	m, err := h.lastMsg("gone", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if ttl, ok := schemas.MsgTTL(m.Header); ok {
		t.Errorf("capture command with a TTL of %s", ttl)
	}

	h.deleteCapture("gone")
	h.expect("gone", nil, "node-1")
	if m, err = h.lastMsg("gone", "node-1"); err != nil {
		t.Fatal(err)
	}
	if ttl, ok := schemas.MsgTTL(m.Header); !ok || ttl != testStopTTL {
		t.Errorf("stop TTL %s, %v; want %s", ttl, ok, testStopTTL)
	}
	testenv.Eventually(t, waitFor, func() error {
		if _, err := h.lastMsg("gone", "node-1"); !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("stop still stored: %v", err)
		}
		return nil
	})
	wantHeld(t, rh, 1, 1)
	// Sweeps (every second) and reloads (every 2s) publish nothing more;
	// the capture command is still there long after the TTL.
	before := h.rec.count()
	testenv.Consistently(t, 3*time.Second, func() error {
		if n := h.rec.count(); n != before {
			return fmt.Errorf("%d commands published after the stop expired", n-before)
		}
		return nil
	})
	h.expect("keep", map[string][]string{"node-1": {"p"}})
	h.rec.check(t)
}

// TestStopChurn: creating and deleting 50 captures leaves the stream and
// the router's published-commands maps as they were once the stops
// expired, and a new term (a restart) publishes nothing for them.
func TestStopChurn(t *testing.T) {
	const n = 50
	h := newHarness(t, nil)
	h.pod("p", "node-1", nil)
	rh := h.start(withStopTTL)
	h.createCapture("keep", "all()")
	h.expect("keep", map[string][]string{"node-1": {"p"}})
	wantHeld(t, rh, 1, 1)

	for i := range n {
		h.createCapture(fmt.Sprintf("churn-%d", i), "all()")
	}
	wantHeld(t, rh, n+1, n+1)
	for i := range n {
		h.deleteCapture(fmt.Sprintf("churn-%d", i))
	}
	testenv.Eventually(t, 2*waitFor, func() error {
		if got, err := h.nsCommands(); err != nil || got != 1 {
			return fmt.Errorf("stream holds %d commands of the namespace (%v), want 1", got, err)
		}
		return nil
	})
	wantHeld(t, rh, 1, 1)
	// Each churned capture got one capture command and one stop.
	if got, want := h.rec.count(), 1+2*n; got != want {
		t.Errorf("%d commands published, want %d", got, want)
	}

	rh.stop(t)
	rh = h.start(withStopTTL)
	waitTerm(t, rh)
	before := h.rec.count()
	testenv.Consistently(t, 3*time.Second, func() error {
		if got := h.rec.count(); got != before {
			return fmt.Errorf("the new term published %d commands", got-before)
		}
		if s, c := rh.r.pub.size(); s != 1 || c != 1 {
			return fmt.Errorf("new term holds %d subjects of %d captures, want 1 of 1", s, c)
		}
		return nil
	})
	h.rec.check(t)
}

// TestLegacyStopGetsTTL: a stop stored before stops had a TTL is published
// again once with the TTL, so streams of an older release drain too.
func TestLegacyStopGetsTTL(t *testing.T) {
	nsrv, m := publisherEnv(t)
	ctx := t.Context()
	k := captureKey{"ns", "old"}
	stop := StopCommand(k.Namespace, k.Name, "u", 3, "node-1", time.Now())
	data, err := schemas.EncodeCommand(stop)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.CommandSubject("node-1", k.Namespace, k.Name)
	if _, err := nsrv.JS.Publish(ctx, subj, data); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(nsrv.JS, m)
	p.stopTTL = testStopTTL
	if _, err := p.load(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second pass publishes nothing
		if err := p.sync(ctx, k, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got, last := lastCommand(t, nsrv.JS, subj)
	if ttl, ok := schemas.MsgTTL(last.Header); !ok || ttl != testStopTTL || last.Sequence != 2 || !SameCommand(got, stop) || got.Generation != 3 {
		t.Errorf("rewritten stop: sequence %d, TTL %s %v, %+v; want sequence 2, TTL %s, the same stop", last.Sequence, ttl, ok, got, testStopTTL)
	}
	s, err := nsrv.JS.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitFor, func() error {
		if _, err := s.GetLastMsgForSubject(ctx, subj); !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("stop still stored: %v", err)
		}
		return nil
	})
	if p.expire(time.Now()); len(p.captures()) != 0 {
		t.Errorf("publisher still holds %v", p.captures())
	}
}

func TestStopTTLValidate(t *testing.T) {
	for ttl, ok := range map[time.Duration]bool{
		0: false, -time.Second: false, 500 * time.Millisecond: false, 1500 * time.Millisecond: false,
		time.Second: true, schemas.DefaultStopTTL: true,
	} {
		cfg := DefaultConfig()
		cfg.StopTTL = ttl
		if err := cfg.Validate(); (err == nil) != ok {
			t.Errorf("stopTTL %s: Validate = %v, want ok %v", ttl, err, ok)
		}
	}
	if DefaultConfig().StopTTL != 24*time.Hour {
		t.Errorf("default stopTTL %s, want 24h", DefaultConfig().StopTTL)
	}
}
