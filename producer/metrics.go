package producer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

// Drop reasons, the label of the publish drop counters.
const (
	reasonBudget       = "budget"       // in-flight bound reached
	reasonDisconnected = "disconnected" // no connection to NATS
	reasonNoStream     = "no_stream"    // no stream answered (missing, or JetStream away)
	reasonTimeout      = "timeout"      // no ack within AckTimeout
	reasonRefused      = "refused"      // JetStream refused (limits, max payload)
	reasonOther        = "other"
)

// metrics are the producer's Prometheus metrics. They are node totals:
// per-capture figures go into status reports, which keeps the series count
// independent of how many captures run.
type metrics struct {
	packets       prometheus.Counter
	bytes         prometheus.Counter
	kernelDrops   prometheus.Counter
	dropPackets   *prometheus.CounterVec
	dropBytes     *prometheus.CounterVec
	batches       prometheus.Counter
	acked         prometheus.Counter
	retries       *prometheus.CounterVec
	inFlightBytes prometheus.Gauge
	captures      prometheus.Gauge
	interfaces    *prometheus.GaugeVec
	commands      *prometheus.CounterVec
	statusErrors  prometheus.Counter
	ringBytes     prometheus.Gauge
	ringRefusals  prometheus.Counter
	// Shared interfaces (shared.go).
	sharedSockets     prometheus.Gauge
	sharedSubscribers prometheus.Gauge
	sharedUnfiltered  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Every name gets the capstream_producer_ prefix at registration.
	r := run.NewRegistrar(reg, "capstream_producer_")
	m := &metrics{
		packets:           r.Counter("packets_total", "Packets captured (read from the sources and put into batches)."),
		bytes:             r.Counter("bytes_total", "Captured bytes (record data, after the snap length)."),
		kernelDrops:       r.Counter("kernel_drops_total", "Packets the kernel dropped because a capture ring was full."),
		dropPackets:       r.CounterVec("publish_drops_total", "Captured packets dropped because their batch could not be published, by reason.", "reason"),
		dropBytes:         r.CounterVec("publish_dropped_bytes_total", "Batch body bytes dropped because they could not be published, by reason.", "reason"),
		batches:           r.Counter("batches_published_total", "Batches handed to JetStream."),
		acked:             r.Counter("batches_acked_total", "Batches JetStream acknowledged."),
		retries:           r.CounterVec("publish_retries_total", "Batches published again (same Nats-Msg-Id) after no ack in time or no stream answering, by reason (timeout, no_stream).", "reason"),
		inFlightBytes:     r.Gauge("in_flight_bytes", "Batch bytes published and not yet acknowledged."),
		captures:          r.Gauge("captures", "Captures running or scheduled on this node."),
		interfaces:        r.GaugeVec("interfaces", "Capture interfaces by state.", "state"),
		commands:          r.CounterVec("commands_total", "Commands received, by result (capture, stop, invalid, refused: an interface outside interfacePrefix or an endpoint of another namespace; expired: a capture stopped by a resync because its command left the stream; resync_error: a failed resync look-up).", "result"),
		statusErrors:      r.Counter("status_publish_errors_total", "Status reports that could not be published."),
		ringBytes:         r.Gauge("ring_bytes", "Kernel memory reserved by the open capture rings, against maxRingBytes."),
		ringRefusals:      r.Counter("ring_budget_waits_total", "Times an interface could not open because its ring did not fit maxRingBytes."),
		sharedSockets:     r.Gauge("shared_sockets", "Capture sockets open, one per interface whatever the number of captures selecting it (each holds a ring of ring_bytes)."),
		sharedSubscribers: r.Gauge("shared_subscribers", "Captures subscribed to an interface's shared socket, open or waiting (a capture counts once per interface)."),
		sharedUnfiltered:  r.Gauge("shared_unfiltered_sockets", "Shared sockets whose kernel filter accepts every packet because the union of their captures' filters does not fit one program; each capture still filters in user space."),
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return m, nil
}
