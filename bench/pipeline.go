package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/producer/source/file"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// Names the benchmark captures under. The router is not run: the harness
// publishes the commands a router would.
const (
	benchNode      = "bench-node"
	benchNamespace = "bench"
	benchPod       = "bench-pod"
	throughputName = "throughput"
	latencyName    = "latency"
	throughputIf   = "replay0"
	latencyIf      = "replay1"
	pcapPrefix     = "capstream"
	// sinkStopAfter is both sinks' stopAfter: the quiet time after which
	// an interface's last object is completed and its last flows
	// released. The end of the throughput phase waits for it, so it is
	// kept short; the table shows it as part of the wall time.
	sinkStopAfter = 500 * time.Millisecond
	// pollEvery is how often the harness looks for completion. It bounds
	// the resolution of the wall time and of each latency.
	pollEvery = 25 * time.Millisecond
)

// pipeline is producer -> embedded JetStream -> both sinks, in this
// process, as `capstream dev` wires them (without the router).
type pipeline struct {
	ns       *server.Server
	storeDir string
	conns    []*nats.Conn
	js       jetstream.JetStream // the harness's own connection
	nc       *nats.Conn
	reg      *prometheus.Registry
	ch       driver.Conn   // the harness's queries
	chConns  []driver.Conn // every ClickHouse client opened, closed last
	marks    *markerClock

	g          *errgroup.Group
	gctx       context.Context
	stopProd   context.CancelFunc
	prodDone   chan struct{}
	stopSinks  context.CancelFunc
	finishedMu sync.Mutex
	finished   map[string]chan struct{}
}

// storage is where the sinks write.
type storage struct {
	ch       sink.ClickHouseConfig
	s3       sink.S3Config
	s3Client *minio.Client
}

// startNATS starts the embedded JetStream server with its store in dir.
func startNATS(dir string) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "capstream-bench",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return ns, nil
}

func (p *pipeline) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(p.ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	p.conns = append(p.conns, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// startPipeline starts NATS, both sinks and the producer, and returns once
// all are ready. The caller must call close.
func startPipeline(ctx context.Context, o options, dir string, st storage, w workload, lw latencyWorkload) (*pipeline, error) {
	p := &pipeline{prodDone: make(chan struct{}), finished: map[string]chan struct{}{}, marks: newMarkerClock(lw.Markers)}
	var err error
	if p.storeDir, err = os.MkdirTemp(dir, "nats-"); err != nil {
		return nil, fmt.Errorf("nats store: %w", err)
	}
	if p.ns, err = startNATS(p.storeDir); err != nil {
		_ = os.RemoveAll(p.storeDir)
		return nil, err
	}
	if p.nc, p.js, err = p.connect("capstream-bench"); err != nil {
		p.close()
		return nil, err
	}
	limits := schemas.DefaultPacketsStreamLimits()
	// Room for the whole workload twice over: the replay never waits for
	// the sinks, and a full stream would refuse (drop) batches.
	limits.MaxBytes = max(limits.MaxBytes, 2*w.FileBytes)
	if err := schemas.EnsureStreams(ctx, p.js, limits); err != nil {
		p.close()
		return nil, err
	}
	// Both durables exist before the first batch: interest retention
	// discards batches nobody is bound for.
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		if _, err := sink.Bind(ctx, p.js, cc, 0); err != nil {
			p.close()
			return nil, err
		}
	}
	if _, err := p.nc.Subscribe(schemas.StatusSubjectsAll, p.onStatus); err != nil {
		p.close()
		return nil, fmt.Errorf("subscribe to status: %w", err)
	}

	logger := slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p.reg = prometheus.NewRegistry()
	pcfg := pcapstore.DefaultConfig()
	// Every other setting is the default: 64 MiB objects, one PUT each.
	pcfg.S3, pcfg.Prefix, pcfg.StopAfter, pcfg.Migrate = st.s3, pcapPrefix, sinkStopAfter, false
	fcfg := flowstore.DefaultConfig()
	fcfg.ActiveTimeout, fcfg.IdleTimeout, fcfg.StopAfter, fcfg.Migrate = o.ActiveTimeout, o.ActiveTimeout/2, sinkStopAfter, false

	_, pcapJS, err := p.connect("capstream-sink-pcap")
	if err != nil {
		p.close()
		return nil, err
	}
	_, flowsJS, err := p.connect("capstream-sink-flows")
	if err != nil {
		p.close()
		return nil, err
	}
	for range 3 {
		c, err := st.ch.Open()
		if err != nil {
			p.close()
			return nil, err
		}
		p.chConns = append(p.chConns, c)
	}
	chs := p.chConns
	p.ch = chs[2]
	pcapSink, err := pcapstore.New(pcfg, pcapstore.Deps{Logger: logger, Registerer: p.reg, JetStream: pcapJS, ClickHouse: chs[0], S3: st.s3Client})
	if err != nil {
		p.close()
		return nil, err
	}
	flowSink, err := flowstore.New(fcfg, flowstore.Deps{Logger: logger, Registerer: p.reg, JetStream: flowsJS, ClickHouse: chs[1]})
	if err != nil {
		p.close()
		return nil, err
	}
	fast, err := file.NewOpener(file.Config{Files: map[string]string{throughputIf: w.Path}})
	if err != nil {
		p.close()
		return nil, err
	}
	paced, err := file.NewOpener(file.Config{Files: map[string]string{latencyIf: lw.Path}, Paced: true})
	if err != nil {
		p.close()
		return nil, err
	}
	prcfg := producer.DefaultConfig()
	prcfg.Node, prcfg.NATS.URL, prcfg.NATS.Name = benchNode, p.ns.ClientURL(), "capstream-producer"
	prcfg.Source = producer.SourceFile
	prod, err := producer.New(prcfg, producer.Deps{Logger: logger, Registerer: p.reg, Opener: &benchOpener{fast: fast, paced: paced, marks: p.marks}})
	if err != nil {
		p.close()
		return nil, err
	}

	p.g, p.gctx = errgroup.WithContext(context.WithoutCancel(ctx))
	var sinkCtx, prodCtx context.Context
	sinkCtx, p.stopSinks = context.WithCancel(p.gctx)
	prodCtx, p.stopProd = context.WithCancel(p.gctx)
	p.g.Go(func() error { return pcapSink.Run(sinkCtx) })
	p.g.Go(func() error { return flowSink.Run(sinkCtx) })
	p.g.Go(func() error {
		defer close(p.prodDone)
		return prod.Run(prodCtx)
	})
	ready := func() error { return errors.Join(pcapSink.Ready(), flowSink.Ready(), prod.Ready()) }
	if err := p.until(ctx, 30*time.Second, ready); err != nil {
		p.close()
		return nil, fmt.Errorf("pipeline not ready: %w", err)
	}
	return p, nil
}

// until calls fn every pollEvery until it returns nil, the timeout passes,
// ctx ends or a component fails.
func (p *pipeline) until(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.gctx.Done():
			return fmt.Errorf("a component failed: %w", p.g.Wait())
		case <-t.C:
		}
	}
}

