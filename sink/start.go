package sink

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	chschema "github.com/capstream/capstream/schemas/clickhouse"
)

// Retry runs fn with exponential backoff, at most 10 s between tries, until
// it succeeds or ctx ends, logging each failure at Warn.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval, bo.MaxElapsedTime = 10*time.Second, 0
	return backoff.RetryNotify(fn, backoff.WithContext(bo, ctx), func(err error, d time.Duration) {
		log.Warn("retrying", "op", what, "error", err, "wait", d)
	})
}

// NilIfDone returns nil once ctx has ended: an error caused by the shutdown
// is not a failure of the sink.
func NilIfDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// start is what both sinks do before consuming: apply the ClickHouse
// migrations (when migrate is set) and bind one consumer per packet
// partition from the template cc (bindPartitions), retrying each while
// ClickHouse or NATS are away. It returns the consumers and the ack wait
// in force: ackWait when non-zero, else cc's.
func start(ctx context.Context, log *slog.Logger, ch driver.Conn, migrate bool, js jetstream.JetStream,
	cc jetstream.ConsumerConfig, ackWait time.Duration) (*bound, time.Duration, error) {
	if migrate {
		if err := Retry(ctx, log, "migrate", func() error {
			_, err := chschema.Migrate(ctx, ch)
			return err
		}); err != nil {
			return nil, 0, fmt.Errorf("migrate clickhouse: %w", err)
		}
	}
	var b *bound
	if err := Retry(ctx, log, "bind consumers", func() error {
		var err error
		b, err = bindPartitions(ctx, js, cc, ackWait)
		return err
	}); err != nil {
		return nil, 0, err
	}
	if ackWait <= 0 {
		ackWait = cc.AckWait
	}
	return b, ackWait, nil
}
