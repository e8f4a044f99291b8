package producer

import "github.com/prometheus/client_golang/prometheus"

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
	inFlightBytes prometheus.Gauge
	captures      prometheus.Gauge
	interfaces    *prometheus.GaugeVec
	commands      *prometheus.CounterVec
	statusErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Every name gets the capstream_producer_ prefix at registration.
	reg = prometheus.WrapRegistererWithPrefix("capstream_producer_", reg)
	m := &metrics{
		packets: prometheus.NewCounter(prometheus.CounterOpts{Name: "packets_total",
			Help: "Packets captured (read from the sources and put into batches)."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "bytes_total",
			Help: "Captured bytes (record data, after the snap length)."}),
		kernelDrops: prometheus.NewCounter(prometheus.CounterOpts{Name: "kernel_drops_total",
			Help: "Packets the kernel dropped because a capture ring was full."}),
		dropPackets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "publish_drops_total",
			Help: "Captured packets dropped because their batch could not be published, by reason."}, []string{"reason"}),
		dropBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "publish_dropped_bytes_total",
			Help: "Batch body bytes dropped because they could not be published, by reason."}, []string{"reason"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "batches_published_total",
			Help: "Batches handed to JetStream."}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Name: "batches_acked_total",
			Help: "Batches JetStream acknowledged."}),
		inFlightBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight_bytes",
			Help: "Batch bytes published and not yet acknowledged."}),
		captures: prometheus.NewGauge(prometheus.GaugeOpts{Name: "captures",
			Help: "Captures running or scheduled on this node."}),
		interfaces: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "interfaces",
			Help: "Capture interfaces by state."}, []string{"state"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commands_total",
			Help: "Commands received, by result."}, []string{"result"}),
		statusErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "status_publish_errors_total",
			Help: "Status reports that could not be published."}),
	}
	for _, c := range []prometheus.Collector{m.packets, m.bytes, m.kernelDrops, m.dropPackets, m.dropBytes, m.batches, m.acked,
		m.inFlightBytes, m.captures, m.interfaces, m.commands, m.statusErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