// onStatus notes the producer's Finished report for a capture: the end of
// its replay, with the last batch published.
func (p *pipeline) onStatus(m *nats.Msg) {
	s, err := schemas.DecodeStatus(m.Data)
	if err != nil || s.Source != schemas.SourceProducer || s.State != schemas.StateFinished {
		return
	}
	if ch := p.finishedChan(s.Name); ch != nil {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

func (p *pipeline) finishedChan(name string) chan struct{} {
	p.finishedMu.Lock()
	defer p.finishedMu.Unlock()
	ch, ok := p.finished[name]
	if !ok {
		ch = make(chan struct{})
		p.finished[name] = ch
	}
	return ch
}

// capture publishes the command a router would for one replayed interface.
func (p *pipeline) capture(ctx context.Context, name, iface string) error {
	p.finishedChan(name)
	data, err := schemas.EncodeCommand(&schemas.Command{
		Action: schemas.ActionCapture, Namespace: benchNamespace, Name: name, UID: "uid-" + name, Node: benchNode,
		IssuedAt: time.Now(), Endpoints: []schemas.Endpoint{{Pod: benchPod, Namespace: benchNamespace, Interface: iface}},
	})
	if err != nil {
		return err
	}
	subj, err := schemas.CommandSubject(benchNode, benchNamespace, name)
	if err != nil {
		return err
	}
	if _, err := p.js.Publish(ctx, subj, data); err != nil {
		return fmt.Errorf("publish command %s: %w", name, err)
	}
	return nil
}

// counter sums a counter family of the pipeline's registry.
func (p *pipeline) counter(name string) float64 {
	mfs, err := p.reg.Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// drained reports whether both sinks acked every batch in the stream. A
// sink acks only once a batch is durable (in a completed, indexed object;
// in inserted flow rows), so drained means stored.
func (p *pipeline) drained(ctx context.Context) error {
	for _, name := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
		c, err := p.js.Consumer(ctx, schemas.StreamPackets, name)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return fmt.Errorf("%s: %d pending, %d unacked", name, info.NumPending, info.NumAckPending)
		}
	}
	return nil
}

// close stops the producer first (its last batches are published), then
// the sinks (open objects completed, open flows inserted), then NATS.
func (p *pipeline) close() error {
	var err error
	if p.g != nil {
		p.stopProd()
		<-p.prodDone
		p.stopSinks()
		err = p.g.Wait()
	}
	for _, nc := range p.conns {
		nc.Close()
	}
	for _, c := range p.chConns {
		_ = c.Close()
	}
	if p.ns != nil {
		p.ns.Shutdown()
		p.ns.WaitForShutdown()
	}
	_ = os.RemoveAll(p.storeDir)
	return err
}

// markerClock records when the producer read each latency marker.
type markerClock struct {
	markers map[int]uint16
	mu      sync.Mutex
	read    map[uint16]time.Time
}

func newMarkerClock(markers map[int]uint16) *markerClock {
	return &markerClock{markers: markers, read: map[uint16]time.Time{}}
}

func (m *markerClock) readAt(port uint16) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.read[port]
	return t, ok
}

// benchOpener replays the workload as fast as possible on throughputIf
// and the latency capture at its recorded pace on latencyIf, timing the
// markers of the latter as the producer reads them.
type benchOpener struct {
	fast, paced *file.Opener
	marks       *markerClock
}

// Open implements source.Opener.
func (o *benchOpener) Open(opts source.Options) (source.Source, error) {
	if opts.Interface != latencyIf {
		return o.fast.Open(opts)
	}
	s, err := o.paced.Open(opts)
	if err != nil {
		return nil, err
	}
	return &markedSource{Source: s, marks: o.marks}, nil
}

// markedSource notes the wall time at which each marker packet is handed
// to the producer: the start of its end-to-end latency.
type markedSource struct {
	source.Source
	marks *markerClock
	n     int
}

// Read implements source.Source.
func (s *markedSource) Read() ([]byte, source.Info, error) {
	data, info, err := s.Source.Read()
	if err == nil {
		if port, ok := s.marks.markers[s.n]; ok {
			s.marks.mu.Lock()
			s.marks.read[port] = time.Now()
			s.marks.mu.Unlock()
		}
		s.n++
	}
	return data, info, err
}
