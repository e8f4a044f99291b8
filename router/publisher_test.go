package router

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// publisherEnv is a JetStream with capstream's streams and the router's
// metrics, for the publisher's tests.
func publisherEnv(t *testing.T) (*testenv.NATSServer, *metrics) {
	t.Helper()
	n := testenv.NATS(t)
	if err := schemas.EnsureStreams(t.Context(), n.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return n, m
}

// lastCommand reads and decodes the command stored on subj.
func lastCommand(t *testing.T, js jetstream.JetStream, subj string) (*schemas.Command, *jetstream.RawStreamMsg) {
	t.Helper()
	s, err := js.Stream(t.Context(), schemas.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(t.Context(), subj)
	if err != nil {
		t.Fatal(err)
	}
	got, err := schemas.DecodeCommand(last.Data)
	if err != nil {
		t.Fatal(err)
	}
	return got, last
}

// TestPublisher checks the publisher against a real stream: it loads the
// last values, publishes only differences, stops nodes that left, and
// recovers when another writer changed a subject behind its back.
func TestPublisher(t *testing.T) {
	n, m := publisherEnv(t)
	ctx := t.Context()
	k := captureKey{"ns", "cap.v1"}
	cmd := func(node, pod string) *schemas.Command {
		return &schemas.Command{Version: schemas.Version, Action: schemas.ActionCapture, Namespace: k.Namespace, Name: k.Name,
			UID: "u", Generation: 1, Node: node, IssuedAt: time.Now(),
			Endpoints: []schemas.Endpoint{{Pod: pod, Namespace: k.Namespace, Interface: InterfaceName("cali", k.Namespace, pod)}}}
	}
	msgs := func() uint64 {
		t.Helper()
		s, err := n.JS.Stream(ctx, schemas.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}

	p := newPublisher(n.JS, m)
	if _, err := p.load(ctx); err != nil {
		t.Fatal(err)
	}
	desired := map[string]*schemas.Command{"a": cmd("a", "p1"), "b.x": cmd("b.x", "p2")}
	if err := p.sync(ctx, k, desired, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := msgs(); got != 2 {
		t.Fatalf("%d messages, want 2", got)
	}

	// A fresh publisher (a restart) loads them and publishes nothing new,
	// even with a later IssuedAt.
	p = newPublisher(n.JS, m)
	if _, err := p.load(ctx); err != nil {
		t.Fatal(err)
	}
	desired = map[string]*schemas.Command{"a": cmd("a", "p1"), "b.x": cmd("b.x", "p2")}
	if err := p.sync(ctx, k, desired, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := msgs(); got != 2 {
		t.Fatalf("restart published: last seq %d, want 2", got)
	}

	// Node b.x leaves: it gets a stop, once.
	delete(desired, "b.x")
	for range 2 {
		if err := p.sync(ctx, k, desired, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if got := msgs(); got != 3 {
		t.Fatalf("last seq %d, want 3 (one stop)", got)
	}

	// Someone else rewrites node a's subject: the next publish is refused,
	// the subject re-read, and the retry publishes against the new value.
	subj, _ := schemas.CommandSubject("a", k.Namespace, k.Name)
	other, _ := schemas.EncodeCommand(cmd("a", "intruder"))
	if _, err := n.JS.Publish(ctx, subj, other); err != nil {
		t.Fatal(err)
	}
	desired["a"] = cmd("a", "p3")
	if err := p.sync(ctx, k, desired, time.Now()); err == nil || !isWrongLastSequence(err) {
		t.Fatalf("sync over a foreign write: %v, want a wrong-last-sequence error", err)
	}
	if err := p.sync(ctx, k, desired, time.Now()); err != nil {
		t.Fatalf("retry: %v", err)
	}
	got, _ := lastCommand(t, n.JS, subj)
	if !SameCommand(got, desired["a"]) {
		t.Errorf("subject holds %+v, want p3", got.Endpoints)
	}
}
