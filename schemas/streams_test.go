package schemas

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startJetStream runs an in-process nats-server with JetStream on a random
// port and a temporary store, and returns a JetStream context on it. It is
// a local copy of what internal/testenv provides, because schemas imports
// no project package, not even in tests.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// fetchExactly fetches want messages, then checks that no more are ready.
func fetchExactly(t *testing.T, c jetstream.Consumer, want int) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	deadline := time.Now().Add(10 * time.Second)
	for len(msgs) < want && time.Now().Before(deadline) {
		batch, err := c.Fetch(want-len(msgs), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	if len(msgs) != want {
		t.Fatalf("fetched %d messages, want %d", len(msgs), want)
	}
	extra, err := c.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for m := range extra.Messages() {
		t.Fatalf("unexpected extra message on %s", m.Subject())
	}
	return msgs
}

func TestEnsureStreams(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	limits := DefaultPacketsStreamLimits()
	for i := range 2 {
		if err := EnsureStreams(ctx, js, limits); err != nil {
			t.Fatalf("EnsureStreams call %d: %v", i+1, err)
		}
	}
	type summary struct {
		Subjects          []string
		Retention         jetstream.RetentionPolicy
		Discard           jetstream.DiscardPolicy
		MaxMsgsPerSubject int64
		MaxBytes          int64
		MaxAge            time.Duration
		MaxMsgSize        int32
		Duplicates        time.Duration
		Storage           jetstream.StorageType
		AllowMsgTTL       bool
	}
	want := map[string]summary{
		StreamCommands: {[]string{CommandSubjectsAll}, jetstream.LimitsPolicy, jetstream.DiscardOld, 1, -1, 0, maxJSONBytes, 2 * time.Minute, jetstream.FileStorage, true},
		StreamPackets:  {[]string{PacketSubjectsAll}, jetstream.InterestPolicy, jetstream.DiscardNew, -1, 1 << 30, time.Hour, MaxBatchBytes, 2 * time.Minute, jetstream.FileStorage, false},
		StreamStatus:   {[]string{StatusSubjectsAll}, jetstream.LimitsPolicy, jetstream.DiscardOld, 8, -1, 24 * time.Hour, maxJSONBytes, 2 * time.Minute, jetstream.FileStorage, false},
	}
	for name, w := range want {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		got := summary{c.Subjects, c.Retention, c.Discard, c.MaxMsgsPerSubject, c.MaxBytes, c.MaxAge, c.MaxMsgSize, c.Duplicates, c.Storage, c.AllowMsgTTL}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("stream %s as stored by the server (-want +got):\n%s", name, diff)
		}
	}

	bad := limits
	bad.MaxBytes = 0
	if err := EnsureStreams(ctx, js, bad); err == nil {
		t.Error("EnsureStreams with zero MaxBytes: no error")
	}
	bad = limits
	bad.Duplicates = 2 * bad.MaxAge
	if err := EnsureStreams(ctx, js, bad); err == nil {
		t.Error("EnsureStreams with a duplicates window above max age: no error")
	}
}

