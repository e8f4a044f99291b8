package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
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

// checkEndpoints refuses a command that asks for more than a capture may
// have: an interface outside the configured prefix (the node's own eth0,
// lo or tunnel devices) or an endpoint in another namespace than the
// capture's. The router never sends either, so such a command is forged
// or broken; its capture is reported in Error and nothing is captured.
func (p *Producer) checkEndpoints(cmd *schemas.Command) error {
	for _, ep := range cmd.Endpoints {
		switch {
		case ep.Namespace != cmd.Namespace:
			return fmt.Errorf("%w: endpoint %s/%s is outside the capture's namespace %s", errRefused, ep.Namespace, ep.Pod, cmd.Namespace)
		case !strings.HasPrefix(ep.Interface, p.cfg.InterfacePrefix):
			return fmt.Errorf("%w: endpoint %s/%s: interface %q does not start with %q", errRefused, ep.Namespace, ep.Pod, ep.Interface, p.cfg.InterfacePrefix)
		}
	}
	return nil
}

// errRefused marks a command the producer will not carry out.
var errRefused = errors.New("command refused")
