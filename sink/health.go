package sink

import (
	"errors"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// Health is a sink's readiness, read by /readyz from another goroutine than
// the sink's: the durable consumer is bound, NATS is connected, and the
// last write to a store succeeded. The zero value is not ready (not bound).
type Health struct {
	bound   atomic.Bool
	lastErr atomic.Pointer[error]
}

// SetBound records whether the consumer is bound.
func (h *Health) SetBound(b bool) { h.bound.Store(b) }

// SetErr records the outcome of the last write: nil after a success.
func (h *Health) SetErr(err error) { h.lastErr.Store(&err) }

// Ready returns why the sink is not ready, or nil; nc is the connection the
// consumer is bound on.
func (h *Health) Ready(nc *nats.Conn) error {
	if !h.bound.Load() {
		return errors.New("consumer not bound yet")
	}
	if !nc.IsConnected() {
		return errors.New("nats disconnected")
	}
	if p := h.lastErr.Load(); p != nil && *p != nil {
		return *p
	}
	return nil
}
