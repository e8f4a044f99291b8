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
// Every consumer error (a missed heartbeat, a deleted consumer) kicks a
// resync: the consumer resumes after the last message it saw, so it never
// shows a stop that expired meanwhile.
func (p *Producer) consume(ctx context.Context, js jetstream.JetStream, out chan<- jetstream.Msg, kick chan<- struct{}) {
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
				select {
				case kick <- struct{}{}:
				default:
				}
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

// liveCommands is what a resync learned: the command subjects of this node
// that hold a message, and the stream's last sequence read before them.
type liveCommands struct {
	subjects map[string]uint64
	lastSeq  uint64
}

// resync sends the manager the node's live command subjects every
// ResyncPeriod, after every reconnect of the connection (polled each
// second) and after every consumer error. A capture whose subject is empty
// gets no more commands: its stop expired (router stopTTL) while the
// producer was away, or an operator purged it. The manager stops it and
// drops its state. A failed look-up is counted, logged and retried with
// backoff.
func (p *Producer) resync(ctx context.Context, js jetstream.JetStream, out chan<- liveCommands, kick <-chan struct{}) {
	filter, err := schemas.CommandFilterForNode(p.cfg.Node)
	if err != nil {
		// New validated the node, so this cannot happen.
		p.logger.Error("resync filter", "error", err)
		return
	}
	tick := time.NewTicker(p.cfg.ResyncPeriod)
	defer tick.Stop()
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	reconnects := p.nc.Stats().Reconnects
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(min(5*time.Second, p.cfg.ResyncPeriod)), backoff.WithMaxElapsedTime(0))
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-kick:
		case <-retry:
		case <-watch.C:
			r := p.nc.Stats().Reconnects
			if r == reconnects {
				continue
			}
			reconnects = r
		}
		live, err := p.readLive(ctx, js, filter)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := b.NextBackOff()
			p.m.commands.WithLabelValues("resync_error").Inc()
			log := p.logger.Warn
			if !p.nc.IsConnected() {
				log = p.logger.Debug // the disconnect is logged already
			}
			log("resync commands", "stream", schemas.StreamCommands, "error", err, "retry_in", d)
			retry = time.After(d)
			continue
		}
		b.Reset()
		retry = nil
		select {
		case out <- live:
		case <-ctx.Done():
			return
		}
	}
}

// readLive lists the node's command subjects that hold a message. The
// stream's last sequence is read first, so every command at or below it
// that is not listed was removed before the listing.
func (p *Producer) readLive(ctx context.Context, js jetstream.JetStream, filter string) (liveCommands, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return liveCommands{}, err
	}
	lastSeq := stream.CachedInfo().State.LastSeq
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return liveCommands{}, err
	}
	return liveCommands{subjects: info.State.Subjects, lastSeq: lastSeq}, nil
}
