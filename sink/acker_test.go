package sink

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
)

// ackEnv is a stream with one message and a consumer with a short AckWait
// on a real server, so each acknowledgement is seen as the server sees it.
type ackEnv struct {
	cons  jetstream.Consumer
	acker Acker
}

const testAckWait = 2 * time.Second

func newAckEnv(t *testing.T, name string) *ackEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: real NATS server with multi-second waits")
	}
	srv := testenv.NATS(t)
	ctx := t.Context()
	if _, err := srv.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ACK_" + name, Subjects: []string{"ack." + name}}); err != nil {
		t.Fatal(err)
	}
	cons, err := srv.JS.CreateOrUpdateConsumer(ctx, "ACK_"+name, jetstream.ConsumerConfig{
		Durable: "d", AckPolicy: jetstream.AckExplicitPolicy, AckWait: testAckWait, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.JS.Publish(ctx, "ack."+name, []byte("batch")); err != nil {
		t.Fatal(err)
	}
	return &ackEnv{cons: cons, acker: Acker{Conn: srv.Conn}}
}

// next fetches one message within wait, or nil.
func (e *ackEnv) next(t *testing.T, wait time.Duration) jetstream.Msg {
	t.Helper()
	b, err := e.cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		return m
	}
	if err := b.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
		t.Fatal(err)
	}
	return nil
}

func (e *ackEnv) info(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ci, err := e.cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

// TestFunctionalAckerAgainstServer pins the payloads Acker sends by reply
// subject (kept so a sink need not hold whole messages alive) to what the
// server does with them.
func TestFunctionalAckerAgainstServer(t *testing.T) {
	t.Run("ack removes the message from ack pending", func(t *testing.T) {
		e := newAckEnv(t, "ack")
		m := e.next(t, time.Second)
		if err := e.acker.Ack(m.Reply()); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 5*time.Second, func() error {
			if ci := e.info(t); ci.NumAckPending != 0 || ci.AckFloor.Stream != 1 {
				return fmt.Errorf("%d ack pending, ack floor %d", ci.NumAckPending, ci.AckFloor.Stream)
			}
			return nil
		})
		if again := e.next(t, 2*testAckWait); again != nil {
			t.Error("an acked message was redelivered")
		}
	})
	t.Run("progress holds off redelivery past AckWait", func(t *testing.T) {
		e := newAckEnv(t, "wpi")
		m := e.next(t, time.Second)
		end := time.Now().Add(2 * testAckWait)
		for time.Now().Before(end) {
			if err := e.acker.Progress(m.Reply()); err != nil {
				t.Fatal(err)
			}
			if again := e.next(t, testAckWait/4); again != nil {
				t.Fatal("redelivered while in progress")
			}
		}
		// Without progress, AckWait redelivers it.
		again := e.next(t, 2*testAckWait)
		if again == nil {
			t.Fatal("not redelivered once progress stopped")
		}
		if md, _ := again.Metadata(); md.NumDelivered != 2 {
			t.Errorf("delivered %d times, want 2", md.NumDelivered)
		}
	})
	t.Run("nak with a delay redelivers after the delay", func(t *testing.T) {
		e := newAckEnv(t, "nak")
		m := e.next(t, time.Second)
		const delay = 1500 * time.Millisecond
		start := time.Now()
		if err := e.acker.Nak(m.Reply(), delay); err != nil {
			t.Fatal(err)
		}
		if again := e.next(t, delay/2); again != nil {
			t.Fatalf("redelivered after %s, before the %s delay", time.Since(start), delay)
		}
		again := e.next(t, 2*delay)
		if again == nil {
			t.Fatal("not redelivered after the delay")
		}
		if took := time.Since(start); took < delay-100*time.Millisecond || took > testAckWait+delay {
			t.Errorf("redelivered after %s, want about %s", took, delay)
		}
	})
	t.Run("term is never redelivered", func(t *testing.T) {
		e := newAckEnv(t, "term")
		m := e.next(t, time.Second)
		if err := e.acker.Term(m.Reply()); err != nil {
			t.Fatal(err)
		}
		if again := e.next(t, 2*testAckWait); again != nil {
			t.Error("a terminated message was redelivered")
		}
		if ci := e.info(t); ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
			t.Errorf("after term: %d ack pending, %d redelivered", ci.NumAckPending, ci.NumRedelivered)
		}
	})
	t.Run("no reply subject", func(t *testing.T) {
		if err := (Acker{}).Ack(""); err == nil {
			t.Error("ack without a reply subject accepted")
		}
	})
}
