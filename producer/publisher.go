package producer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
)

// publisher publishes batches asynchronously under a bound on bytes and
// batches in flight, and settles every future: an ack counts the batch as
// delivered, anything else as a publish drop of its packets. Batch buffers
// come from and return to a pool, so memory is bounded by the in-flight
// budget plus one open batch per interface.
type publisher struct {
	js      jetstream.JetStream
	bytes   *semaphore.Weighted
	batches *semaphore.Weighted
	pending chan inFlight
	pool    sync.Pool
	m       *metrics
	logger  *slog.Logger
	inFly   atomic.Int64

	bufBytes int
	retryFor time.Duration
}

// inFlight is a published batch awaiting its ack.
type inFlight struct {
	fut jetstream.PubAckFuture
	// msg is kept to publish the batch again (same Nats-Msg-Id) until
	// retryFor after first, its first attempt.
	msg     *nats.Msg
	first   time.Time
	buf     *[]byte
	n       int64
	packets uint64
	ctr     *counters
}

func newPublisher(js jetstream.JetStream, cfg Config, m *metrics, logger *slog.Logger) *publisher {
	p := &publisher{
		js:       js,
		bytes:    semaphore.NewWeighted(int64(cfg.MaxInFlightBytes)),
		batches:  semaphore.NewWeighted(int64(cfg.MaxInFlightBatches)),
		pending:  make(chan inFlight, cfg.MaxInFlightBatches),
		m:        m,
		logger:   logger,
		bufBytes: cfg.BatchBytes + 64<<10,
		retryFor: cfg.PublishRetryFor,
	}
	p.pool.New = func() any {
		b := make([]byte, 0, p.bufBytes)
		return &b
	}
	return p
}

// getBuf returns an empty batch buffer.
func (p *publisher) getBuf() *[]byte {
	b := p.pool.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// putBuf returns a buffer to the pool; oversized ones (a batch that grew
// past the usual size for one huge record) are left to the collector.
func (p *publisher) putBuf(b *[]byte) {
	if cap(*b) <= 2*p.bufBytes {
		p.pool.Put(b)
	}
}

// publish sends a batch whose body is *buf. It waits for room in the
// in-flight budget for at most wait (or until ctx ends when wait is
// negative). It always takes ownership of buf. A batch that cannot be sent
// is counted as dropped on ctr.
func (p *publisher) publish(ctx context.Context, msg *nats.Msg, buf *[]byte, packets uint64, ctr *counters, wait time.Duration) {
	n := int64(len(*buf))
	if !p.acquire(ctx, n, wait) {
		p.drop(ctr, reasonBudget, packets, n, nil)
		p.putBuf(buf)
		return
	}
	// The client's own pending limit is set above MaxInFlightBatches, so
	// this never stalls: the semaphores above are the bound.
	fut, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		p.release(n)
		p.drop(ctr, classify(err), packets, n, err)
		p.putBuf(buf)
		return
	}
	p.inFly.Add(n)
	p.m.inFlightBytes.Set(float64(p.inFly.Load()))
	p.m.batches.Inc()
	// Never blocks: the batch semaphore keeps the channel from filling.
	p.pending <- inFlight{fut: fut, msg: msg, first: time.Now(), buf: buf, n: n, packets: packets, ctr: ctr}
}

func (p *publisher) acquire(ctx context.Context, n int64, wait time.Duration) bool {
	if p.batches.TryAcquire(1) {
		if p.bytes.TryAcquire(n) {
			return true
		}
		if wait != 0 {
			wctx, cancel := ctx, context.CancelFunc(func() {})
			if wait > 0 {
				wctx, cancel = context.WithTimeout(ctx, wait)
			}
			err := p.bytes.Acquire(wctx, n)
			cancel()
			if err == nil {
				return true
			}
		}
		p.batches.Release(1)
		return false
	}
	if wait == 0 {
		return false
	}
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()
	if p.batches.Acquire(wctx, 1) != nil {
		return false
	}
	if p.bytes.Acquire(wctx, n) != nil {
		p.batches.Release(1)
		return false
	}
	return true
}

func (p *publisher) release(n int64) {
	p.bytes.Release(n)
	p.batches.Release(1)
}

// drop counts a batch that will not reach JetStream.
func (p *publisher) drop(ctr *counters, reason string, packets uint64, n int64, err error) {
	p.m.dropPackets.WithLabelValues(reason).Add(float64(packets))
	p.m.dropBytes.WithLabelValues(reason).Add(float64(n))
	ctr.publishDrops.Add(packets)
	if err != nil {
		ctr.setError("publish: " + err.Error())
	} else {
		ctr.setError("publish: in-flight budget exhausted (" + reason + ")")
	}
}

// classify maps a publish error to a drop reason with the client's
// sentinels.
func classify(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return reasonNoStream
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return reasonDisconnected
	case errors.As(err, &apiErr):
		return reasonRefused
	}
	return reasonOther
}

// run settles futures in publication order until ctx ends or, after
// close, every pending batch is settled. Acks arrive in order per
// connection, so waiting on the oldest first costs nothing.
func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case f := <-p.pending:
			p.settle(ctx, f)
		case <-ctx.Done():
			return
		}
	}
}

// settle waits for one future.
func (p *publisher) settle(ctx context.Context, f inFlight) {
	select {
	case <-f.fut.Ok():
		p.m.acked.Inc()
	case err := <-f.fut.Err():
		reason := classify(err)
		if p.retry(ctx, f, reason) {
			return
		}
		if reason == reasonOther {
			p.logger.Warn("batch publish failed", "error", err)
		}
		p.drop(f.ctr, reason, f.packets, f.n, err)
	case <-ctx.Done():
		p.drop(f.ctr, reasonTimeout, f.packets, f.n, ctx.Err())
	}
	p.inFly.Add(-f.n)
	p.m.inFlightBytes.Set(float64(p.inFly.Load()))
	p.release(f.n)
	p.putBuf(f.buf)
}

// retry publishes a batch again after a failure that a stream-leader
// change causes (no ack in time, no stream answering) and puts it back in
// the queue, keeping its budget; it reports whether it did. The queue has
// room: each queued batch holds one unit of the batch semaphore, whose
// size is the queue's, and f still holds its own. A retried batch is
// settled after the ones published meanwhile, and it lands in the stream
// after them too, which the sinks' gap accounting allows for
// (schemas.PublishRetryWindow).
func (p *publisher) retry(ctx context.Context, f inFlight, reason string) bool {
	if time.Since(f.first) >= p.retryFor || ctx.Err() != nil || reason != reasonTimeout && reason != reasonNoStream {
		return false
	}
	fut, err := p.js.PublishMsgAsync(f.msg)
	if err != nil {
		return false // counted by the caller with the first error's reason
	}
	p.m.retries.WithLabelValues(reason).Inc()
	f.fut = fut
	p.pending <- f
	return true
}

// drain settles what is pending, waiting until ctx ends; left-over
// batches count as dropped.
func (p *publisher) drain(ctx context.Context) {
	for {
		select {
		case f := <-p.pending:
			p.settle(ctx, f)
		default:
			return
		}
	}
}
