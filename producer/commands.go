package producer

import (
	"context"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// consume follows this node's commands with an ordered consumer that
// starts from the last message of every subject, so each start of the
// producer rebuilds the full desired state; the client recreates the
// consumer on gaps and reconnects, resuming after the last message seen.
// Messages go to out in stream order. Creating the consumer is retried
// with backoff (the stream may not exist yet, or JetStream may be away).
func (p *Producer) consume(ctx context.Context, js jetstream.JetStream, out chan<- jetstream.Msg) {
	cfg, err := schemas.ProducerConsumer(p.cfg.Node)
	if err != nil {
		// New validated the node, so this cannot happen.
		p.logger.Error("command consumer config", "error", err)
		return
	}
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	for ctx.Err() == nil {
		cons, err := js.OrderedConsumer(ctx, schemas.StreamCommands, cfg)
		var cc jetstream.ConsumeContext
		if err == nil {
			cc, err = cons.Consume(func(msg jetstream.Msg) {
				select {
				case out <- msg:
				case <-ctx.Done():
				}
			}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				p.logger.Debug("command consumer", "error", err)
			}))
		}
		if err != nil {
			d := b.NextBackOff()
			p.logger.Warn("follow commands", "stream", schemas.StreamCommands, "error", err, "retry_in", d)
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
			continue
		}
		p.bound.Store(true)
		p.logger.Info("following commands", "stream", schemas.StreamCommands, "filter", cfg.FilterSubjects)
		<-ctx.Done()
		// Stop pulling first; the manager handles nothing after this.
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-time.After(time.Second):
		}
		p.bound.Store(false)
	}
}

// decodeCommand decodes a command and checks that it belongs on its
// subject and to this node.
func (p *Producer) decodeCommand(msg jetstream.Msg) (*schemas.Command, error) {
	cmd, err := schemas.DecodeCommand(msg.Data())
	if err != nil {
		return nil, err
	}
	key, err := schemas.ParseCommandSubject(msg.Subject())
	if err != nil {
		return nil, err
	}
	if key.Node != cmd.Node || key.Namespace != cmd.Namespace || key.Name != cmd.Name || cmd.Node != p.cfg.Node {
		return nil, errSubjectMismatch
	}
	return cmd, nil
}
