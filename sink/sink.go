// Package sink holds what the two packet sinks share: the consumer loop
// (Runner: migrating ClickHouse and binding one durable consumer per
// partition of CAPSTREAM_PACKETS with retries, sharing the partitions with
// the sink's other replicas, pulling, decoding a JetStream message
// into a Delivery and classifying it, progress for held batches, the
// per-message panic boundary and the grace-period shutdown), acknowledging
// by reply subject, readiness (Health), and the client configurations for
// ClickHouse and S3.
//
// Nothing here starts a goroutine on its own: a sink's Run calls
// Runner.Run, which runs the pumps, the loop and the sink's workers and
// returns once all have returned.
package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
)

// Delivery is one packet batch as a sink works with it. It keeps the reply
// subject rather than the jetstream.Msg so that the body can be released as
// soon as it has been copied or aggregated, while the ack is held until the
// batch is durable.
type Delivery struct {
	// Header is the decoded and validated batch header.
	Header schemas.BatchHeader
	// Body is the run of pcap records; it aliases the message.
	Body []byte
	// StreamSeq is the batch's sequence in CAPSTREAM_PACKETS.
	StreamSeq uint64
	// Delivered is how many times the server has delivered the batch; more
	// than one means an earlier delivery may already be durable.
	Delivered uint64
	// ConsumerSeq is the consumer's delivery sequence: one per delivery,
	// redeliveries included, over every process bound to the durable.
	ConsumerSeq uint64
	// Reply is the ack subject.
	Reply string
}

// Decode validates a batch message. An error wrapping schemas.ErrMalformed
// or schemas.ErrUnknownVersion means the message can never be stored and
// must be terminated; other errors are not expected.
func Decode(msg jetstream.Msg) (Delivery, error) {
	md, err := msg.Metadata()
	if err != nil {
		return Delivery{}, fmt.Errorf("batch metadata: %w", err)
	}
	h, err := schemas.DecodeBatchHeader(msg.Headers())
	if err != nil {
		return Delivery{}, err
	}
	key, err := schemas.ParsePacketSubject(msg.Subject())
	if err != nil {
		return Delivery{}, fmt.Errorf("%w: %w", schemas.ErrMalformed, err)
	}
	if key.Namespace != h.Namespace || key.Name != h.Capture || key.Node != h.Node {
		return Delivery{}, fmt.Errorf("%w: subject %s disagrees with the batch headers", schemas.ErrMalformed, msg.Subject())
	}
	n, err := schemas.ValidateBody(msg.Data(), h.SnapLength)
	if err != nil {
		return Delivery{}, fmt.Errorf("batch %d: %w", md.Sequence.Stream, err)
	}
	if n != int(h.Packets) {
		return Delivery{}, fmt.Errorf("%w: batch %d holds %d records, header says %d", schemas.ErrMalformed, md.Sequence.Stream, n, h.Packets)
	}
	return Delivery{
		Header:      h,
		Body:        msg.Data(),
		StreamSeq:   md.Sequence.Stream,
		Delivered:   md.NumDelivered,
		ConsumerSeq: md.Sequence.Consumer,
		Reply:       msg.Reply(),
	}, nil
}

// IsPermanent reports whether a Decode error means the payload itself is
// bad, so the message is terminated rather than retried.
func IsPermanent(err error) bool {
	return errors.Is(err, schemas.ErrMalformed) || errors.Is(err, schemas.ErrUnknownVersion)
}

// Acker acknowledges deliveries by their reply subject, with the same
// payloads jetstream.Msg sends, so that a sink does not have to keep whole
// messages (and their bodies) alive until an object completes.
type Acker struct {
	// Conn is the connection the consumer was bound on.
	Conn *nats.Conn
}

// Ack tells the server the batch is durable.
func (a Acker) Ack(reply string) error { return a.send(reply, "+ACK") }

// Progress resets the server's redelivery timer for a batch still held in
// an open object or flow window.
func (a Acker) Progress(reply string) error { return a.send(reply, "+WPI") }

// Term tells the server never to redeliver a batch that cannot be stored.
func (a Acker) Term(reply string) error { return a.send(reply, "+TERM") }

// Nak asks for redelivery after delay, used when a dependency failed.
func (a Acker) Nak(reply string, delay time.Duration) error {
	return a.send(reply, "-NAK {\"delay\": "+strconv.FormatInt(delay.Nanoseconds(), 10)+"}")
}

func (a Acker) send(reply, body string) error {
	if reply == "" {
		return errors.New("ack: message has no reply subject")
	}
	if err := a.Conn.Publish(reply, []byte(body)); err != nil {
		return fmt.Errorf("ack %s: %w", body, err)
	}
	return nil
}

// Bind creates or updates a sink's consumers from the template cc, one per
// partition of the packets stream (bindPartitions), and returns them in
// partition order. ackWait, when non-zero, replaces the schema's AckWait
// (tests shorten it so redeliveries after a simulated crash come quickly).
func Bind(ctx context.Context, js jetstream.JetStream, cc jetstream.ConsumerConfig, ackWait time.Duration) ([]jetstream.Consumer, error) {
	b, err := bindPartitions(ctx, js, cc, ackWait)
	if err != nil {
		return nil, err
	}
	return b.cons, nil
}

// minPinnedTTL is the shortest pinned TTL: three pulls of the shortest
// expiry the client allows (1s).
const minPinnedTTL = 3 * time.Second

// bindOne creates or updates one consumer. An ackWait below the consumer's
// pinned TTL shortens that too, to no less than minPinnedTTL: a replica
// holds a batch at most AckWait without progress, so it never needs its
// partition longer.
func bindOne(ctx context.Context, js jetstream.JetStream, cc jetstream.ConsumerConfig, ackWait time.Duration) (jetstream.Consumer, error) {
	if ackWait > 0 {
		cc.AckWait = ackWait
		if cc.PinnedTTL > ackWait {
			cc.PinnedTTL = max(ackWait, minPinnedTTL)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamPackets, cc)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s: %w", cc.Durable, err)
	}
	return c, nil
}
