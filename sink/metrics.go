package sink

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the counters both sinks keep, under their own names.
type Metrics struct {
	// Batches counts batches by result.
	Batches *prometheus.CounterVec
	// AckErrs counts failed acknowledgements by reason.
	AckErrs *prometheus.CounterVec
	// Pending is the number of batches held unacked.
	Pending prometheus.Gauge
	// Panics counts batches whose handling panicked.
	Panics prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, component, batchesHelp, pendingHelp string) (*Metrics, error) {
	prefix := "capstream_sink_" + component + "_"
	ms := NewMetricSet(reg)
	m := &Metrics{
		Batches: ms.CounterVec(prefix+"batches_total", batchesHelp, "result"),
		AckErrs: ms.CounterVec(prefix+"ack_errors_total", "Failed acknowledgements, by reason.", "reason"),
		Pending: ms.Gauge(prefix+"pending_batches", pendingHelp),
		Panics:  ms.Counter(prefix+"panics_total", "Batches whose handling panicked; each was terminated."),
	}
	return m, ms.Err()
}

// MetricSet builds a sink's metrics and registers each one as it is built,
// so a metrics struct is written one line a metric. It keeps the first
// registration error, and registers nothing after it.
type MetricSet struct {
	reg prometheus.Registerer
	err error
}

// NewMetricSet returns a MetricSet registering with reg.
func NewMetricSet(reg prometheus.Registerer) *MetricSet { return &MetricSet{reg: reg} }

// Err is the first registration error, nil when every metric registered.
func (s *MetricSet) Err() error { return s.err }

// Counter builds and registers a counter.
func (s *MetricSet) Counter(name, help string) prometheus.Counter {
	return register(s, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// CounterVec builds and registers a counter with one label.
func (s *MetricSet) CounterVec(name, help, label string) *prometheus.CounterVec {
	return register(s, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
}

// Gauge builds and registers a gauge.
func (s *MetricSet) Gauge(name, help string) prometheus.Gauge {
	return register(s, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

// Histogram builds and registers a histogram with buckets.
func (s *MetricSet) Histogram(name, help string, buckets []float64) prometheus.Histogram {
	return register(s, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
}

func register[C prometheus.Collector](s *MetricSet, c C) C {
	if s.err == nil {
		s.err = s.reg.Register(c)
	}
	return c
}
