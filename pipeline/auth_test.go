package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// authServer is an embedded server with the identities of a pipeline on
// node-a and node-b, its streams and sink durables made by the router.
type authServer struct {
	t      *testing.T
	url    string
	creds  *Credentials
	server ServerConfig
}

func newAuthServer(t *testing.T) *authServer {
	t.Helper()
	ids, err := pipelineIdentities([]string{"node-a", "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := NewCredentials(ids...)
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultServerConfig()
	files := testenv.TLS(t)
	c.TLS = ServerTLS{CertFile: files.ServerCert, KeyFile: files.ServerKey, CAFile: files.CA}
	srv, err := StartServer(c, t.TempDir(), creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	a := &authServer{t: t, url: srv.ClientURL(), creds: creds, server: c}
	_, js := a.connect(schemas.UserRouter)
	cfg := Config{Server: c}
	cfg.Pcap.Consumer.AckWait, cfg.Flows.Consumer.AckWait = schemas.PcapSinkAckWait, schemas.FlowSinkAckWait
	if err := setup(t.Context(), js, cfg); err != nil {
		t.Fatalf("the router identity cannot set up the streams: %v", err)
	}
	return a
}

// connect connects as user, with a handler that records the server's
// permission errors.
func (a *authServer) connect(user string) (*testenv.Violations, jetstream.JetStream) {
	a.t.Helper()
	nconf, err := a.creds.Client(a.server.client(a.url), user)
	if err != nil {
		a.t.Fatal(err)
	}
	v := &testenv.Violations{}
	opts, err := nconf.Options(nats.ErrorHandler(v.Handler), nats.RetryOnFailedConnect(false))
	if err != nil {
		a.t.Fatal(err)
	}
	nc, err := nats.Connect(nconf.URL, opts...)
	if err != nil {
		a.t.Fatalf("connect as %s: %v", user, err)
	}
	a.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		a.t.Fatal(err)
	}
	return v, js
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestAnonymousRefused: a client without credentials, or with a wrong
// password, cannot connect at all.
func TestAnonymousRefused(t *testing.T) {
	a := newAuthServer(t)
	anon := a.server.client(a.url)
	anon.Name = "anonymous"
	opts, err := anon.Options(nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(anon.URL, opts...); err == nil {
		nc.Close()
		t.Fatal("anonymous client connected")
	} else if !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("anonymous: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect(anon.URL, append(opts, nats.UserInfo(schemas.UserRouter, "guess"))...); err == nil {
		nc.Close()
		t.Fatal("wrong password connected")
	}
}

// TestProducerIdentity: node-a's producer reads its own node's commands and
// publishes its own node's batches and reports, and nothing else: it cannot
// publish a command, read node-b's commands, read any batch, or publish a
// batch in node-b's name.
func TestProducerIdentity(t *testing.T) {
	a := newAuthServer(t)
	_, router := a.connect(schemas.UserRouter)
	mine, _ := schemas.CommandSubject("node-a", "ns", "cap")
	theirs, _ := schemas.CommandSubject("node-b", "ns", "cap")
	for _, subj := range []string{mine, theirs} {
		if _, err := router.Publish(t.Context(), subj, []byte(`{}`)); err != nil {
			t.Fatalf("router publishes a command: %v", err)
		}
	}
	pv, prod := a.connect("capstream-producer-node-a")

	// Its own commands, as the producer reads them.
	cc, err := schemas.ProducerConsumer("node-a")
	if err != nil {
		t.Fatal(err)
	}
	own, err := prod.OrderedConsumer(t.Context(), schemas.StreamCommands, cc)
	if err != nil {
		t.Fatalf("producer cannot read its own node's commands: %v", err)
	}
	msg, err := own.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil || msg.Subject() != mine {
		t.Fatalf("own command: %v, %v", msg, err)
	}

	// Another node's commands.
	cc, _ = schemas.ProducerConsumer("node-b")
	if c, err := prod.OrderedConsumer(shortCtx(t), schemas.StreamCommands, cc); err == nil {
		if m, err := c.Next(jetstream.FetchMaxWait(time.Second)); err == nil {
			t.Fatalf("producer of node-a read node-b's command %s", m.Subject())
		}
	}

	// Publishing a command.
	before := streamMsgs(t, router, schemas.StreamCommands)
	if _, err := prod.Publish(shortCtx(t), mine, []byte(`{"forged":true}`)); err == nil {
		t.Fatal("producer published a command")
	}
	pv.WaitPublishDenied(t, mine)
	if after := streamMsgs(t, router, schemas.StreamCommands); after != before {
		t.Errorf("commands stream went from %d to %d messages", before, after)
	}

	// Reading batches: neither a core subscription nor a consumer.
	testenv.RequireSubscribeDenied(t, prod.Conn(), pv, schemas.PacketSubjectsAll)
	if _, err := prod.OrderedConsumer(shortCtx(t), schemas.StreamPackets, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("producer created a consumer on the packets stream")
	}

	// Its own batches go in; a batch in node-b's name does not.
	ownBatch, _ := schemas.PacketSubject("ns", "cap", "node-a")
	otherBatch, _ := schemas.PacketSubject("ns", "cap", "node-b")
	if _, err := prod.Publish(t.Context(), ownBatch, []byte("batch")); err != nil {
		t.Errorf("producer cannot publish its own node's batch: %v", err)
	}
	if _, err := prod.Publish(shortCtx(t), otherBatch, []byte("forged")); err == nil {
		t.Error("producer of node-a published a batch for node-b")
	}
	ownStatus, _ := schemas.StatusSubject("ns", "cap", "node-a")
	if _, err := prod.Publish(t.Context(), ownStatus, []byte("{}")); err != nil {
		t.Errorf("producer cannot publish its own node's status: %v", err)
	}
	// Nor may it speak for a sink, even on its own node.
	for _, src := range []schemas.Source{schemas.SourcePcapSink, schemas.SourceFlowSink} {
		forged, _ := schemas.ReportSubject(&schemas.Status{Source: src, Namespace: "ns", Name: "cap", Node: "node-a"})
		if _, err := prod.Publish(shortCtx(t), forged, []byte("{}")); err == nil {
			t.Errorf("producer of node-a published a %s report", src)
		}
	}
}

// TestSinkIdentity: a sink pulls its own durable and publishes reports; it
// cannot publish commands or batches, or pull the other sink's durable.
func TestSinkIdentity(t *testing.T) {
	a := newAuthServer(t)
	_, prodA := a.connect("capstream-producer-node-a")
	batch, _ := schemas.PacketSubject("ns", "cap", "node-a")
	if _, err := prodA.Publish(t.Context(), batch, []byte("batch")); err != nil {
		t.Fatal(err)
	}
	sv, sinkJS := a.connect(schemas.UserPcapSink)
	// Its own durables, one per partition: bind, pull, ack, unpin, and
	// read the stream's partitions.
	st, err := sinkJS.Stream(t.Context(), schemas.StreamPackets)
	if err != nil {
		t.Fatalf("pcap sink cannot read the packets stream's configuration: %v", err)
	}
	parts, err := schemas.PacketPartitions(st.CachedInfo().Config)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for p := range parts {
		own, err := sinkJS.Consumer(t.Context(), schemas.StreamPackets, schemas.SinkPartitionName(schemas.ConsumerPcapSink, p))
		if err != nil {
			t.Fatalf("pcap sink cannot bind its durable of partition %d: %v", p, err)
		}
		msgs, err := own.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond), jetstream.FetchPriorityGroup(schemas.SinkPriorityGroup))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			n++
			if err := m.Ack(); err != nil {
				t.Errorf("ack: %v", err)
			}
			if err := st.UnpinConsumer(t.Context(), own.CachedInfo().Name, schemas.SinkPriorityGroup); err != nil {
				t.Errorf("unpin its own partition: %v", err)
			}
		}
	}
	if n != 1 {
		t.Errorf("pulled %d batches from its own durables, want 1", n)
	}
	for p := range parts {
		if other, err := sinkJS.Consumer(shortCtx(t), schemas.StreamPackets, schemas.SinkPartitionName(schemas.ConsumerFlowSink, p)); err == nil {
			if m, err := other.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond), jetstream.FetchPriorityGroup(schemas.SinkPriorityGroup)); err == nil {
				for range m.Messages() {
					t.Error("pcap sink pulled from the flow sink's durable")
				}
			}
		}
	}
	cmd, _ := schemas.CommandSubject("node-a", "ns", "cap")
	if _, err := sinkJS.Publish(shortCtx(t), cmd, []byte(`{}`)); err == nil {
		t.Error("pcap sink published a command")
	}
	sv.WaitPublishDenied(t, cmd)
	if _, err := sinkJS.Publish(shortCtx(t), batch, []byte("forged")); err == nil {
		t.Error("pcap sink published a batch")
	}
	status, _ := schemas.ReportSubject(&schemas.Status{Source: schemas.SourcePcapSink, Namespace: "ns", Name: "cap", Node: "node-a"})
	if _, err := sinkJS.Publish(t.Context(), status, []byte("{}")); err != nil {
		t.Errorf("pcap sink cannot publish its status report: %v", err)
	}
	// Nor another source's: the producer's or the flow sink's.
	for _, src := range []schemas.Source{schemas.SourceProducer, schemas.SourceFlowSink} {
		forged, _ := schemas.ReportSubject(&schemas.Status{Source: src, Namespace: "ns", Name: "cap", Node: "node-a"})
		if _, err := sinkJS.Publish(shortCtx(t), forged, []byte("{}")); err == nil {
			t.Errorf("pcap sink published a %s report", src)
		}
	}
}

