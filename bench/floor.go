package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	assembly "github.com/capstream/capstream/pipeline"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// floorResult is the JetStream floor: what the broker alone costs to carry
// the workload's batches from one publisher to the two sink consumers,
// with no capstream code on either side.
type floorResult struct {
	// Skipped is set with -floor=false.
	Skipped bool
	// Storage is the packets stream's storage: file, as capstream
	// creates it, or memory, to show the floor does not come from disk.
	Storage jetstream.StorageType
	// Wall is from the first publish to the last ack of both consumers;
	// CPU is this process's over that time (server and clients).
	Wall, CPU time.Duration
	// Batches is how many batches were carried.
	Batches int
}

// runFloor measures the JetStream floor in this process: a fresh embedded
// server with the packets stream and both sink durables exactly as the
// pipeline has them, the workload's packets as batches of the producer's
// default size with the producer's headers, published asynchronously on
// one connection, and two connections pulling with the sinks' pull buffer
// and acking every batch. The batches are built before the clock starts.
// Whatever the pipeline costs above this is capstream's own work (reading
// the capture, batching, pcap objects, flow decoding) and its clients'
// (S3, ClickHouse).
//
// With memory storage the stream is the same but kept in memory, which
// capstream never does (a server restart would lose the batches); it shows
// how much of the floor is the file store.
func runFloor(ctx context.Context, dir string, w workload, storage jetstream.StorageType) (floorResult, error) {
	r := floorResult{Storage: storage}
	batches, err := floorBatches(w.Path)
	if err != nil {
		return r, err
	}
	r.Batches = len(batches)
	// The producer's in-flight bound: its byte budget in full batches.
	pc := producer.DefaultConfig()
	inFlight := jetstream.WithPublishAsyncMaxPending(min(pc.MaxInFlightBatches, pc.MaxInFlightBytes/pc.BatchBytes))
	bus, err := startPhaseBus(dir, "floor", inFlight)
	if err != nil {
		return r, err
	}
	defer bus.close()
	js := bus.js
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(bus.URL, nats.Name(name))
		if err != nil {
			return nil, fmt.Errorf("connect to nats: %w", err)
		}
		conns = append(conns, nc)
		return jetstream.New(nc, inFlight)
	}
	limits := schemas.DefaultPacketsStreamLimits()
	limits.MaxBytes = max(limits.MaxBytes, 2*w.FileBytes)
	if err := schemas.EnsureStreams(ctx, js, limits); err != nil {
		return r, err
	}
	if storage == jetstream.MemoryStorage {
		if err := js.DeleteStream(ctx, schemas.StreamPackets); err != nil {
			return r, fmt.Errorf("memory floor: %w", err)
		}
		cfg := schemas.PacketsStream(limits)
		cfg.Storage = jetstream.MemoryStorage
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return r, fmt.Errorf("memory floor: %w", err)
		}
	}
	// Each sink's consumers, one per partition, on a connection of its
	// own, as the sinks have.
	var cons [][]jetstream.Consumer
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		bound, err := sink.Bind(ctx, js, cc, 0)
		if err != nil {
			return r, err
		}
		cjs, err := connect("capstream-bench-floor-" + cc.Durable)
		if err != nil {
			return r, err
		}
		var own []jetstream.Consumer
		for _, b := range bound {
			c, err := cjs.Consumer(ctx, schemas.StreamPackets, b.CachedInfo().Name)
			if err != nil {
				return r, fmt.Errorf("consumer %s: %w", b.CachedInfo().Name, err)
			}
			own = append(own, c)
		}
		cons = append(cons, own)
	}

	c0 := selfCPU()
	t0 := time.Now()
	errs := make([]error, len(cons))
	var wg sync.WaitGroup
	for i, c := range cons {
		wg.Go(func() { errs[i] = drainN(ctx, c, len(batches)) })
	}
	for i := range batches {
		if _, err := js.PublishMsgAsync(batches[i], jetstream.WithStallWait(time.Minute)); err != nil {
			return r, fmt.Errorf("publish batch %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return r, ctx.Err()
	}
	wg.Wait()
	r.Wall, r.CPU = time.Since(t0), selfCPU()-c0
	return r, errors.Join(errs...)
}

// drainN pulls and acks n batches with the sinks' pull buffer.
func drainN(ctx context.Context, cons []jetstream.Consumer, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range cons {
		g.Go(func() error {
			it, err := c.Messages(jetstream.PullMaxBytes(sink.DefaultConsumerConfig().PullMaxBytes/len(cons)),
				jetstream.PullPriorityGroup(schemas.SinkPriorityGroup))
			if err != nil {
				return fmt.Errorf("pull: %w", err)
			}
			go func() {
				<-gctx.Done()
				it.Stop()
			}()
			for {
				m, err := it.Next()
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					// A busy server missed a heartbeat: the iterator
					// pulls again, as the sinks' does.
					continue
				}
				if err != nil {
					if gctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("pull batch %d of %d: %w", got.Load()+1, n, err)
				}
				if err := m.Ack(); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
				if got.Add(1) == int64(n) {
					cancel()
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if got.Load() < int64(n) {
		return ctx.Err()
	}
	return nil
}

// floorBatches reads the workload into producer-sized batches with the
// headers the producer sets.
func floorBatches(path string) ([]*nats.Msg, error) {
	subject, err := schemas.PacketSubject(benchNamespace, "floor", benchNode)
	if err != nil {
		return nil, err
	}
	h := schemas.BatchHeader{
		Namespace: benchNamespace, Capture: "floor", CaptureUID: "floor-uid", Node: benchNode, Pod: benchPod,
		Interface: throughputIf, SnapLength: schemas.MaxSnapLength,
		Producer: "floor" + strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	var out []*nats.Msg
	err = eachBatch(path, h, func(h schemas.BatchHeader, body []byte) error {
		m := &nats.Msg{Subject: subject, Header: make(nats.Header, 14), Data: body}
		h.Encode(m.Header)
		out = append(out, m)
		return nil
	})
	return out, err
}

// startNATS starts an embedded JetStream server alone, with its store in
// dir, for the phases that measure the broker without the pipeline.
func startNATS(dir string) (*server.Server, error) {
	c := assembly.DefaultServerConfig()
	c.Plaintext = true                       // the floor measures JetStream alone
	return assembly.StartServer(c, dir, nil) // and anonymous
}

// phaseBus is the embedded JetStream server a phase's child processes
// (router, producer) connect to, with its store in a temporary directory
// under dir, and the harness's own connection to it.
type phaseBus struct {
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	store string
	// URL is the server's client URL, for the children's configs.
	URL string
}

// startPhaseBus starts the bus of the phase name (also the harness
// connection's name, capstream-bench-<name>), the harness's JetStream
// context made with opts; close stops it.
func startPhaseBus(dir, name string, opts ...jetstream.JetStreamOpt) (_ *phaseBus, err error) {
	b := &phaseBus{}
	if b.store, err = os.MkdirTemp(dir, "nats-"+name+"-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.srv, err = startNATS(b.store); err != nil {
		return nil, err
	}
	b.URL = b.srv.ClientURL()
	if b.nc, err = nats.Connect(b.URL, nats.Name("capstream-bench-"+name)); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if b.js, err = jetstream.New(b.nc, opts...); err != nil {
		return nil, err
	}
	return b, nil
}

// close drops the connection, stops the server and removes its store.
func (b *phaseBus) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	_ = os.RemoveAll(b.store)
}
