// Package producer is the node agent: it follows its node's capture
// commands, captures the selected interfaces (AF_PACKET, or pcap replay),
// batches the packets into the schemas wire format and publishes the batches
// to JetStream, reporting status per (capture, node).
//
// Lifecycle: New only validates and allocates. Run uses the connection in
// Deps (the caller dials it through internal/clients with ConnOptions), owns
// every goroutine (command consumer, command resync, one capture loop per
// (capture, interface), one reader per interface shared by those loops, the
// ack settler, the status reporter) and waits for all of them before it
// returns. When its context ends, Run stops consuming,
// stops the captures (each flushes its open batch), waits for pending acks
// and publishes a final status, all under GracePeriod on a fresh context.
package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/producer/source/afpacket"
	"github.com/capstream/capstream/producer/source/file"
)

// Deps are the producer's collaborators.
type Deps struct {
	// Logger is the process logger; the producer adds component=producer.
	Logger *slog.Logger
	// Registerer receives the producer's metrics.
	Registerer prometheus.Registerer
	// NATS is the connection batches, status and the command consumer use;
	// dial it with ConnOptions so a disconnect drops at the source instead
	// of buffering. Run does not close it.
	NATS *nats.Conn
	// Opener, when set, replaces the source Config.Source selects, for
	// tests and embedding.
	Opener source.Opener
}

// Producer captures for one node. See the package comment.
type Producer struct {
	cfg    Config
	logger *slog.Logger
	m      *metrics
	opener source.Opener

	// epoch identifies this process in batch headers and message IDs, so
	// sequence numbers restarting at 1 never collide with an earlier run.
	epoch string

	nc    *nats.Conn
	bound atomic.Bool
	// mgr is the running manager, for tests.
	mgr atomic.Pointer[manager]
	// rings is the node's ring budget; ringBytes what one interface takes
	// from it (0 for sources without a kernel ring).
	rings     rings
	ringBytes int64
}

// New validates cfg and builds the producer; it does no I/O.
func New(cfg Config, deps Deps) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("producer config: %w", err)
	}
	if deps.Logger == nil || deps.Registerer == nil || deps.NATS == nil {
		return nil, errors.New("producer: logger, registerer and nats are required")
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("producer metrics: %w", err)
	}
	opener := deps.Opener
	if opener == nil {
		switch cfg.Source {
		case SourceAFPacket:
			opener, err = afpacket.NewOpener(cfg.AFPacket)
		case SourceFile:
			opener, err = file.NewOpener(cfg.File)
		}
		if err != nil {
			return nil, fmt.Errorf("producer source: %w", err)
		}
	}
	var e [8]byte
	_, _ = rand.Read(e[:])
	p := &Producer{
		cfg:    cfg,
		logger: deps.Logger.With("component", "producer", "node", cfg.Node),
		m:      m,
		opener: opener,
		nc:     deps.NATS,
		epoch:  hex.EncodeToString(e[:]),
	}
	if cfg.Source == SourceAFPacket && deps.Opener == nil {
		p.rings.max, p.ringBytes = cfg.MaxRingBytes, int64(cfg.AFPacket.RingBytes)
		p.rings.inUseGauge = m.ringBytes
	}
	return p, nil
}

// Ready reports whether the producer is connected to NATS and following
// its node's commands.
func (p *Producer) Ready() error {
	nc := p.nc
	switch {
	case !nc.IsConnected():
		return fmt.Errorf("nats connection %s", nc.Status())
	case !p.bound.Load():
		return errors.New("command consumer not bound")
	}
	return nil
}

// Run captures until ctx ends; see the package comment.
func (p *Producer) Run(ctx context.Context) error {
	nc := p.nc
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(p.cfg.AckTimeout),
		// Above the producer's own bound, so the client never stalls
		// a capture loop; status reports take the extra room.
		jetstream.WithPublishAsyncMaxPending(p.cfg.MaxInFlightBatches+1024),
	)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// graceCtx outlives ctx by the grace period, for the shutdown flush.
	graceCtx, graceCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer graceCancel()
	pub := newPublisher(js, p.cfg, p.m, p.logger)
	mgr := newManager(p, js, pub, graceCtx)
	p.mgr.Store(mgr)
	var wg sync.WaitGroup
	wg.Go(func() { pub.run(graceCtx) })
	cmds := make(chan jetstream.Msg, 64)
	kick := make(chan struct{}, 1)
	wg.Go(func() { p.consume(ctx, js, cmds, kick) })
	wg.Go(func() { p.resync(ctx, js, mgr.resyncs, kick) })

	mgr.run(ctx, cmds)

	// Shutdown: captures are stopped (they flushed their batches on a
	// context that ends with the grace period); wait for acks.
	stop := time.AfterFunc(p.cfg.GracePeriod, graceCancel)
	defer stop.Stop()
	mgr.stopAll()
	for pub.inFly.Load() > 0 && graceCtx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	mgr.reportAll()
	graceCancel()
	wg.Wait()
	pub.drain(graceCtx)
	if err := nc.FlushTimeout(time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.logger.Debug("final flush", "error", err)
	}
	return nil
}

// ConnOptions are the producer's NATS connection options, on top of
// clients.NATSConfig's: reconnect fast, and no reconnect buffer, so that
// publishes made while disconnected fail at once and the capture loops
// drop and count instead of buffering without bound.
func ConnOptions(logger *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on a deliberate close
				logger.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
}