// TestMonitorIdentity: the monitor sees stream and consumer state and no
// message.
func TestMonitorIdentity(t *testing.T) {
	a := newAuthServer(t)
	_, mon := a.connect(schemas.UserMonitor)
	if _, err := mon.Stream(t.Context(), schemas.StreamPackets); err != nil {
		t.Errorf("monitor cannot read the stream's state: %v", err)
	}
	if _, err := mon.OrderedConsumer(shortCtx(t), schemas.StreamCommands, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("monitor created a consumer on the commands stream")
	}
}

// TestPlaintextRefused: the server speaks TLS only; a plain client gets
// nowhere, and a client with the wrong CA fails at once naming it.
func TestPlaintextRefused(t *testing.T) {
	a := newAuthServer(t)
	id, err := a.creds.Client(a.server.client(a.url), schemas.UserRouter)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a.url, nats.UserInfo(id.User, id.Password), nats.RetryOnFailedConnect(false), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client without TLS connected")
	}
	files := testenv.TLS(t) // another CA
	wrong := id
	wrong.TLS.CAFile = files.OtherCA
	if nc, err := wrong.Connect(); err == nil {
		nc.Close()
		t.Fatal("connected with the wrong CA")
	} else if !strings.Contains(err.Error(), files.OtherCA) {
		t.Errorf("wrong CA: %v, want it named", err)
	}
}
