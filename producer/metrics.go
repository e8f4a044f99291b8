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
	r := &registrar{reg: prometheus.WrapRegistererWithPrefix("capstream_producer_", reg)}
	m := &metrics{
		packets:       r.counter("packets_total", "Packets captured (read from the sources and put into batches)."),
		bytes:         r.counter("bytes_total", "Captured bytes (record data, after the snap length)."),
		kernelDrops:   r.counter("kernel_drops_total", "Packets the kernel dropped because a capture ring was full."),
		dropPackets:   r.counterVec("publish_drops_total", "Captured packets dropped because their batch could not be published, by reason.", "reason"),
		dropBytes:     r.counterVec("publish_dropped_bytes_total", "Batch body bytes dropped because they could not be published, by reason.", "reason"),
		batches:       r.counter("batches_published_total", "Batches handed to JetStream."),
		acked:         r.counter("batches_acked_total", "Batches JetStream acknowledged."),
		inFlightBytes: r.gauge("in_flight_bytes", "Batch bytes published and not yet acknowledged."),
		captures:      r.gauge("captures", "Captures running or scheduled on this node."),
		interfaces:    r.gaugeVec("interfaces", "Capture interfaces by state.", "state"),
		commands:      r.counterVec("commands_total", "Commands received, by result.", "result"),
		statusErrors:  r.counter("status_publish_errors_total", "Status reports that could not be published."),
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// registrar builds metrics and registers each as it is built, keeping the
// first error.
type registrar struct {
	reg prometheus.Registerer
	err error
}

// register registers c, noting the first error, and returns it.
func register[C prometheus.Collector](r *registrar, c C) C {
	if err := r.reg.Register(c); err != nil && r.err == nil {
		r.err = err
	}
	return c
}

func (r *registrar) counter(name, help string) prometheus.Counter {
	return register(r, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

func (r *registrar) counterVec(name, help, label string) *prometheus.CounterVec {
	return register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
}

func (r *registrar) gauge(name, help string) prometheus.Gauge {
	return register(r, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

func (r *registrar) gaugeVec(name, help, label string) *prometheus.GaugeVec {
	return register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{label}))
}
