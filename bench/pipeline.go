package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	assembly "github.com/capstream/capstream/pipeline"
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

// benchIdentity is the harness's own connection: it publishes the commands
// a router would and watches every status report, so it may do anything.
var benchIdentity = schemas.Identity{User: "capstream-bench", Publish: []string{">"}, Subscribe: []string{">"}, InboxPrefix: "_INBOX_capstream-bench"}

// pipeline is producer -> embedded JetStream -> both sinks, in this
// process, started by pipeline.Start as capstream-dev starts it (without
// the router: the harness publishes the commands).
type pipeline struct {
	p        *assembly.Pipeline
	storeDir string
	js       jetstream.JetStream // the harness's own connection
	nc       *nats.Conn
	reg      *prometheus.Registry
	ch       driver.Conn // the harness's queries
	marks    *markerClock

	g          *errgroup.Group
	gctx       context.Context
	stop       context.CancelFunc
	finishedMu sync.Mutex
	finished   map[string]chan struct{}
}

// storage is where the sinks write.
type storage struct {
	ch       clients.ClickHouseConfig
	s3       clients.S3Config
	s3Client *minio.Client
}

// startPipeline starts NATS, both sinks and the producer, and returns once
// all are ready. The caller must call close.
func startPipeline(ctx context.Context, o options, dir string, st storage, w workload, lw latencyWorkload) (*pipeline, error) {
	p := &pipeline{finished: map[string]chan struct{}{}, marks: newMarkerClock(lw.Markers), reg: prometheus.NewRegistry()}
	storeDir, err := os.MkdirTemp(dir, "nats-")
	if err != nil {
		return nil, fmt.Errorf("nats store: %w", err)
	}
	server := assembly.DefaultServerConfig()
	server.StoreDir = storeDir
	// Plaintext, as the JetStream floor it is compared with: the figures
	// are capstream's own cost. TLS costs the same in both.
	server.Plaintext = true
	// Room for the whole workload twice over: the replay never waits for
	// the sinks, and a full stream would refuse (drop) batches.
	server.PacketsMaxBytes = max(server.PacketsMaxBytes, 2*w.FileBytes)

	pcfg := pcapstore.DefaultConfig()
	// Every other setting is the default: 64 MiB objects, one PUT each.
	pcfg.Prefix, pcfg.StopAfter, pcfg.Migrate = pcapPrefix, sinkStopAfter, false
	fcfg := flowstore.DefaultConfig()
	fcfg.ActiveTimeout, fcfg.IdleTimeout, fcfg.StopAfter, fcfg.Migrate = o.ActiveTimeout, o.ActiveTimeout/2, sinkStopAfter, false
	fast, err := file.NewOpener(file.Config{Files: map[string]string{throughputIf: w.Path}})
	if err != nil {
		return nil, err
	}
	paced, err := file.NewOpener(file.Config{Files: map[string]string{latencyIf: lw.Path}, Paced: true})
	if err != nil {
		return nil, err
	}
	prcfg := producer.DefaultConfig()
	prcfg.Node, prcfg.Source, prcfg.InterfacePrefix = benchNode, producer.SourceFile, "replay"

	logger := slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p.p, err = assembly.Start(ctx, assembly.Config{
		Server: server, Producers: []producer.Config{prcfg}, Pcap: pcfg, Flows: fcfg, ClickHouse: st.ch, S3: st.s3,
		Identities: []schemas.Identity{benchIdentity},
	}, assembly.Deps{
		Logger: logger, Registerer: p.reg,
		Openers: map[string]source.Opener{benchNode: &benchOpener{fast: fast, paced: paced, marks: p.marks}},
	})
	if err != nil {
		_ = os.RemoveAll(storeDir)
		return nil, err
	}
	p.storeDir = storeDir
	nconf, err := p.p.Client(benchIdentity.User)
	if err != nil {
		p.close()
		return nil, err
	}
	if p.nc, p.js, err = clients.JetStream(nconf); err != nil {
		p.close()
		return nil, err
	}
	if _, err := p.nc.Subscribe(schemas.StatusSubjectsAll, p.onStatus); err != nil {
		p.close()
		return nil, fmt.Errorf("subscribe to status: %w", err)
	}
	if p.ch, err = st.ch.Open(); err != nil {
		p.close()
		return nil, err
	}
	var runCtx context.Context
	p.g, p.gctx = errgroup.WithContext(context.WithoutCancel(ctx))
	runCtx, p.stop = context.WithCancel(p.gctx)
	p.g.Go(func() error { return p.p.Run(runCtx) })
	if err := p.until(ctx, 30*time.Second, p.p.Ready); err != nil {
		p.close()
		return nil, fmt.Errorf("pipeline not ready: %w", err)
	}
	return p, nil
}

// until calls fn every pollEvery until it returns nil, the timeout passes,
// ctx ends or a component fails.
func (p *pipeline) until(ctx context.Context, timeout time.Duration, fn func() error) error {
	return poll(ctx, timeout, pollEvery, p.gctx.Done(), func(error) error {
		return fmt.Errorf("a component failed: %w", p.g.Wait())
	}, fn)
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
	n, _ := testenv.MetricSum(p.reg, name, nil)
	return n
}

// drained reports whether both sinks acked every batch in the stream. A
// sink acks only once a batch is durable (in a completed, indexed object;
// in inserted flow rows), so drained means stored.
func (p *pipeline) drained(ctx context.Context) error {
	for _, name := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
		if err := sink.Drained(ctx, p.js, name, false); err != nil {
			return err
		}
	}
	return nil
}

// close stops the producer first (its last batches are published), then
// the sinks (open objects completed, open flows inserted), then NATS.
func (p *pipeline) close() error {
	var err error
	if p.g != nil {
		p.stop()
		err = p.g.Wait()
	}
	if p.nc != nil {
		p.nc.Close()
	}
	if p.ch != nil {
		_ = p.ch.Close()
	}
	p.p.Close()
	_ = os.RemoveAll(p.storeDir)
	return err
}
