package producer

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// rings is the node's budget of capture-ring memory: every open AF_PACKET
// socket maps a ring of AFPacket.RingBytes of kernel memory. Sockets are
// shared between the captures of an interface (shared.go), so a ring is
// reserved per interface, and the interfaces of a busy node can still ask
// for more than it has (100 endpoints at 32 MiB: 3.1 GiB). An interface
// opens only once its ring fits the budget; until then it waits, and its
// captures say why.
type rings struct {
	mu    sync.Mutex
	max   int64 // 0: no rings are used (file replay)
	used  int64
	count int
	// inUseGauge, when set, shows used (capstream_producer_ring_bytes).
	inUseGauge prometheus.Gauge
}

// set records a change of the reservations; r.mu is held.
func (r *rings) set(delta int64) {
	r.used += delta
	if r.inUseGauge != nil {
		r.inUseGauge.Set(float64(r.used))
	}
}

// reserve takes n bytes of the budget, or reports that they do not fit.
func (r *rings) reserve(n int64) bool {
	if n == 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.used+n > r.max {
		return false
	}
	r.set(n)
	r.count++
	return true
}

// release returns n bytes to the budget.
func (r *rings) release(n int64) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set(-n)
	r.count--
}

// inUse returns the bytes reserved.
func (r *rings) inUse() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used
}

// refusal says why a ring of n bytes cannot open, for the capture's status.
func (r *rings) refusal(n int64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("ring budget full: %d MiB of producer.maxRingBytes %d MiB in use by %d interfaces, this one needs %d MiB; it opens when others close",
		r.used>>20, r.max>>20, r.count, n>>20)
}