// TestReplicas: the factor is checked, applied to all three streams by
// EnsureStreams, and a single server's refusal of R3 says a cluster is
// needed.
func TestReplicas(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		if err := CheckReplicas(n); err != nil {
			t.Errorf("CheckReplicas(%d): %v", n, err)
		}
	}
	for _, n := range []int{-1, 0, 6} {
		if err := CheckReplicas(n); err == nil {
			t.Errorf("CheckReplicas(%d): no error", n)
		}
	}
	if got := Replicated(StatusStream(), 3).Replicas; got != 3 {
		t.Errorf("Replicated: %d replicas", got)
	}
	js := startJetStream(t)
	l := DefaultPacketsStreamLimits()
	l.Replicas = 3
	err := EnsureStreams(t.Context(), js, l)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrReplicasNotSupported {
		t.Fatalf("R3 on one server: %v, want the server's API error %d", err, jsErrReplicasNotSupported)
	}
	if want := "3 replicas need a JetStream cluster of at least 3 servers"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestCommandsLastValuePerSubject(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if err := EnsureStreams(ctx, js, DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	publish := func(node, name string, action Action, gen int64) {
		t.Helper()
		c := validCommand()
		c.Node, c.Name, c.Action, c.Generation = node, name, action, gen
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		subj, err := CommandSubject(node, c.Namespace, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	publish("node-1", "cap.a", ActionCapture, 1)
	publish("node-1", "cap.a", ActionStop, 2) // replaces the capture
	publish("node-1", "cap.b", ActionCapture, 5)
	publish("node-2", "cap.a", ActionCapture, 1)  // another node: not seen
	publish("node-10", "cap.a", ActionCapture, 1) // a node name prefix: not seen

	cfg, err := ProducerConsumer("node-1")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, StreamCommands, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		Key        Key
		Action     Action
		Generation int64
	}
	var got []seen
	for _, m := range fetchExactly(t, cons, 2) {
		key, err := ParseCommandSubject(m.Subject())
		if err != nil {
			t.Fatal(err)
		}
		c, err := DecodeCommand(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seen{key, c.Action, c.Generation})
	}
	want := []seen{
		{Key{Namespace: "prod", Name: "cap.a", Node: "node-1"}, ActionStop, 2},
		{Key{Namespace: "prod", Name: "cap.b", Node: "node-1"}, ActionCapture, 5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commands replayed to node-1 (-want +got):\n%s", diff)
	}

	// A command published after the replay is delivered too.
	publish("node-1", "cap.b", ActionStop, 6)
	m := fetchExactly(t, cons, 1)[0]
	if c, err := DecodeCommand(m.Data()); err != nil || c.Action != ActionStop || c.Generation != 6 {
		t.Errorf("live command = %+v, %v; want stop generation 6", c, err)
	}

	if _, err := ProducerConsumer("node_1"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("ProducerConsumer(node_1): %v, want ErrInvalidName", err)
	}
}

func TestPacketsDelivery(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if err := EnsureStreams(ctx, js, DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	consumers := map[string]jetstream.Consumer{}
	for _, cfg := range []jetstream.ConsumerConfig{PcapSinkConsumer(), FlowSinkConsumer()} {
		for range 2 { // idempotent
			c, err := js.CreateOrUpdateConsumer(ctx, StreamPackets, cfg)
			if err != nil {
				t.Fatalf("consumer %s: %v", cfg.Durable, err)
			}
			consumers[cfg.Durable] = c
		}
	}

	h := validBatchHeader()
	var body []byte
	for _, r := range testRecords()[:3] {
		body = AppendRecord(body, r.TS, r.Data, r.OrigLen)
	}
	subj, err := PacketSubject(h.Namespace, h.Capture, h.Node)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: body}
	h.Encode(msg.Header)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Error("first publish reported as duplicate")
	}
	// A retry of the same batch, as after a lost ack, is de-duplicated.
	ack2, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !ack2.Duplicate || ack2.Sequence != ack.Sequence {
		t.Errorf("retried publish: %+v, want duplicate of sequence %d", ack2, ack.Sequence)
	}

	for name, c := range consumers {
		t.Run(name, func(t *testing.T) {
			m := fetchExactly(t, c, 1)[0]
			// The stream stores the subject with its partition.
			if p, ok := strings.CutPrefix(m.Subject(), subj+"."); !ok || len(p) == 0 || strings.Trim(p, "0123456789") != "" {
				t.Errorf("subject %q, want %q and a partition", m.Subject(), subj)
			}
			key, err := ParsePacketSubject(m.Subject())
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeBatchHeader(m.Headers())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(h, got); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Key{Namespace: got.Namespace, Name: got.Capture, Node: got.Node}, key); diff != "" {
				t.Errorf("subject disagrees with headers (-headers +subject):\n%s", diff)
			}
			if diff := cmp.Diff(body, m.Data()); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if n, err := ValidateBody(m.Data(), got.SnapLength); err != nil || n != int(got.Packets) {
				t.Errorf("ValidateBody = %d, %v; want %d", n, err, got.Packets)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Interest retention: once both sinks acked, the batch is gone.
	eventually(t, 5*time.Second, func() bool {
		s, err := js.Stream(ctx, StreamPackets)
		return err == nil && s.CachedInfo().State.Msgs == 0
	})

	// A body of MaxBatchBodyBytes plus headers fits the server's limits.
	h.Seq++
	big := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: make([]byte, MaxBatchBodyBytes)}
	h.Encode(big.Header)
	if _, err := js.PublishMsg(ctx, big); err != nil {
		t.Errorf("publishing a batch of MaxBatchBodyBytes: %v", err)
	}
	h.Seq++
	huge := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: make([]byte, MaxBatchBytes)}
	h.Encode(huge.Header)
	if _, err := js.PublishMsg(ctx, huge); err == nil {
		t.Error("publishing a batch over MaxBatchBytes: no error")
	} else {
		t.Logf("batch over MaxBatchBytes refused: %v", err)
	}
}

// TestPacketsDiscardNew checks that a full packets stream refuses new
// batches (the producer counts them as drops) and keeps the unacked ones.
func TestPacketsDiscardNew(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	limits := DefaultPacketsStreamLimits()
	limits.MaxBytes = 2 * MaxBatchBytes
	if err := EnsureStreams(ctx, js, limits); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, StreamPackets, PcapSinkConsumer()); err != nil {
		t.Fatal(err)
	}
	h := validBatchHeader()
	subj, err := PacketSubject(h.Namespace, h.Capture, h.Node)
	if err != nil {
		t.Fatal(err)
	}
	var refused error
	published := 0
	for range 20 {
		h.Seq++
		msg := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: make([]byte, 256<<10)}
		h.Encode(msg.Header)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			refused = err
			break
		}
		published++
	}
	var apiErr *jetstream.APIError
	if !errors.As(refused, &apiErr) {
		t.Fatalf("after %d batches: publish error %v, want a JetStream API error", published, refused)
	}
	t.Logf("refused after %d batches: %v (code %d)", published, refused, apiErr.ErrorCode)
	s, err := js.Stream(ctx, StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	st := s.CachedInfo().State
	if st.FirstSeq != 1 || st.Msgs != uint64(published) {
		t.Errorf("stream state first %d, msgs %d; want first 1, msgs %d (old batches kept)", st.FirstSeq, st.Msgs, published)
	}
}

func TestStatusAndRouterConsumer(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if err := EnsureStreams(ctx, js, DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	// The producer and the pcap sink report on the same subject; the
	// router must see the latest of both.
	var subj string
	for i, src := range []Source{SourceProducer, SourcePcapSink, SourceProducer} {
		s := validStatus()
		s.Source, s.Packets = src, uint64(i)
		b, err := EncodeStatus(s)
		if err != nil {
			t.Fatal(err)
		}
		if subj, err = ReportSubject(s); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, StreamStatus, RouterStatusConsumer())
	if err != nil {
		t.Fatal(err)
	}
	latest := map[Source]uint64{}
	for _, m := range fetchExactly(t, c, 3) {
		s, err := DecodeStatus(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		latest[s.Source] = s.Packets
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(map[Source]uint64{SourceProducer: 2, SourcePcapSink: 1}, latest); diff != "" {
		t.Errorf("latest packets per source (-want +got):\n%s", diff)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met in time")
		case <-tick.C:
		}
	}
}

// TestCommandsStreamUpgrade: a CAPSTREAM_COMMANDS created by a release
// without stop TTLs is updated in place by EnsureStreams, keeping every
// command, and then expires stops published with a TTL while capture
// commands, published without one, stay.
func TestCommandsStreamUpgrade(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	old := CommandsStream()
	old.AllowMsgTTL = false
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	publish := func(name string, action Action, opts ...jetstream.PublishOpt) (string, uint64) {
		t.Helper()
		c := validCommand()
		c.Name, c.Action = name, action
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		subj, err := CommandSubject(c.Node, c.Namespace, name)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, subj, b, opts...)
		if err != nil {
			t.Fatalf("publish %s %s: %v", action, name, err)
		}
		return subj, ack.Sequence
	}
	oldCapture, oldCaptureSeq := publish("old-capture", ActionCapture)
	oldStop, oldStopSeq := publish("old-stop", ActionStop)
	// The old stream refuses TTLs: this is what the upgrade changes.
	c := validCommand()
	c.Name, c.Action = "refused", ActionStop
	b, _ := EncodeCommand(c)
	subj, _ := CommandSubject(c.Node, c.Namespace, c.Name)
	if _, err := js.Publish(ctx, subj, b, jetstream.WithMsgTTL(time.Second)); err == nil {
		t.Fatal("the old stream accepted a TTL")
	}

	if err := EnsureStreams(ctx, js, DefaultPacketsStreamLimits()); err != nil {
		t.Fatalf("EnsureStreams over the old stream: %v", err)
	}
	s, err := js.Stream(ctx, StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowMsgTTL {
		t.Fatal("AllowMsgTTL not set by the update")
	}
	for subj, seq := range map[string]uint64{oldCapture: oldCaptureSeq, oldStop: oldStopSeq} {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil || m.Sequence != seq {
			t.Fatalf("%s after the update: %v, %v; want sequence %d kept", subj, m, err, seq)
		}
	}

	stop, _ := publish("new-stop", ActionStop, jetstream.WithMsgTTL(time.Second))
	capture, _ := publish("new-capture", ActionCapture)
	m, err := s.GetLastMsgForSubject(ctx, stop)
	if err != nil {
		t.Fatal(err)
	}
	if ttl, ok := MsgTTL(m.Header); !ok || ttl != time.Second {
		t.Errorf("stored stop TTL %s, %v; want 1s", ttl, ok)
	}
	eventually(t, 10*time.Second, func() bool {
		_, err := s.GetLastMsgForSubject(ctx, stop)
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
	// Everything without a TTL is still there after the stop expired.
	for _, subj := range []string{oldCapture, oldStop, capture} {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("%s after the stop expired: %v", subj, err)
		}
		if _, ok := MsgTTL(m.Header); ok {
			t.Errorf("%s carries a TTL", subj)
		}
	}
}

func TestMsgTTL(t *testing.T) {
	cases := map[string]struct {
		want time.Duration
		ok   bool
	}{
		"":                        {0, false},
		"never":                   {0, false},
		"2s":                      {2 * time.Second, true},
		"24h0m0s":                 {24 * time.Hour, true},
		"90":                      {90 * time.Second, true},
		"0":                       {0, false},
		"500ms":                   {0, false},
		"-5":                      {0, false},
		"x":                       {0, false},
		"99999999999999999999999": {0, false},
	}
	for v, c := range cases {
		h := nats.Header{}
		if v != "" {
			h.Set(jetstream.MsgTTLHeader, v)
		}
		if got, ok := MsgTTL(h); got != c.want || ok != c.ok {
			t.Errorf("MsgTTL(%q) = %s, %v; want %s, %v", v, got, ok, c.want, c.ok)
		}
	}
	if IsDeleteMarker(nats.Header{}) {
		t.Error("an empty header is a delete marker")
	}
	if !IsDeleteMarker(nats.Header{jetstream.MarkerReasonHeader: []string{"MaxAge"}}) {
		t.Error("a MaxAge marker is not a delete marker")
	}
}
